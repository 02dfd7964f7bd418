"""docpipe's worker starts a run when the server says it was scheduled, not at its next poll."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from docpipe.worker import is_for_pool, serialised
from tests.conftest import cli, started_stack
from tests.test_warm import one_page_batch


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
