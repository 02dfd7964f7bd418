"""Several machines: a server and API on one, a worker each on two others, sharing only
PostgreSQL (docpipe's database and Prefect's), the Prefect server and a SeaweedFS bucket.

Each "machine" is a home of its own and, for the workers, a checkout at a path of its own
(tests/e2e/test_roles.py); each worker runs one flow run at a time, one page at a time, so
a batch that gets done by both needed both.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, select, text

from docpipe.runtime.stack import PROJECT_DIR, free_port
from loadtest.pages import page_png
from tests import documents
from tests.e2e.test_roles import checkout, clean_env, docpipe, from_checkout, running
from tests.helpers import (
    POSTGRES_URL,
    files_part,
    postgres_schema,
    started_by,
    unique,
    wait_for_batch,
)
from tests.s3 import S3Server

pytestmark = pytest.mark.e2e

READY = "Ctrl-C stops everything"
TUNING = {
    # One flow run per worker, one page per run: a batch is shared beyond two pages.
    "DOCPIPE_WORKER_LIMIT": "1",
    "DOCPIPE_OCR_CONCURRENCY": "1",
    "DOCPIPE_SPLIT_PAGES": "2",
    # Both workers' slots added up, plus the one kept for VIP batches.
    "DOCPIPE_DISPATCH_SLOTS": "3",
    # A killed worker's runs are found dead within seconds, and resubmitted by the API.
    "DOCPIPE_HEARTBEAT_SECONDS": "1",
    "DOCPIPE_STALE_AFTER_SECONDS": "8",
    "DOCPIPE_RECOVERY_INTERVAL_SECONDS": "4",
    "DOCPIPE_RECOVERY_SCHEDULE_SECONDS": "86400",
    # Scans are run by hand on both worker machines. A scheduled scan every few seconds
    # starves the batch queue of a limit-1 worker: the next scan, on the critical queue,
    # is always within the poll's prefetch window, and is taken first.
    "DOCPIPE_INGEST_INTERVAL_SECONDS": "86400",
    "DOCPIPE_INBOX_SETTLE_SECONDS": "1",
}


@dataclass
class Machines:
    api: httpx.Client
    key: str
    tenant: str
    database_url: str
    inbox: str  # bucket/prefix of the shared inbox
    homes: dict[str, Path]  # machine-b, machine-c: their homes
    workers: dict[str, subprocess.Popen[str]]
    envs: dict[str, dict[str, str]]
    code: dict[str, Path]  # each worker machine's checkout

    def log(self, name: str) -> str:
        return (self.homes[name] / "logs" / f"worker-{name}.log").read_text(errors="replace")

    def ran_on(self, run: str) -> str | None:
        """The worker that started this flow run (its id or name), by what its log says.
        Only the worker's own lines count: a batch's run logs its helpers' ids too."""
        return next((n for n in self.homes if started_by(self.log(n), run)), None)

    def claims(self, batch_id: str) -> dict[str, str | None]:
        """Which flow run did (or holds) each document of the batch."""
        from docpipe.models import Document

        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    select(Document.file_name, Document.claimed_by).where(
                        Document.batch_id == batch_id
                    )
                ).all()
        finally:
            engine.dispose()
        return {name: run for name, run in rows}


