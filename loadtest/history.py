"""`make history`: what a request and a batch cost on a fresh home, and again once the same
home holds a long history; prints both, their ratio and the goal, and how much Prefect's
database grew.

On one stack, in one run: the figures on the fresh home; then a history of tiny one-word
documents (default 10,000 in 100 batches of the bench's tenant), uploaded through the HTTP
API and processed by the real flows, several batches at a time; then the figures again.
The figures: a new batch's CPU outside Tesseract per document (the bench's pages, as
`make bench` measures it), the p95 of `GET /api/batches/{id}` and of the tenant's batch
list, and the p95 of the query the Prefect UI's runs page makes."""

from __future__ import annotations

import argparse
import io
import json
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from PIL import Image, ImageDraw, ImageFont

from docpipe.home import prefect_auth_headers
from loadtest.bench import bench_tenant, pipeline
from loadtest.monitor import ui_flow_run_query_ms
from loadtest.pages import VOCABULARY, cached_pages

ROOT = Path(__file__).resolve().parent.parent
TENANT = "bench"  # the tenant bench.pipeline uploads as: the history is its own
GOAL = 1.2  # each figure with history, at most this times the fresh home's
WARM_UP_REQUESTS = 10


def tiny_page(number: int) -> bytes:
    """A 200x60 PNG of one word and a number: about the cheapest page Tesseract reads."""
    image = Image.new("L", (200, 60), 255)
    word = f"{VOCABULARY[number % len(VOCABULARY)]} {number}"
    ImageDraw.Draw(image).text((10, 15), word, fill=0, font=ImageFont.load_default(size=24))
    out = io.BytesIO()
    image.save(out, "PNG", dpi=(200, 200))
    return out.getvalue()


def make_history(
    api_url: str, key: str, batches: int, documents: int, parallel: int
) -> dict[str, Any]:
    """`documents` tiny documents in `batches` batches, `parallel` of them in flight at once,
    each uploaded and waited for as a tenant would; raises unless every document is Ready."""
    sizes = [documents // batches + (n < documents % batches) for n in range(batches)]
    firsts = [sum(sizes[:n]) for n in range(batches)]
    headers = {"X-API-Key": key}

    def one(n: int) -> int:
        files = [
            ("files", (f"h{n:05d}-{i:03d}.png", tiny_page(firsts[n] + i), "image/png"))
            for i in range(sizes[n])
        ]
        with httpx.Client(base_url=api_url, headers=headers, timeout=600) as api:
            while True:  # over a tenant limit, or the server busy: wait as told, then again
                answer = api.post(f"/api/documents/bulk-upload?tenantId={TENANT}", files=files)
                if answer.status_code not in (429, 503):
                    break
                time.sleep(float(answer.headers.get("Retry-After", "1")))
            answer.raise_for_status()
            batch_id = answer.json()["batchId"]
            while True:
                batch = api.get(f"/api/batches/{batch_id}?waitSeconds=30").json()
                if batch["status"] in ("Completed", "Failed", "Cancelled"):
                    break
        if batch["status"] != "Completed" or batch["successCount"] != sizes[n]:
            raise RuntimeError(f"history batch {batch_id} ended {batch['status']}: {batch}")
        return sizes[n]

    started = time.perf_counter()
    done, tenth = 0, 1
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for count in pool.map(one, range(batches)):
            done += count
            if done >= tenth * documents / 10:
                print(f"  {done} of {documents} documents", flush=True)
                tenth = 10 * done // documents + 1
    seconds = time.perf_counter() - started
    return {
        "batches": batches,
        "documents": documents,
        "seconds": round(seconds, 1),
        "documentsPerSecond": round(documents / seconds, 2),
    }


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p95 and the largest of a list of milliseconds."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": round(cuts[49], 2), "p95": round(cuts[94], 2), "max": round(max(samples), 2)}


