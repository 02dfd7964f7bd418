"""`make bench`: bare Tesseract on N pages as fast as this machine allows, then the same pages
through docpipe end to end; prints the floor, the pipeline time, their ratio, the CPU spent
outside Tesseract per document, and OCR quality (character error rate) for both.

Two floors, in every round: Debian's `tesseract` program one process per core (what a user
runs by hand), and the engine docpipe reads pages with (`--engine`; `api` is Tesseract's
library in docpipe's own engine processes, models loaded once), run bare on the same pages.

`--outputs text,pdf` makes every side write the searchable PDF too (bare Tesseract: `tesseract
page out txt pdf`), and measures what finding a page's orientation and skew costs per page.

`--long` compares one N-page PDF with N one-page PDFs of the same pages, both through
docpipe: a long document's pages are spread over every core as separate documents are."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from loadtest.monitor import is_tesseract
from loadtest.pages import DPI, cached_pages, character_error_rate

ROOT = Path(__file__).resolve().parent.parent
RESUME_SETTLE_SECONDS = 10.0


def floor(pages: list[Path], workdir: Path, cores: int, renderers: str = "txt") -> dict[str, float]:
    """Bare Tesseract, single-threaded, one process per core (xargs -P)."""
    out = workdir / "floor"
    out.mkdir(parents=True, exist_ok=True)
    listing = "\n".join(str(p) for p in pages)
    tesseract = f'tesseract "$1" "{out}/$(basename "$1" .png)" -l eng {renderers} 2>/dev/null'
    command = f"xargs -P {cores} -I{{}} sh -c " + shlex.quote(tesseract) + " _ {}"
    before = os.times()
    started = time.perf_counter()
    subprocess.run(
        ["sh", "-c", command],
        input=listing,
        text=True,
        check=True,
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},
    )
    seconds = time.perf_counter() - started
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return {"seconds": seconds, "tesseractCpuSeconds": cpu}


def engine_floor(
    pages: list[Path], workdir: Path, cores: int, renderers: str = "txt"
) -> dict[str, float]:
    """docpipe's API engine run bare: one engine process per core (`docpipe.ocr_server`, the
    program docpipe's OCR slots talk to), each fed pages straight from disk, its models
    loaded before the clock starts, as docpipe's long-lived ones are."""
    import queue
    import sys

    from docpipe.ocr import PagePass, _tessdata

    out = workdir / "engine-floor"
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "docpipe.ocr_server", _tessdata(), str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        for _ in range(cores)
    ]

    def read(server: subprocess.Popen[bytes], page: Path) -> None:
        request = PagePass(str(page), str(out / page.stem), "eng", DPI, tuple(renderers.split()))
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(json.dumps(asdict(request)).encode() + b"\n")
        server.stdin.flush()
        if "ok" not in json.loads(server.stdout.readline()):
            raise RuntimeError(f"the engine could not read {page}")

    try:
        warm = [threading.Thread(target=read, args=(server, pages[0])) for server in servers]
        for thread in warm:
            thread.start()
        for thread in warm:
            thread.join()
        todo: queue.SimpleQueue[Path] = queue.SimpleQueue()
        for page in pages:
            todo.put(page)

        def drain(server: subprocess.Popen[bytes]) -> None:
            with contextlib.suppress(queue.Empty):
                while True:
                    read(server, todo.get_nowait())

        cpu_before = sum(_cpu(server.pid) for server in servers)
        started = time.perf_counter()
        threads = [threading.Thread(target=drain, args=(server,)) for server in servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        cpu = sum(_cpu(server.pid) for server in servers) - cpu_before
    finally:
        for server in servers:
            server.kill()
            server.wait()
    return {"seconds": seconds, "tesseractCpuSeconds": cpu}


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


@dataclass
class CpuMeter:
    """CPU seconds of the stack's own processes (not Tesseract), sampled as they come and go."""

    roots: list[int]
    # Each look walks every process here: every 0.2 s it took 3% of a core, 2% of a
    # 100-page batch's time on two cores that the floors never pay.
    interval: float = 1.0
    seen: dict[int, float] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    start: dict[int, float] = field(default_factory=dict)
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.start = self._sample()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self) -> dict[int, float]:
        found: dict[int, float] = {}
        for root in self.roots:
            try:
                parent = psutil.Process(root)
                for proc in [parent, *parent.children(recursive=True)]:
                    if is_tesseract(proc):
                        continue
                    t = proc.cpu_times()
                    found[proc.pid] = t.user + t.system  # self only, not reaped children
                    if proc.pid not in self.names:
                        self.names[proc.pid] = _role(proc.cmdline(), first=proc.pid == root)
            except psutil.NoSuchProcess:
                continue
        return found

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.seen.update(self._sample())

    def stop(self) -> dict[str, float]:
        """CPU seconds spent since the start, by role (server, worker, flow run, api)."""
        self.stopped.set()
        self.thread.join()
        self.seen.update(self._sample())
        by_role: dict[str, float] = {}
        for pid, cpu in self.seen.items():
            role = self.names.get(pid, "other")
            by_role[role] = by_role.get(role, 0.0) + cpu - self.start.get(pid, 0.0)
        return by_role