@contextmanager
def prefect_database() -> Iterator[str]:
    """A PostgreSQL database of its own for the Prefect server, dropped at the end."""
    name = unique("prefect_machines_").replace("-", "_")
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@contextmanager
def worker_machine(name: str, env: dict[str, str], at: Path) -> Iterator[subprocess.Popen[str]]:
    """`docpipe worker` from a checkout at `at`, until it polls; its tree killed at the end."""
    code = checkout(at)
    process = subprocess.Popen(
        docpipe("worker", "--name", name),
        env=from_checkout(code, env),
        cwd=code,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            printed.append(line)
            if "is polling pool" in line or not line:
                break
        assert "is polling pool" in "".join(printed), "".join(printed)
        yield process
    finally:
        kill_tree(process.pid)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started (flow runs, warm starter, Tesseract)."""
    from docpipe.runtime.stack import process_trees

    procs = process_trees([pid])
    for proc in procs:
        with suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)


@pytest.fixture(scope="module")
def machines(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machines]:
    root = tmp_path_factory.mktemp("machines")
    prefix = unique("machines")
    prefect_port, api_port = free_port(), free_port()
    with ExitStack() as stack:
        database_url = stack.enter_context(postgres_schema())
        prefect_db = stack.enter_context(prefect_database())
        shared = {
            **TUNING,
            **s3_server.env(storage=f"{prefix}/blobs", inbox=f"{prefix}/inbox"),
            "DOCPIPE_DATABASE_URL": database_url,
            "DOCPIPE_PREFECT_AUTH_STRING": f"docpipe:{secrets.token_urlsafe(16)}",
            "DOCPIPE_PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
            # Webhook secrets in the shared database are read with the same key everywhere.
            "DOCPIPE_WEBHOOK_KEY": Fernet.generate_key().decode(),
        }
        machine_a = clean_env(
            **shared,
            DOCPIPE_HOME=str(root / "home-a"),
            DOCPIPE_PREFECT_PORT=str(prefect_port),
            DOCPIPE_API_PORT=str(api_port),
            PREFECT_API_DATABASE_CONNECTION_URL=prefect_db,
        )
        stack.enter_context(running(["up", "--no-worker"], machine_a, PROJECT_DIR, READY))
        created = subprocess.run(
            docpipe("tenant", "create", "acme", "--json"),
            env=machine_a,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        key = json.loads(created.stdout)["apiKey"]
        homes, workers, envs, code = {}, {}, {}, {}
        for name, path in (
            ("machine-b", root / "b" / "srv" / "docpipe"),
            ("machine-c", root / "c" / "home" / "ocr" / "checkout"),
        ):
            homes[name] = root / f"home-{name}"
            envs[name] = clean_env(**shared, DOCPIPE_HOME=str(homes[name]))
            workers[name] = stack.enter_context(worker_machine(name, envs[name], path))
            code[name] = path
        api = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=60))
        yield Machines(
            api=api,
            key=key,
            tenant="acme",
            database_url=database_url,
            inbox=s3_server.url(f"{prefix}/inbox").removeprefix("s3://"),
            homes=homes,
            workers=workers,
            envs=envs,
            code=code,
        )


def post(m: Machines, files: list[tuple[str, bytes]]) -> str:
    response = m.api.post(
        f"/api/documents/bulk-upload?tenantId={m.tenant}",
        headers={"X-API-Key": m.key},
        files=files_part(files),
    )
    assert response.status_code == 202, response.text
    return str(response.json()["batchId"])


def check_text(m: Machines, batch: dict[str, Any], phrases: dict[str, str]) -> None:
    for doc in batch["documents"]:
        assert doc["status"] == "Ready", doc
        got = m.api.get(f"/api/documents/{doc['id']}/text", headers={"X-API-Key": m.key}).text
        want = phrases[doc["fileName"]]
        assert documents.words(want) <= documents.words(got), (doc["fileName"], got)


def test_batches_run_on_both_workers(machines: Machines) -> None:
    m = machines
    phrases: dict[str, str] = {}
    batch_ids = []
    for b in range(4):
        files = []
        for i in range(2):  # two pages: not shared, each batch is one run on one worker
            seed = 10 * b + i
            name = f"b{b}-{i}.png"
            phrases[name] = documents.phrase(seed)
            files.append((name, documents.document(phrases[name], "png", seed=seed)))
        batch_ids.append(post(m, files))

    ran_on = set()
    for batch_id in batch_ids:
        batch = wait_for_batch(m.api, m.key, batch_id, timeout=180)
        assert batch["status"] == "Completed"
        check_text(m, batch, phrases)
        # A batch this small is its own run's alone, named after it in its worker's log.
        ran_on.add(m.ran_on(f"batch-{batch_id}"))
    assert ran_on == {"machine-b", "machine-c"}, ran_on


def test_the_shared_inbox_is_ingested_once_though_both_workers_scan(machines: Machines) -> None:
    m = machines
    import s3fs

    env = m.envs["machine-b"]
    store = s3fs.S3FileSystem(
        endpoint_url=env["DOCPIPE_STORAGE_ENDPOINT_URL"],
        key=env["DOCPIPE_STORAGE_KEY_ID"],
        secret=env["DOCPIPE_STORAGE_SECRET"],
        skip_instance_cache=True,
        use_listings_cache=False,
    )
    folder = f"{m.inbox}/{m.tenant}"
    phrases = {f"scan-{i}.png": documents.phrase(100 + i) for i in range(3)}
    for name, phrase in phrases.items():
        store.pipe_file(f"{folder}/{name}", documents.document(phrase, "png", seed=100))

    # Each worker machine scans, from its own checkout, both at once, a few times.
    scan = "from docpipe.inbox import scan_inbox; print(len(scan_inbox().batches))"
    for _ in range(4):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", scan],
                env=from_checkout(m.code[name], m.envs[name]),
                cwd=m.code[name],
                stdout=subprocess.PIPE,
                text=True,
            )
            for name in m.homes
        ]
        for proc in procs:
            proc.wait(timeout=120)
        time.sleep(1)

    names = set(phrases)
    deadline = time.monotonic() + 180
    while True:
        rows = _documents_named(m, names)
        ready = [r for r in rows if r[2] == "Ready"]
        if len(ready) >= len(names) or time.monotonic() > deadline:
            break
        time.sleep(1)
    for name in m.homes:  # and again once all is Ready: nothing is taken twice
        subprocess.run(
            [sys.executable, "-c", scan],
            env=from_checkout(m.code[name], m.envs[name]),
            cwd=m.code[name],
            check=True,
            timeout=120,
        )
    rows = _documents_named(m, names)
    assert sorted(r[0] for r in rows) == sorted(names), rows  # each file once
    assert {r[2] for r in rows} == {"Ready"}, rows
    for name, batch_id, _ in rows:
        batch = wait_for_batch(m.api, m.key, batch_id, timeout=60)
        mine = [d for d in batch["documents"] if d["fileName"] == name]
        check_text(m, {"documents": mine}, phrases)


def _documents_named(m: Machines, names: set[str]) -> list[tuple[str, str, str]]:
    from docpipe.models import Document

    engine = create_engine(m.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Document.file_name, Document.batch_id, Document.status).where(
                    Document.file_name.in_(names)
                )
            ).all()
    finally:
        engine.dispose()
    return [(n, b, str(getattr(s, "value", s))) for n, b, s in rows]


def test_a_big_batch_is_shared_by_both_workers(machines: Machines) -> None:
    m = machines
    phrases = {f"page-{i}.png": documents.phrase(200 + i) for i in range(6)}
    batch_id = post(
        m,
        [
            (n, documents.document(p, "png", seed=200 + i))
            for i, (n, p) in enumerate(phrases.items())
        ],
    )

    batch = wait_for_batch(m.api, m.key, batch_id, timeout=180)

    assert batch["status"] == "Completed"
    assert batch["successCount"] == 6
    check_text(m, batch, phrases)
    done_by = set(m.claims(batch_id).values())
    assert {m.ran_on(r) for r in done_by if r} == {"machine-b", "machine-c"}, done_by
    # Summarised once, on one machine, though runs on both did its documents.
    summaries = [m.log(n).count(f"Batch {batch_id} complete:") for n in m.homes]
    assert sorted(summaries) == [0, 1], summaries


def test_a_worker_killed_mid_batch_loses_nothing(machines: Machines) -> None:
    m = machines
    batch_id = post(m, [(f"{i}.png", page_png(i)) for i in range(10)])
    deadline = time.monotonic() + 120
    while True:
        held = {r for r in m.claims(batch_id).values() if r not in (None, "-")}
        on = {w for r in held if (w := m.ran_on(r)) is not None}
        if on:
            break
        assert time.monotonic() < deadline, "no run took a document"
        time.sleep(0.2)
    victim = sorted(on)[0]
    kill_tree(m.workers[victim].pid)

    batch = wait_for_batch(m.api, m.key, batch_id, timeout=240)

    assert batch["status"] == "Completed"
    assert batch["successCount"] == 10, [d["error"] for d in batch["documents"]]
    assert {d["status"] for d in batch["documents"]} == {"Ready"}