def latencies(stack: Any, key: str, batch_id: str, requests: int) -> dict[str, dict[str, float]]:
    """Milliseconds of `requests` sequential requests of each kind after a warm-up, taken in
    turns so a machine that slows down weighs on all alike."""
    settings = stack.settings
    with (
        httpx.Client(base_url=settings.api_url, headers={"X-API-Key": key}, timeout=60) as api,
        httpx.Client(
            base_url=settings.prefect_api_url, headers=prefect_auth_headers(settings), timeout=60
        ) as prefect,
    ):

        def timed(path: str) -> Callable[[], float]:
            def request() -> float:
                started = time.perf_counter()
                api.get(path).raise_for_status()
                return (time.perf_counter() - started) * 1000

            return request

        kinds: dict[str, Callable[[], float]] = {
            "status": timed(f"/api/batches/{batch_id}"),
            "list": timed(f"/api/batches?tenantId={TENANT}"),
            "uiFlowRunQuery": lambda: ui_flow_run_query_ms(prefect),
        }
        for _ in range(WARM_UP_REQUESTS):
            for request in kinds.values():
                request()
        samples: dict[str, list[float]] = {name: [] for name in kinds}
        for _ in range(requests):
            for name, request in kinds.items():
                samples[name].append(request())
    return {name: percentiles(taken) for name, taken in samples.items()}


def database_size(path: Path) -> dict[str, Any] | None:
    """Bytes a SQLite database holds, in all and by table (indexes counted with their
    table); None where there is no such file (a server on PostgreSQL)."""
    if not path.exists():
        return None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        pages = connection.execute(
            "SELECT coalesce(tbl_name, d.name), sum(pgsize) FROM dbstat d "
            "LEFT JOIN sqlite_schema s ON s.name = d.name GROUP BY 1"
        ).fetchall()
    by_table = {name: int(size) for name, size in pages}
    return {"bytes": sum(by_table.values()), "tables": by_table}


def measure(
    stack: Any, key: str, pages: list[Path], requests: int, rounds: int, say: str
) -> dict[str, Any]:
    """A new batch of `pages`, `rounds` times (its CPU is the median round's), then the
    request latencies, with the last of those batches as the one asked about."""
    runs = []
    for number in range(1, rounds + 1):
        print(f"{say}: {len(pages)} pages as one batch, round {number} of {rounds} ...", flush=True)
        piped = pipeline(pages, stack, key)
        if piped["batch"]["successCount"] != len(pages):
            raise RuntimeError(f"the measured batch did not succeed: {piped['batch']['status']}")
        cpu = piped["orchestrationCpu"]
        runs.append(
            {
                "seconds": round(piped["seconds"], 2),
                "orchestrationCpuMsPerDocument": round(1000 * sum(cpu.values()) / len(pages), 1),
                "orchestrationCpuMsPerDocumentByProcess": {
                    role: round(1000 * seconds / len(pages), 1)
                    for role, seconds in sorted(cpu.items())
                },
                "batchId": piped["batch"]["id"],
            }
        )
    median = sorted(runs, key=lambda r: r["orchestrationCpuMsPerDocument"])[len(runs) // 2]
    print(f"{say}: {requests} requests of each kind ...", flush=True)
    taken = latencies(stack, key, runs[-1]["batchId"], requests)
    return {
        "orchestrationCpuMsPerDocument": median["orchestrationCpuMsPerDocument"],
        "orchestrationCpuMsPerDocumentByProcess": median["orchestrationCpuMsPerDocumentByProcess"],
        "batchSeconds": median["seconds"],
        "statusMs": taken["status"],
        "listMs": taken["list"],
        "uiFlowRunQueryMs": taken["uiFlowRunQuery"],
        "prefectDatabase": database_size(stack.settings.prefect_home / "prefect.db"),
        "residentMb": {
            service.name: round(psutil.Process(service.process.pid).memory_info().rss / 2**20)
            for service in stack.services
        },
        "allRounds": runs,
    }


# The figures compared, by name: where each is in a phase's figures.
FIGURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "orchestrationCpuMsPerDocument": lambda f: f["orchestrationCpuMsPerDocument"],
    "statusP95Ms": lambda f: f["statusMs"]["p95"],
    "listP95Ms": lambda f: f["listMs"]["p95"],
    "uiFlowRunQueryP95Ms": lambda f: f["uiFlowRunQueryMs"]["p95"],
}