def _role(cmdline: list[str], *, first: bool) -> str:
    """Which part of the stack a process is; `first` if it is a service's own process."""
    text = " ".join(cmdline)
    if "docpipe.runtime.warm serve" in text:  # the warm starter, or a flow run forked from it
        return "warm starter" if first else "flow run"
    for role, marker in (
        ("prefect server", "docpipe.runtime.prefect_server"),
        ("worker", "docpipe.runtime.worker"),
        ("worker", "docpipe.runtime.warm"),  # the launcher the worker starts per flow run
        ("api", "docpipe.api.serve"),
        ("reader", "docpipe.reader_server"),
        ("flow run", "prefect.engine"),
    ):
        if marker in text:
            return role
    return "other"


Upload = list[tuple[str, bytes, str]]  # (file name, bytes, content type), one per document


def _upload(documents: list[Path] | Upload) -> Upload:
    return [d if isinstance(d, tuple) else (d.name, d.read_bytes(), "image/png") for d in documents]


def pdf_of(pages: list[Path]) -> bytes:
    """The pages as one PDF, each at its own resolution."""
    from PIL import Image

    images = [Image.open(p) for p in pages]
    out = io.BytesIO()
    images[0].save(out, "PDF", save_all=True, append_images=images[1:], resolution=DPI)
    return out.getvalue()


def pipeline(pages: list[Path] | Upload, stack: Any, key: str) -> dict[str, Any]:
    """Documents (page files, or prepared uploads) as one batch through HTTP upload, the
    flow and the summary."""
    headers = {"X-API-Key": key}
    roots = [s.process.pid for s in stack.services]
    with httpx.Client(base_url=stack.settings.api_url, timeout=600) as api:
        meter = CpuMeter(roots)
        started = time.perf_counter()
        files = [("files", document) for document in _upload(pages)]
        response = api.post(
            "/api/documents/bulk-upload?tenantId=bench", headers=headers, files=files
        )
        response.raise_for_status()
        batch_id = response.json()["batchId"]
        while True:  # one request at a time, each answered as soon as the batch finishes
            batch = api.get(f"/api/batches/{batch_id}?waitSeconds=30", headers=headers).json()
            if batch["status"] in ("Completed", "Failed", "Cancelled"):
                break
        seconds = time.perf_counter() - started
        cpu = meter.stop()
        texts = {
            d["fileName"]: api.get(f"/api/documents/{d['id']}/text", headers=headers).text
            for d in batch["documents"]
            if d["status"] == "Ready"
        }
    return {"seconds": seconds, "orchestrationCpu": cpu, "batch": batch, "texts": texts}


