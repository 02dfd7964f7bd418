"""Sample the stack while a load runs: memory and CPU per process, queue depth, UI query latency."""

from __future__ import annotations

import contextlib
import csv
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import create_engine, func, select

from docpipe.config import Settings
from docpipe.home import prefect_auth_headers
from docpipe.models import FINAL_DOCUMENT_STATUSES, Document

ROLES = {
    "server": ("-m", "docpipe.runtime.prefect_server"),
    "worker": ("-m", "docpipe.runtime.worker"),
    "api": ("-m", "docpipe.api.serve"),
    "warm": ("docpipe.runtime.warm", "serve"),  # the warm starter; flow runs are its children
}
COLUMNS = [
    "t", "rss_server_mb", "rss_worker_mb", "rss_api_mb", "rss_warm_mb", "rss_flow_runs_mb",
    "cpu_server", "cpu_worker", "cpu_api", "cpu_warm", "cpu_flow_runs", "cpu_tesseract",
    "queued_critical", "queued_batch", "documents_open", "ui_query_ms",
]  # fmt: skip


def is_tesseract(proc: psutil.Process) -> bool:
    """Whether a process reads pages: Tesseract's program, or the in-process engine's child."""
    with contextlib.suppress(psutil.Error):
        return proc.name().startswith("tesseract") or "docpipe.ocr_server" in proc.cmdline()
    return False


def ui_flow_run_query_ms(prefect: httpx.Client) -> float:
    """Milliseconds the Prefect server takes to answer what the UI's runs page asks for."""
    started = time.perf_counter()
    prefect.post(
        "/flow_runs/filter", json={"limit": 50, "sort": "START_TIME_DESC"}
    ).raise_for_status()
    return (time.perf_counter() - started) * 1000


def due_runs(prefect: httpx.Client, queue: str, now: datetime) -> int | None:
    """Flow runs on a work queue that wait to start: due (Scheduled or Late, expected to
    start by `now`) or Pending. Runs a schedule made for later are not waiting yet."""
    counted = prefect.post(
        "/flow_runs/count",
        json={
            "flow_runs": {
                "state": {"type": {"any_": ["SCHEDULED", "PENDING"]}},
                "expected_start_time": {"before_": now.isoformat()},
            },
            "work_pool_queues": {"name": {"any_": [queue]}},
        },
    )
    return int(counted.json()) if counted.is_success else None


def find_services(settings: Settings) -> dict[str, psutil.Process]:
    """The stack's processes for this installation's ports, found by their command lines."""
    found: dict[str, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline", "environ"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        for role, words in ROLES.items():
            if all(w in cmdline for w in words) and role not in found:
                if role == "warm" and "docpipe.runtime.warm" in " ".join(proc.parent().cmdline()):
                    continue  # a flow run forked from the warm starter, not the starter
                env = proc.info.get("environ") or {}
                if env.get("DOCPIPE_HOME", str(settings.home)) == str(settings.home):
                    found[role] = proc
    return found


@dataclass
class Monitor:
    """Samples every `interval` seconds into `out` (CSV); the phases of the run, marked with
    phase(), go beside it in phases.json, on the same clock."""

    settings: Settings
    out: Path
    interval: float = 1.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.services = find_services(self.settings)
        self.stopped = threading.Event()
        self.engine = create_engine(self.settings.database_url)
        self.cpu_seen: dict[int, float] = {}
        self.reaped_seen: dict[int, float] = {}
        self.children_seen: dict[int, set[int]] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()
        self.started_at = datetime.now(UTC)  # where t=0 is, for what is timed by the clock
        self.thread.start()

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Mark a phase of the run (warm-up, VIP arrival...): the report's plots show it."""
        start = self.elapsed()
        try:
            yield
        finally:
            self.phases.append({"name": name, "start": start, "end": self.elapsed()})

    def stop(self) -> list[dict[str, Any]]:
        self.stopped.set()
        self.thread.join()
        with self.out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        (self.out.parent / "phases.json").write_text(
            json.dumps({"origin": self.started_at.isoformat(), "phases": self.phases}, indent=2)
            + "\n"
        )
        self.engine.dispose()
        return self.rows

    def rss(self) -> dict[str, float]:
        return {role: proc.memory_info().rss / 2**20 for role, proc in self.services.items()}

    def _cpu_delta(self, proc: psutil.Process) -> float:
        """CPU seconds `proc` used since the last sample; from its start if it is new.

        Flow runs and Tesseract processes come and go between samples: one first seen
        at the monitor's start counts from then, a later one from its beginning.
        """
        t = proc.cpu_times()
        now = t.user + t.system
        delta = now - self.cpu_seen.get(proc.pid, now if not self.rows else 0.0)
        self.cpu_seen[proc.pid] = now
        return delta

    def _reaped_delta(self, proc: psutil.Process, live_children: set[int]) -> float:
        """CPU seconds of `proc`'s children that ended, and that it reaped, since the last
        sample, less what was already counted of them while they ran.

        A Tesseract process usually lives under a second: most of its CPU is only ever
        seen here, in its flow run's reaped-children times.
        """
        t = proc.cpu_times()
        reaped = t.children_user + t.children_system
        delta = reaped - self.reaped_seen.get(proc.pid, reaped if not self.rows else 0.0)
        self.reaped_seen[proc.pid] = reaped
        for pid in self.children_seen.get(proc.pid, set()) - live_children:
            delta -= self.cpu_seen.pop(pid, 0.0)  # counted while it ran; now in `reaped`
        self.children_seen[proc.pid] = live_children
        return max(delta, 0.0)

    def _run(self) -> None:
        with httpx.Client(
            base_url=self.settings.prefect_api_url,
            headers=prefect_auth_headers(self.settings),
            timeout=30,
        ) as prefect:
            while not self.stopped.wait(self.interval):
                try:
                    self.rows.append(self._sample(prefect))
                except (psutil.Error, httpx.HTTPError):
                    continue

    def _sample(self, prefect: httpx.Client) -> dict[str, Any]:
        row: dict[str, Any] = {"t": self.elapsed()}
        flow_runs_rss = flow_runs_cpu = tesseract_cpu = 0.0
        for role, proc in self.services.items():
            row[f"rss_{role}_mb"] = round(proc.memory_info().rss / 2**20, 1)
            row[f"cpu_{role}"] = round(self._cpu_delta(proc), 3)
            if role not in ("worker", "warm"):  # flow runs start cold or warm
                continue
            for child in proc.children(recursive=True):
                try:
                    if is_tesseract(child):
                        tesseract_cpu += self._cpu_delta(child)
                        continue
                    flow_runs_cpu += self._cpu_delta(child)
                    flow_runs_rss += child.memory_info().rss / 2**20
                    # What it ran and reaped is Tesseract (flow runs start nothing else).
                    live = {c.pid for c in child.children()}
                    tesseract_cpu += self._reaped_delta(child, live)
                except psutil.NoSuchProcess:
                    continue
        row["rss_flow_runs_mb"] = round(flow_runs_rss, 1)
        row["cpu_flow_runs"] = round(flow_runs_cpu, 3)
        row["cpu_tesseract"] = round(tesseract_cpu, 3)
        now = datetime.now(UTC)
        for queue in ("critical", "batch"):
            row[f"queued_{queue}"] = due_runs(prefect, queue, now)
        row["ui_query_ms"] = round(ui_flow_run_query_ms(prefect), 1)
        with self.engine.connect() as connection:
            row["documents_open"] = connection.scalar(
                select(func.count()).where(
                    Document.status.not_in([s.value for s in FINAL_DOCUMENT_STATUSES])
                )
            )
        return row
