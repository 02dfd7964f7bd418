"""docpipe's worker starts a run when the server says it was scheduled, not at its next poll."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import psutil
import pytest

from docpipe.runtime.worker import is_for_pool, serialised, started_outside_docpipe
from tests import documents
from tests.e2e.test_warm import one_page_batch
from tests.helpers import cli, files_part, started_stack, wait_for_batch

pytestmark = pytest.mark.e2e


@pytest.fixture
def slow_polling_stack(tmp_path: Path) -> Iterator[Any]:
    """A stack whose worker polls its pool only every ten minutes."""
    with started_stack(tmp_path, worker_poll_seconds=600) as stack:
        yield stack


@pytest.mark.e2e
def test_a_batch_starts_without_waiting_for_the_workers_poll(slow_polling_stack: Any) -> None:
    stack = slow_polling_stack
    key = json.loads(cli(stack, "tenant", "create", "acme", "--tier", "vip", "--json"))["apiKey"]

    # Two batches one after the other: the worker's first poll (at its start) is long
    # past for both, and its next one is ten minutes away.
    for seed in (1, 2):
        batch = one_page_batch(stack, key, seed=seed, timeout=120)
        assert batch["status"] == "Completed" and batch["successCount"] == 1

    log = (stack.log_dir / "worker.log").read_text()
    assert "listening for runs scheduled on pool 'docpipe'" in log


def test_a_full_worker_starts_the_next_batch_as_soon_as_a_run_ends(tmp_path: Path) -> None:
    """The batch a run hands over as it ends is scheduled while its worker is still full."""
    with started_stack(tmp_path, worker_poll_seconds=600, worker_limit=1) as stack:
        key = json.loads(cli(stack, "tenant", "create", "acme", "--json"))["apiKey"]
        with httpx.Client(base_url=stack.settings.api_url, timeout=60) as api:
            ids = []
            for seed in (1, 2, 3):  # one slot: the second and third wait their turn
                page = documents.document(documents.phrase(seed), "png", seed=seed)
                response = api.post(
                    "/api/documents/bulk-upload",
                    headers={"X-API-Key": key},
                    files=files_part([("a.png", page)]),
                )
                assert response.status_code == 202, response.text
                ids.append(response.json()["batchId"])
            # Well before the worker's next poll, ten minutes away.
            for batch_id in ids:
                batch = wait_for_batch(api, key, batch_id, timeout=90)
                assert batch["status"] == "Completed", batch


def test_events_are_matched_to_their_work_pool() -> None:
    def event(*related: dict[str, str]) -> Any:
        return SimpleNamespace(related=list(related))

    pool = {"prefect.resource.role": "work-pool", "prefect.resource.name": "docpipe"}
    other = {"prefect.resource.role": "work-pool", "prefect.resource.name": "gpu"}
    queue = {"prefect.resource.role": "work-queue", "prefect.resource.name": "docpipe"}

    assert is_for_pool(event(queue, pool), "docpipe")
    assert not is_for_pool(event(other), "docpipe")
    assert not is_for_pool(event(queue), "docpipe")
    assert not is_for_pool(event(), "docpipe")


def test_only_runs_started_outside_docpipe_are_taken_in() -> None:
    def event(*related: dict[str, str]) -> Any:
        return SimpleNamespace(related=list(related))

    process_batch = {
        "prefect.resource.role": "deployment",
        "prefect.resource.name": "process-batch",
    }
    ingest = {"prefect.resource.role": "deployment", "prefect.resource.name": "ingest-folder"}
    ours = {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.tenant:acme"}
    theirs = {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.nightly"}

    assert started_outside_docpipe(event(process_batch, theirs))
    assert started_outside_docpipe(event(process_batch))
    assert not started_outside_docpipe(event(process_batch, ours, theirs))
    assert not started_outside_docpipe(event(ingest))


def test_polls_never_overlap() -> None:
    running = 0
    most = 0

    async def poll() -> list[Any]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await anyio.sleep(0.01)
        running -= 1
        return []

    async def main() -> None:
        locked = serialised(poll)

        async def call() -> None:
            await locked()

        async with anyio.create_task_group() as tasks:
            for _ in range(5):
                tasks.start_soon(call)

    anyio.run(main)
    assert most == 1


@pytest.mark.e2e
def test_docpipe_worker_runs_beside_make_ups_worker_on_the_same_home(
    stack: Any, prefect_api: None
) -> None:
    """Its own name, warm starter socket and log files; `make up`'s worker keeps its own."""
    import signal
    import socket
    import subprocess
    import time

    from prefect.client.orchestration import get_client

    from docpipe.runtime.stack import _bin, service_env
    from docpipe.runtime.warm import socket_path_for

    name = f"docpipe-worker-{socket.gethostname()}"
    ours = socket_path_for(stack.settings.home, "docpipe-worker")
    assert ours.exists()
    extra = subprocess.Popen(
        [_bin("docpipe"), "worker"],
        env=service_env(stack.settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        with get_client(sync_client=True) as client:
            while name not in {w.name for w in client.read_workers_for_work_pool("docpipe")}:
                assert extra.poll() is None, extra.stdout.read() if extra.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.5)
        assert socket_path_for(stack.settings.home, name).exists()
        assert ours.exists()  # make up's warm starter still answers at its own socket
        logs = {p.name for p in stack.log_dir.iterdir()}
        assert {f"worker-{name}.log", f"warm-starter-{name}.log"} <= logs
    finally:
        extra.send_signal(signal.SIGINT)
        output, _ = extra.communicate(timeout=60)
    assert extra.returncode == 0, output
    assert "stopped." in output
    assert ours.exists()
    assert f"worker {name} is polling" in output
    assert (stack.log_dir / "worker.log").exists()


@pytest.mark.parametrize("hang_up", [False, True], ids=["output-closed", "sighup"])
def test_a_worker_whose_output_or_terminal_goes_leaves_nothing_running(
    stack: Any, hang_up: bool
) -> None:
    """`docpipe worker | head -1`, or a closed terminal: the worker and its warm starter
    stop with the command, never left running on their own."""
    from docpipe.runtime.stack import _bin, service_env
    from docpipe.runtime.warm import SOCKET_ENV, socket_path_for

    name = f"gone-{'hup' if hang_up else 'pipe'}"
    command = subprocess.Popen(
        [_bin("docpipe"), "worker", "--name", name],
        env=service_env(stack.settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert command.stdout is not None

    socket = str(socket_path_for(stack.settings.home, name))

    def left() -> list[str]:
        """The processes of this worker still alive: itself, and its warm starter (known by
        the socket it serves)."""
        alive = []
        for process in psutil.process_iter(["cmdline", "status"]):
            line = " ".join(process.info["cmdline"] or [])
            if "docpipe.runtime" not in line or process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            with contextlib.suppress(psutil.Error):
                if f"--name {name}" in line or process.environ().get(SOCKET_ENV) == socket:
                    alive.append(line)
        return alive

    if hang_up:
        assert command.stdout.readline() == b"\n"  # the banner: everything has started
        assert len(left()) == 2, left()
        command.send_signal(signal.SIGHUP)
    else:
        command.stdout.close()  # nobody reads what it says, from its first line on
    command.wait(timeout=120)  # Typer ends a command whose output is gone with status 1

    deadline = time.monotonic() + 30
    while left():
        assert time.monotonic() < deadline, left()
        time.sleep(0.5)