def idle_cpu(stack: Any, seconds: float) -> float:
    """CPU seconds per second the stack spends with nothing to do: its schedules, polls and
    timers. It runs during a batch too; this says how much of a batch's figure it is."""
    meter = CpuMeter([s.process.pid for s in stack.services])
    time.sleep(seconds)
    return sum(meter.stop().values()) / seconds


@contextlib.contextmanager
def paused(procs: list[psutil.Process]) -> Iterator[None]:
    """These processes stopped (SIGSTOP), so the floor has the machine to itself; then
    resumed, and given a moment for the timers that fell due meanwhile."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.suspend()
    try:
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.resume()
        time.sleep(RESUME_SETTLE_SECONDS)


def run(
    pages_count: int,
    out: Path,
    cores: int,
    idle_seconds: float = 60,
    rounds: int = 3,
    outputs: str = "text",
    engine: str = "auto",
    long: bool = False,
) -> dict[str, Any]:
    from docpipe.config import Settings
    from docpipe.ocr import ApiEngine, get_engine
    from docpipe.runtime.stack import Stack, free_port, process_trees

    cache = ROOT / "loadtest" / ".pages"
    pages = cached_pages(pages_count, cache)
    # What bare Tesseract writes to match docpipe's outputs.
    renderers = " ".join({"text": "txt", "pdf": "pdf"}[o] for o in outputs.split(","))
    paths = [p for p, _ in pages]
    known = {p.name: text for p, text in pages}
    api_engine = isinstance(get_engine(engine), ApiEngine)
    with tempfile.TemporaryDirectory(prefix="docpipe-bench-") as tmp:
        workdir = Path(tmp)
        settings = Settings(
            home=workdir / "home",
            api_port=free_port(),
            prefect_port=free_port(),
            ocr_concurrency=cores,
            ocr_engine=engine,
        )
        stack = Stack(settings)
        print("starting the stack ...", flush=True)
        stack.start()
        try:
            key = bench_tenant(settings.home, outputs)
            # One small batch first, so neither side pays for a cold start.
            pipeline(paths[:1], stack, key)
            print(f"the idle stack's own CPU for {idle_seconds:g} s ...", flush=True)
            idle = idle_cpu(stack, idle_seconds)
            # Every side takes its turn in every round, so a machine that speeds up or
            # slows down (this one is shared) weighs on all alike; the median round is
            # reported.
            results = []
            for number in range(1, rounds + 1):
                say = f"round {number} of {rounds}:"
                if long:
                    results.append(_long_round(paths, known, stack, key, number, say))
                    print(f"  long ÷ separate {results[-1]['longRatio']:.3f}", flush=True)
                    continue
                folder = workdir / f"floor-{number}"
                print(f"{say} bare tesseract, {cores} at a time ...", flush=True)
                with paused(process_trees(s.process.pid for s in stack.services)):
                    cli = floor(paths, folder, cores, renderers)
                bare = None
                if api_engine:
                    print(f"{say} docpipe's engine bare, {cores} at a time ...", flush=True)
                    with paused(process_trees(s.process.pid for s in stack.services)):
                        bare = engine_floor(paths, folder, cores, renderers)
                print(f"{say} {pages_count} pages as one batch ...", flush=True)
                piped = pipeline(paths, stack, key)
                results.append(
                    {
                        **_round(cli, bare, piped, idle, pages_count),
                        **_quality(known, _texts(folder, paths, api_engine), piped),
                    }
                )
                print(
                    f"  ratio {results[-1]['ratio']:.3f}, "
                    f"{results[-1]['speedupOverCli']:.3f}x the tesseract program",
                    flush=True,
                )
            orientation = None
            if "pdf" in outputs and not long:
                print("what finding orientation and skew costs, per page ...", flush=True)
                with paused(process_trees(s.process.pid for s in stack.services)):
                    orientation = orientation_cost(paths[: min(10, len(paths))], workdir)
        finally:
            stack.stop()
    # Every figure, outcome and quality included, is the median round's; all rounds are
    # in allRounds.
    by = "longRatio" if long else "ratio"
    median = sorted(results, key=lambda r: r[by])[len(results) // 2]
    figures = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "long" if long else "batch",
        "pages": pages_count,
        "cores": cores,
        "rounds": rounds,
        "outputs": outputs,
        "engine": "api" if api_engine else "cli",
        **median,
        **(
            {"cliRatioMedian": sorted(r["cliRatio"] for r in results)[len(results) // 2]}
            if not long
            else {}
        ),
        **({"orientation": orientation} if orientation else {}),
        "backgroundCpuSecondsPerMinute": round(60 * idle, 2),
        "allRounds": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / ("bench-long.json" if long else "bench.json")).write_text(
        json.dumps(figures, indent=2) + "\n"
    )
    return figures


def _texts(folder: Path, paths: list[Path], engine_floor: bool) -> dict[str, dict[str, str]]:
    """Each floor's text of each page, by floor and page file name."""
    floors = {"cli": folder / "floor"}
    if engine_floor:
        floors["engine"] = folder / "engine-floor"
    return {
        name: {p.name: (where / f"{p.stem}.txt").read_text() for p in paths}
        for name, where in floors.items()
    }


