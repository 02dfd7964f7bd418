"""`make loadtest`: start the stack if needed, run Locust headless, the VIP-versus-standard
scenarios and the memory check, then write loadtest/results/ (CSVs, report.md, plots)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from docpipe.config import get_settings
from docpipe.models import Tier
from docpipe.runtime.stack import Stack
from docpipe.tenants import create_tenant
from loadtest.monitor import Monitor, find_services
from loadtest.pages import cached_pages

ROOT = Path(__file__).resolve().parent.parent
# Marks a phase of the run for the report's plots (Monitor.phase); by default nothing.
Phase = Callable[[str], AbstractContextManager[None]]


def unmarked(name: str) -> AbstractContextManager[None]:
    return nullcontext()


@dataclass
class Tenant:
    id: str
    key: str


def make_tenant(tier: Tier) -> Tenant:
    tenant, key = create_tenant(f"loadtest-{tier.value}-{int(time.time() * 1000)}", tier)
    return Tenant(tenant.id, key)


class Client:
    """Uploads a batch and waits for it, as a tenant would."""

    def __init__(self, api_url: str, pages: list[tuple[str, bytes]]) -> None:
        self.http = httpx.Client(base_url=api_url, timeout=600)
        self.pages = pages

    def submit(self, tenant: Tenant, count: int) -> tuple[str, float]:
        files = [("files", (n, d, "image/png")) for n, d in self.pages[:count]]
        started = time.perf_counter()
        response = self.http.post(
            f"/api/documents/bulk-upload?tenantId={tenant.id}",
            headers={"X-API-Key": tenant.key},
            files=files,
        )
        response.raise_for_status()
        return str(response.json()["batchId"]), started

    def wait(self, tenant: Tenant, batch_id: str, started: float) -> float:
        while True:
            body = self.http.get(
                f"/api/batches/{batch_id}", headers={"X-API-Key": tenant.key}
            ).json()
            if body["status"] in ("Completed", "Failed", "Cancelled"):
                return time.perf_counter() - started
            time.sleep(0.25)

    def run(self, tenant: Tenant, count: int) -> float:
        return self.wait(tenant, *self.submit(tenant, count))


def locust_env(
    vip: Tenant, standard: Tenant, batch_size: int, pages_dir: Path, **extra: str
) -> dict[str, str]:
    """The environment loadtest/locustfile.py reads its tenants and batch size from."""
    return {
        **os.environ,
        "DOCPIPE_LOADTEST_VIP_TENANT": vip.id,
        "DOCPIPE_LOADTEST_VIP_KEY": vip.key,
        "DOCPIPE_LOADTEST_STANDARD_TENANT": standard.id,
        "DOCPIPE_LOADTEST_STANDARD_KEY": standard.key,
        "DOCPIPE_LOADTEST_BATCH_SIZE": str(batch_size),
        "DOCPIPE_LOADTEST_PAGES": str(pages_dir),
        **extra,
    }


def locust_command(
    host: str, csv_prefix: Path, run_time: str, *, stop_timeout: int = 600
) -> list[str]:
    """Locust headless: one VIP and one standard user; whole batches finish before exit."""
    return [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
        "--headless", "-u", "2", "-r", "2", "--run-time", run_time,
        "--stop-timeout", str(stop_timeout), "--host", host, "--csv", str(csv_prefix),
        "--only-summary",
    ]  # fmt: skip


def vip_scenarios(
    client: Client, vip: Tenant, standard: Tenant, size: int, phase: Phase = unmarked
) -> dict[str, Any]:
    """VIP versus standard on a busy machine."""
    small = max(1, size // 10)
    with phase("VIP warm-up, then idle"):
        client.run(vip, small)  # warm-up: the idle figure should not include a cold start
        idle_small = client.run(vip, small)
    with phase("standard, then VIP arrives"):
        std_id, std_start = client.submit(standard, size)
        time.sleep(5)
        vip_id, vip_start = client.submit(vip, size)
        vip_seconds = client.wait(vip, vip_id, vip_start)
        vip_done_at = time.perf_counter()
        std_seconds = client.wait(standard, std_id, std_start)
        std_done_at = std_start + std_seconds
    with phase("small VIP on a busy machine"):
        std_id, std_start = client.submit(standard, size)
        time.sleep(5)
        busy_small = client.run(vip, small)
        client.wait(standard, std_id, std_start)
    return {
        "batchSize": size,
        "standardSeconds": round(std_seconds, 1),
        "vipSubmittedAfterSeconds": 5,
        "vipSeconds": round(vip_seconds, 1),
        "vipFinishedFirst": vip_done_at < std_done_at,
        "smallVipBatch": small,
        "smallVipIdleSeconds": round(idle_small, 1),
        "smallVipBusySeconds": round(busy_small, 1),
        "smallVipSlowdown": round(busy_small / idle_small, 2),
    }


def memory_check(
    client: Client, tenant: Tenant, settings: Any, batches: int, phase: Phase = unmarked
) -> dict[str, Any]:
    """RSS of the API, worker and server after a warm-up, then after `batches` more batches."""
    with phase("memory: warm-up"):
        for _ in range(2):
            client.run(tenant, 10)
    services = find_services(settings)
    before = {r: p.memory_info().rss / 2**20 for r, p in services.items()}
    with phase("memory: more batches"):
        for _ in range(batches):
            client.run(tenant, 10)
    after = {r: p.memory_info().rss / 2**20 for r, p in services.items()}
    return {
        role: {
            "beforeMb": round(before[role], 1),
            "afterMb": round(after[role], 1),
            "growth": round(after[role] / before[role] - 1, 3),
        }
        for role in before
    }


def floor_throughput(pages: list[Path], settings: Any) -> dict[str, Any]:
    """Bare Tesseract's pages per second on this machine, as `make bench` measures it
    (one process per core), with docpipe's processes stopped meanwhile: the figure the
    run's throughput is quoted against."""
    import tempfile

    from docpipe.runtime.stack import process_trees
    from loadtest.bench import floor, paused

    procs = process_trees(proc.pid for proc in find_services(settings).values())
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="docpipe-floor-") as tmp, paused(procs):
        bare = floor(pages, Path(tmp), cores)
    return {
        "pages": len(pages),
        "cores": cores,
        "seconds": round(bare["seconds"], 2),
        "pagesPerSecond": round(len(pages) / bare["seconds"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--duration", default="3m", help="Locust's --run-time")
    parser.add_argument("--memory-batches", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results")
    parser.add_argument("--skip-scenarios", action="store_true")
    parser.add_argument("--skip-locust", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = get_settings()
    stack = None
    try:
        httpx.get(f"{settings.api_url}/health", timeout=2).raise_for_status()
        print(f"using the docpipe running at {settings.api_url}", flush=True)
    except httpx.HTTPError:
        print(f"starting docpipe in {settings.home} ...", flush=True)
        stack = Stack(settings)
        stack.start()
    try:
        vip, standard = make_tenant(Tier.VIP), make_tenant(Tier.STANDARD)
        pages_dir = ROOT / "loadtest" / ".pages"
        cached = cached_pages(args.batch_size, pages_dir)
        pages = [(p.name, p.read_bytes()) for p, _ in cached]
        print(f"the floor: bare Tesseract on the {len(cached)} pages ...", flush=True)
        bare = floor_throughput([p for p, _ in cached], settings)
        monitor = Monitor(settings, args.out / "monitor.csv")
        print(f"locust: 1 VIP and 1 standard user for {args.duration} ...", flush=True)
        if not args.skip_locust:
            with monitor.phase("standard load: Locust, VIP + standard"):
                subprocess.run(
                    locust_command(settings.api_url, args.out / "locust", args.duration),
                    env=locust_env(vip, standard, args.batch_size, pages_dir),
                    cwd=ROOT,
                    check=False,
                )
        client = Client(settings.api_url, pages)
        results: dict[str, Any] = {"floor": bare}
        if not args.skip_scenarios:
            print("scenarios: VIP versus standard ...", flush=True)
            results["priority"] = vip_scenarios(
                client, vip, standard, args.batch_size, monitor.phase
            )
            print("memory: warm-up, then more batches ...", flush=True)
            results["memory"] = memory_check(
                client, standard, settings, args.memory_batches, monitor.phase
            )
        monitor.stop()
        (args.out / "scenarios.json").write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if stack is not None:
            stack.stop()
    from loadtest.report import write_report

    print(write_report(args.out, settings.database_url, [vip.id, standard.id]))


if __name__ == "__main__":
    main()
