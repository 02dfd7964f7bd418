"""`docpipe up` runs any subset of its roles; a worker runs from any checkout path."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from docpipe.runtime.stack import PROJECT_DIR, free_port
from tests import documents
from tests.helpers import wait_for_batch

pytestmark = pytest.mark.e2e

SOURCE = ("docpipe", "flows", "tasks", "deployments")


def checkout(at: Path) -> Path:
    """A copy of this checkout's code at another path: what another machine's clone holds."""
    for package in SOURCE:
        shutil.copytree(
            PROJECT_DIR / package, at / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return at


def clean_env(**values: str) -> dict[str, str]:
    """This environment without any docpipe or Prefect setting, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCPIPE_", "PREFECT_"))}
    return {**env, **values}


def from_checkout(path: Path, env: dict[str, str]) -> dict[str, str]:
    """Run docpipe from the code at `path`, with the same Python: it comes first on the path,
    before this environment's own install of docpipe."""
    return {**env, "PYTHONPATH": str(path)}


def docpipe(*args: str) -> list[str]:
    """The docpipe command of whichever docpipe this Python imports first."""
    return [sys.executable, "-c", "from docpipe.cli import app; app()", *args]


@contextmanager
def running(args: list[str], env: dict[str, str], cwd: Path, ready: str) -> Iterator[str]:
    """`docpipe ARGS` until it prints `ready`; yields what it printed; Ctrl-C at the end."""
    process = subprocess.Popen(
        docpipe(*args),
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        output: list[str] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            output.append(line)
            if ready in line or not line:
                break
        printed = "".join(output)
        assert ready in printed, printed
        yield printed
    finally:
        started = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            for proc in [psutil.Process(process.pid), *started]:
                proc.kill()
        psutil.wait_procs(started, timeout=5)


def test_server_and_api_without_a_worker_then_a_worker_from_another_checkout(
    tmp_path: Path,
) -> None:
    """Machine 1 runs Prefect (beyond loopback, so with a secret) and the API, no worker;
    the deployments are made from checkout A, which is then gone; machine 2 runs only an
    API against machine 1's server; machine 3 a worker from checkout B, at another path."""
    password = secrets.token_urlsafe(16)
    secret = f"docpipe:{password}"
    prefect_port, api_port, api2_port = free_port(), free_port(), free_port()
    shared = {
        "DOCPIPE_DATABASE_URL": f"sqlite:///{tmp_path / 'shared' / 'docpipe.db'}",
        "DOCPIPE_STORAGE_URL": str(tmp_path / "shared" / "blobs"),
        "DOCPIPE_PREFECT_AUTH_STRING": secret,
        "DOCPIPE_PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "DOCPIPE_INGEST_INTERVAL_SECONDS": "0",
    }
    machine1 = clean_env(
        **shared,
        DOCPIPE_HOME=str(tmp_path / "home1"),
        DOCPIPE_PREFECT_HOST="0.0.0.0",
        DOCPIPE_PREFECT_PORT=str(prefect_port),
        DOCPIPE_API_HOST="0.0.0.0",
        DOCPIPE_API_PORT=str(api_port),
    )
    ready = "Ctrl-C stops everything"
    with running(["up", "--no-worker"], machine1, PROJECT_DIR, ready) as printed:
        assert "no worker here" in printed
        prefect = httpx.Client(base_url=shared["DOCPIPE_PREFECT_API_URL"], timeout=30)
        assert prefect.post("/deployments/filter", json={}).status_code == 401

        a = checkout(tmp_path / "machine-a" / "docpipe-checkout")
        deployed = subprocess.run(
            docpipe("deploy"),
            env=from_checkout(a, machine1),
            cwd=a,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        shutil.rmtree(a)  # the deploying machine's checkout is nowhere a worker runs

        stored = prefect.post("/deployments/filter", json={}, auth=("docpipe", password))
        assert stored.status_code == 200
        assert {d["name"] for d in stored.json()} >= {"process-batch", "ingest-folder"}
        for deployment in stored.json():
            assert not deployment["pull_steps"] and deployment["path"] is None
            assert deployment["entrypoint"].startswith("flows.")
        assert str(a) not in stored.text and str(PROJECT_DIR) not in stored.text

        created = subprocess.run(
            docpipe("tenant", "create", "acme", "--json"),
            env=machine1,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        key = json.loads(created.stdout)["apiKey"]

        # Machine 2: an API only, with the server of machine 1.
        machine2 = clean_env(
            **shared, DOCPIPE_HOME=str(tmp_path / "home2"), DOCPIPE_API_PORT=str(api2_port)
        )
        with (
            running(["up", "--no-server", "--no-worker"], machine2, PROJECT_DIR, ready),
            httpx.Client(base_url=f"http://127.0.0.1:{api2_port}", timeout=60) as api,
        ):
            first = upload(api, key, seed=1)
            time.sleep(3)
            waiting = api.get(f"/api/batches/{first}", headers={"X-API-Key": key}).json()
            assert waiting["status"] == "Queued"  # no worker anywhere yet

            # Machine 3: a worker from checkout B, which imports its code from there.
            b = checkout(tmp_path / "machine-b" / "elsewhere" / "docpipe")
            machine3 = from_checkout(b, clean_env(**shared, DOCPIPE_HOME=str(tmp_path / "home3")))
            where = subprocess.run(
                [sys.executable, "-c", "import flows.process_batch as m; print(m.__file__)"],
                env=machine3,
                cwd=b,
                capture_output=True,
                text=True,
                check=True,
            )
            assert where.stdout.strip() == str(b / "flows" / "process_batch.py")
            with running(["worker", "--name", "machine-3"], machine3, b, "is polling pool"):
                second = upload(api, key, seed=2)
                for batch_id in (first, second):
                    batch = wait_for_batch(api, key, batch_id, timeout=240)
                    assert (batch["status"], batch["successCount"]) == ("Completed", 1)


def upload(api: httpx.Client, key: str, *, seed: int) -> str:
    page = documents.document(documents.phrase(seed), "png", seed=seed)
    accepted = api.post(
        "/api/documents/upload?tenantId=acme",
        headers={"X-API-Key": key},
        files={"file": ("a.png", page)},
    )
    assert accepted.status_code == 202, accepted.text
    return str(accepted.json()["batchId"])


def test_up_refuses_to_serve_prefect_beyond_loopback_without_a_set_secret(
    tmp_path: Path,
) -> None:
    env = clean_env(
        DOCPIPE_HOME=str(tmp_path),
        DOCPIPE_PREFECT_HOST="0.0.0.0",
        DOCPIPE_PREFECT_PORT=str(port := free_port()),
    )
    result = subprocess.run(
        docpipe("up"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: DOCPIPE_PREFECT_HOST=0.0.0.0 serves Prefect beyond this machine: set its "
        "secret in DOCPIPE_PREFECT_AUTH_STRING (user:password) first"
    ]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/health")


@pytest.mark.parametrize(
    "command",
    [("up", "--no-server", "--no-worker"), ("worker",), ("deploy",)],
    ids=["up", "worker", "deploy"],
)
def test_without_a_server_up_and_worker_say_which_one_did_not_answer(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    env = clean_env(DOCPIPE_HOME=str(tmp_path), DOCPIPE_PREFECT_API_URL=url)
    result = subprocess.run(
        docpipe(*command),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: no Prefect server answers at {url}")