def _long_round(
    paths: list[Path],
    known: dict[str, str],
    stack: Any,
    key: str,
    number: int,
    say: str,
) -> dict[str, Any]:
    """The pages as N one-page PDFs, and as one N-page PDF: both through docpipe, in an
    order that alternates by round."""
    separate: Upload = [(f"{p.stem}.pdf", pdf_of([p]), "application/pdf") for p in paths]
    together: Upload = [("long.pdf", pdf_of(paths), "application/pdf")]
    seconds: dict[str, float] = {}
    piped: dict[str, dict[str, Any]] = {}
    for name, upload in sorted(
        {"separate": separate, "long": together}.items(), reverse=number % 2 == 0
    ):
        print(f"{say} {len(paths)} pages as {name} PDFs ...", flush=True)
        piped[name] = pipeline(upload, stack, key)
        seconds[name] = piped[name]["seconds"]
    whole = "\n".join(known[p.name] for p in paths)
    separate_text = "\n".join(piped["separate"]["texts"].get(f"{p.stem}.pdf", "") for p in paths)
    long_text = piped["long"]["texts"].get("long.pdf", "")
    return {
        "separateSeconds": round(seconds["separate"], 2),
        "longSeconds": round(seconds["long"], 2),
        "longRatio": round(seconds["long"] / seconds["separate"], 3),
        "succeeded": {n: r["batch"]["successCount"] for n, r in piped.items()},
        "cerSeparate": round(character_error_rate(whole, separate_text), 4),
        "cerLong": round(character_error_rate(whole, long_text), 4),
        "orchestrationCpuMsPerPage": {
            n: round(1000 * sum(r["orchestrationCpu"].values()) / len(paths), 1)
            for n, r in piped.items()
        },
    }


def _quality(
    known: dict[str, str], floors: dict[str, dict[str, str]], piped: dict[str, Any]
) -> dict[str, Any]:
    """One round's outcome: how many documents made it, and each side's character error
    rate (`cerFloor` is the floor of the engine in use)."""

    def mean_cer(texts: dict[str, str]) -> float:
        mean = sum(character_error_rate(k, texts.get(n, "")) for n, k in known.items()) / len(known)
        return round(mean, 4)

    return {
        "succeeded": piped["batch"]["successCount"],
        "failed": piped["batch"]["failureCount"],
        "cerFloor": mean_cer(floors.get("engine", floors["cli"])),
        "cerCliFloor": mean_cer(floors["cli"]),
        "cerPipeline": mean_cer(piped["texts"]),
    }