def run(
    *,
    batches: int,
    documents: int,
    pages_count: int,
    requests: int,
    rounds: int,
    parallel: int,
    cores: int,
    out: Path,
    home: Path | None = None,
) -> dict[str, Any]:
    from docpipe.config import Settings
    from docpipe.runtime.stack import Stack, free_port

    pages = [p for p, _ in cached_pages(pages_count, ROOT / "loadtest" / ".pages")]
    with tempfile.TemporaryDirectory(prefix="docpipe-history-") as tmp:
        settings = Settings(
            home=home or Path(tmp) / "home",
            api_port=free_port(),
            prefect_port=free_port(),
            ocr_concurrency=cores,
        )
        stack = Stack(settings)
        print("starting the stack ...", flush=True)
        stack.start()
        try:
            key = bench_tenant(settings.home, "text")
            pipeline(pages[:1], stack, key)  # so neither phase pays for a cold start
            fresh = measure(stack, key, pages, requests, rounds, "fresh home")
            print(f"history: {documents} tiny documents in {batches} batches ...", flush=True)
            history = make_history(settings.api_url, key, batches, documents, parallel)
            grown = measure(stack, key, pages, requests, rounds, "with history")
        finally:
            stack.stop()
    ratios = {name: round(get(grown) / get(fresh), 2) for name, get in FIGURES.items()}
    figures = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "cores": cores,
        "pages": pages_count,
        "requests": requests,
        "rounds": rounds,
        "history": history,
        "fresh": fresh,
        "withHistory": grown,
        "ratios": ratios,
        "goal": GOAL,
        "met": {name: ratio <= GOAL for name, ratio in ratios.items()},
        "prefectDatabaseGrowthBytes": _growth(fresh, grown),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def _growth(fresh: dict[str, Any], grown: dict[str, Any]) -> int | None:
    before, after = fresh["prefectDatabase"], grown["prefectDatabase"]
    return after["bytes"] - before["bytes"] if before and after else None


def _commit() -> str:
    found = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return found.stdout.strip() or "unknown"


def _print(figures: dict[str, Any], written: Path) -> None:
    fresh, grown, ratios = figures["fresh"], figures["withHistory"], figures["ratios"]
    h = figures["history"]
    rows = [
        ("CPU outside Tesseract, ms/document", "orchestrationCpuMsPerDocument"),
        ("GET /api/batches/{id}, p95 ms", "statusP95Ms"),
        ("GET /api/batches?tenantId=, p95 ms", "listP95Ms"),
        ("Prefect UI's flow-run query, p95 ms", "uiFlowRunQueryP95Ms"),
    ]
    lines = [
        f"\n{figures['pages']}-page batch, {figures['requests']} requests of each kind, "
        f"on {figures['cores']} cores; history: {h['documents']} documents in "
        f"{h['batches']} batches, made in {h['seconds']:.0f} s "
        f"({h['documentsPerSecond']:.1f} documents/s)",
        f"  {'':38} {'fresh':>9} {'history':>9} {'ratio':>7}  goal <= {figures['goal']}",
    ]
    for label, name in rows:
        get = FIGURES[name]
        verdict = "met" if figures["met"][name] else "NOT MET"
        lines.append(
            f"  {label:38} {get(fresh):9.1f} {get(grown):9.1f} {ratios[name]:7.2f}  {verdict}"
        )
    if (growth := figures["prefectDatabaseGrowthBytes"]) is not None:
        before = fresh["prefectDatabase"]["bytes"] / 2**20
        after = grown["prefectDatabase"]["bytes"] / 2**20
        lines.append(
            f"  Prefect's database: {before:.1f} MB -> {after:.1f} MB "
            f"(+{growth / 2**20:.1f} MB, {growth / h['documents'] / 1024:.1f} kB a document)"
        )
    memory = ", ".join(
        f"{name} {fresh['residentMb'][name]} -> {mb} MB" for name, mb in grown["residentMb"].items()
    )
    lines.append(f"  memory: {memory}")
    lines.append(f"  written to {written}")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=100, help="batches of history")
    parser.add_argument("--documents", type=int, default=10_000, help="documents of history")
    parser.add_argument("--pages", type=int, default=100, help="pages of the measured batch")
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind")
    parser.add_argument("--rounds", type=int, default=3, help="measured batches per phase")
    parser.add_argument("--parallel", type=int, default=4, help="history batches at once")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results")
    parser.add_argument(
        "--home", type=Path, help="a new home to run in and keep, to look into afterwards"
    )
    args = parser.parse_args()
    if args.home and args.home.exists() and any(args.home.iterdir()):
        parser.error(f"{args.home} is not empty: the figures are for a fresh home")
    if not 0 < args.batches <= args.documents <= 100 * args.batches:
        parser.error("--documents must be 1 to 100 a batch (docpipe's largest batch)")
    figures = run(
        batches=args.batches,
        documents=args.documents,
        pages_count=args.pages,
        requests=args.requests,
        rounds=args.rounds,
        parallel=args.parallel,
        cores=args.cores,
        out=args.out,
        home=args.home,
    )
    _print(figures, args.out / "history.json")


if __name__ == "__main__":
    main()
