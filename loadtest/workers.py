"""`make workers`: one batch on one worker, then shared by two (docs/operations.md).

Each worker stands for a machine of one core: its processes (the worker, its warm starter,
and every flow run and engine they start) are pinned to a core of their own, and it reads
one page at a time (DOCPIPE_OCR_CONCURRENCY=1). The server and the API, which would have a
machine of their own, run beside them at the lowest CPU priority.
Each round sends the same N one-page PDFs as one batch twice, once with only the first
worker running and once with both, in an order that alternates by round; the batch is
shared (DOCPIPE_SPLIT_PAGES below N) in both. Prints each time and their ratio."""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from loadtest.bench import ROOT, bench_tenant, pdf_of, pipeline
from loadtest.pages import cached_pages, character_error_rate

GOAL = 0.6
# A worker just started spends some seconds of CPU on its own start; a batch measured then
# would pay for it.
SETTLE_SECONDS = 15.0


def _pin(stack: Any, stems: tuple[str, ...], core: int) -> list[Any]:
    """Pin the services logging to these files to one core (what they start inherits it)."""
    from docpipe.runtime.stack import process_trees

    services = [s for s in stack.services if Path(s.log_file.name).stem in stems]
    for proc in process_trees(s.process.pid for s in services):
        proc.cpu_affinity([core])
    return services


def _lowest_priority(services: list[Any], process_trees: Any) -> None:
    """Nice 19, for the services' sessions too: each service leads a session of its own,
    and Linux's autogroups share the CPU between sessions whatever their processes' nice
    values, so without it the server would take a worker's core as an equal."""
    for proc in process_trees(s.process.pid for s in services):
        proc.nice(19)
    for service in services:
        with contextlib.suppress(OSError):
            Path(f"/proc/{service.process.pid}/autogroup").write_text("19")


def _start_worker(stack: Any, name: str, core: int) -> list[Any]:
    stack.start_warm_starter(name)
    stack.start_worker(name)
    services = _pin(stack, (f"warm-starter-{name}", f"worker-{name}"), core)
    time.sleep(SETTLE_SECONDS)  # its own start (imports, registering) is not the batch's
    return services


def _stop(stack: Any, services: list[Any]) -> None:
    from docpipe.runtime.stack import _terminate_tree

    _terminate_tree(services)
    for service in services:
        stack.services.remove(service)


def run(pages_count: int, rounds: int, out: Path) -> dict[str, Any]:
    from docpipe.config import Settings
    from docpipe.runtime.stack import Stack, free_port, process_trees

    cores = psutil.cpu_count() or 1
    if cores < 2:
        raise SystemExit("this measurement needs two cores, one for each worker")
    pages = cached_pages(pages_count, ROOT / "loadtest" / ".pages")
    upload = [(p.name.replace(".png", ".pdf"), pdf_of([p]), "application/pdf") for p, _ in pages]
    known = {p.name.replace(".png", ".pdf"): text for p, text in pages}
    figures: dict[str, Any] = {"pages": pages_count, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="docpipe-workers-") as tmp:
        settings = Settings(
            home=Path(tmp) / "home",
            api_port=free_port(),
            prefect_port=free_port(),
            ocr_concurrency=1,
            # One run at a time per worker: the batch's own run fills the first, so its
            # helper can only go to the second.
            worker_limit=1,
            dispatch_slots=2,
            split_pages=max(1, pages_count // 2),
            split_max_runs=2,
        )
        stack = Stack(settings)
        stack.start(worker=False)
        # The server and the API have a machine of their own in the setup this stands for:
        # here they share the two cores, so they take only what the workers leave.
        _lowest_priority(stack.services, process_trees)
        try:
            key = bench_tenant(settings.home, "text")
            _start_worker(stack, "first", core=0)
            second: list[Any] = []
            pipeline(upload, stack, key)  # warm: the stack's first batch costs more
            for number in range(rounds):
                times: dict[str, float] = {}
                for workers in (1, 2) if number % 2 == 0 else (2, 1):
                    if workers == 2 and not second:
                        second = _start_worker(stack, "second", core=1)
                    if workers == 1 and second:
                        _stop(stack, second)
                        second = []
                    # The last batch's run may still be ending: a worker at its limit
                    # then leaves the next run to its next poll, seconds later.
                    time.sleep(SETTLE_SECONDS / 3)
                    result = pipeline(upload, stack, key)
                    batch = result["batch"]
                    assert batch["successCount"] == pages_count, batch
                    cer = statistics.mean(
                        character_error_rate(known[name], text)
                        for name, text in result["texts"].items()
                    )
                    times[str(workers)] = result["seconds"]
                    times[f"cer{workers}"] = cer
                times["ratio"] = times["2"] / times["1"]
                figures["rounds"].append(times)
                print(
                    f"round {number + 1}: one worker {times['1']:.2f} s, two {times['2']:.2f} s,"
                    f" ratio {times['ratio']:.3f}",
                    flush=True,
                )
        finally:
            stack.stop()
    ratios = sorted(r["ratio"] for r in figures["rounds"])
    figures["ratio"] = statistics.median(ratios)
    figures["worst"] = ratios[-1]
    out.mkdir(parents=True, exist_ok=True)
    (out / "workers.json").write_text(json.dumps(figures, indent=2))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results")
    args = parser.parse_args()
    figures = run(args.pages, args.rounds, args.out)
    met = "met" if figures["ratio"] <= GOAL else "NOT met"
    print(
        f"{args.pages}-page batch, two one-core workers / one: median {figures['ratio']:.3f}, "
        f"worst {figures['worst']:.3f} (goal, the median <= {GOAL}: {met}); "
        f"written to {args.out / 'workers.json'}"
    )


if __name__ == "__main__":
    main()