def orientation_cost(pages: list[Path], workdir: Path) -> dict[str, float]:
    """docpipe's OCR of each page in this process, one at a time, with the orientation and
    skew checks and without; then the same pages upside down, which need a second pass."""
    from PIL import Image

    from docpipe.ocr import Straightening, ocr_document

    def per_page(files: list[Path], straighten: Straightening) -> float:
        started = time.perf_counter()
        for path in files:
            ocr_document(
                path.read_bytes(),
                kind="png",
                language="eng",
                dpi=300,
                page_timeout=120,
                pdf=True,
                straighten=straighten,
                scratch=workdir / "scratch",
            )
        return 1000 * (time.perf_counter() - started) / len(files)

    upside_down = []
    for path in pages:
        turned = workdir / f"turned-{path.name}"
        with Image.open(path) as image:
            image.rotate(180).save(turned, dpi=image.info.get("dpi"))
        upside_down.append(turned)
    off = Straightening(orient=False, deskew=False)
    per_page(pages[:1], off)  # Tesseract's data in the page cache for both sides
    plain = per_page(pages, off)
    checked = per_page(pages, Straightening())
    turned_ms = per_page(upside_down, Straightening())
    return {
        "pages": len(pages),
        "uprightMsPerPageWithout": round(plain, 1),
        "uprightMsPerPageWith": round(checked, 1),
        "checkMsPerUprightPage": round(checked - plain, 1),
        "upsideDownMsPerPage": round(turned_ms, 1),
        "turnMsPerUpsideDownPage": round(turned_ms - plain, 1),
    }


def bench_tenant(home: Path, outputs: str) -> str:
    """The VIP tenant `bench` in this home, making `outputs`; its API key."""
    created = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "docpipe"), "tenant", "create", "bench",
         "--tier", "vip", "--outputs", outputs, "--json"],
        env={**os.environ, "DOCPIPE_HOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    return str(json.loads(created.stdout)["apiKey"])


def _round(
    cli: dict[str, float],
    bare: dict[str, float] | None,
    piped: dict[str, Any],
    idle: float,
    pages: int,
) -> dict[str, Any]:
    """One round's floors and pipeline run, side by side. `floorSeconds` and `ratio` are
    against the floor of the engine docpipe used (the program's, for the cli engine)."""
    total_cpu = sum(piped["orchestrationCpu"].values())
    engine = bare or cli
    return {
        "floorSeconds": round(engine["seconds"], 2),
        "cliFloorSeconds": round(cli["seconds"], 2),
        **({"engineFloorSeconds": round(bare["seconds"], 2)} if bare else {}),
        "pipelineSeconds": round(piped["seconds"], 2),
        "ratio": round(piped["seconds"] / engine["seconds"], 3),
        # #15's figure: against what a user runs by hand for the same outputs.
        "cliRatio": round(piped["seconds"] / cli["seconds"], 3),
        "speedupOverCli": round(cli["seconds"] / piped["seconds"], 3),
        "orchestrationCpuMsPerDocument": round(1000 * total_cpu / pages, 1),
        "orchestrationCpuMsPerDocumentByProcess": {
            role: round(1000 * cpu / pages, 1)
            for role, cpu in sorted(piped["orchestrationCpu"].items())
        },
        "orchestrationCpuMsPerDocumentBeyondBackground": round(
            1000 * (total_cpu - idle * piped["seconds"]) / pages, 1
        ),
        "tesseractCpuSecondsFloor": round(engine["tesseractCpuSeconds"], 2),
        "tesseractCpuSecondsCliFloor": round(cli["tesseractCpuSeconds"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results")
    parser.add_argument(
        "--idle-seconds", type=float, default=60, help="how long to measure the idle stack"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="floor and pipeline runs, taken in turns"
    )
    parser.add_argument(
        "--outputs",
        choices=["text", "text,pdf"],
        default="text",
        help="what both sides make of each page: text, or text and the searchable PDF",
    )
    parser.add_argument(
        "--engine",
        choices=["auto", "api", "cli"],
        default="auto",
        help="the engine docpipe reads pages with (DOCPIPE_OCR_ENGINE)",
    )
    parser.add_argument(
        "--long",
        action="store_true",
        help="one N-page PDF against N one-page PDFs of the same pages, both through docpipe",
    )
    args = parser.parse_args()
    figures = run(
        args.pages,
        args.out,
        args.cores,
        args.idle_seconds,
        args.rounds,
        args.outputs,
        args.engine,
        args.long,
    )
    written = args.out / ("bench-long.json" if args.long else "bench.json")
    if args.long:
        _print_long(figures, written)
    else:
        _print_batch(figures, written)


def _print_batch(figures: dict[str, Any], written: Path) -> None:
    rounds = ", ".join(f"{r['ratio']:.3f}" for r in figures["allRounds"])
    cli_rounds = ", ".join(f"{r['cliRatio']:.3f}" for r in figures["allRounds"])
    engine_floor = (
        f"  floor, docpipe's engine bare:   {figures['engineFloorSeconds']:8.2f} s\n"
        if "engineFloorSeconds" in figures
        else ""
    )
    print(
        f"\n{figures['pages']} one-page documents on {figures['cores']} cores, outputs "
        f"{figures['outputs']}, engine {figures['engine']}, "
        f"the median of {figures['rounds']} rounds (ratios {rounds})\n"
        f"  floor, the tesseract program:  {figures['cliFloorSeconds']:8.2f} s\n"
        f"{engine_floor}"
        f"  pipeline (docpipe):            {figures['pipelineSeconds']:8.2f} s\n"
        f"  ratio to its engine's floor:   {figures['ratio']:8.3f}\n"
        f"  ratio to the program's floor:  {figures['cliRatioMedian']:8.3f} "
        f"(median of {cli_rounds})\n"
        f"  faster than the program:       {figures['speedupOverCli']:8.3f}x\n"
        f"  CPU outside Tesseract:         {figures['orchestrationCpuMsPerDocument']:8.1f} "
        "ms/document\n"
        f"    of which beyond the idle stack's own: "
        f"{figures['orchestrationCpuMsPerDocumentBeyondBackground']:.1f} ms/document\n"
        f"  idle stack:                    {figures['backgroundCpuSecondsPerMinute']:8.2f} "
        "CPU s/min\n"
        f"  documents:                     {figures['succeeded']} succeeded, "
        f"{figures['failed']} failed\n"
        f"  character error rate:          program {figures['cerCliFloor']:.4f}, "
        f"engine floor {figures['cerFloor']:.4f}, pipeline {figures['cerPipeline']:.4f}\n"
        f"  written to {written}"
    )
    if "orientation" in figures:
        o = figures["orientation"]
        print(
            f"orientation and skew, docpipe's OCR of {o['pages']} pages one at a time:\n"
            f"  upright page:     {o['uprightMsPerPageWithout']:8.1f} ms without the checks, "
            f"{o['uprightMsPerPageWith']:.1f} ms with them "
            f"({o['checkMsPerUprightPage']:+.1f} ms)\n"
            f"  upside-down page: {o['upsideDownMsPerPage']:8.1f} ms "
            f"({o['turnMsPerUpsideDownPage']:+.1f} ms to find and undo the turn)"
        )


def _print_long(figures: dict[str, Any], written: Path) -> None:
    rounds = ", ".join(f"{r['longRatio']:.3f}" for r in figures["allRounds"])
    print(
        f"\n{figures['pages']} pages on {figures['cores']} cores, engine {figures['engine']}, "
        f"the median of {figures['rounds']} rounds (ratios {rounds})\n"
        f"  {figures['pages']} one-page PDFs:      {figures['separateSeconds']:8.2f} s\n"
        f"  one {figures['pages']}-page PDF:       {figures['longSeconds']:8.2f} s\n"
        f"  long ÷ separate:          {figures['longRatio']:8.3f}\n"
        f"  documents succeeded:      {figures['succeeded']}\n"
        f"  character error rate:     separate {figures['cerSeparate']:.4f}, "
        f"long {figures['cerLong']:.4f}\n"
        f"  written to {written}"
    )


if __name__ == "__main__":
    main()
