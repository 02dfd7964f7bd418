"""docpipe's worker: Prefect's process worker, woken as soon as a run is scheduled.

A Prefect worker finds new flow runs by polling its work pool. A poll every 2 s left a
new batch waiting 1 s on average, and cost the worker and the server CPU all day long.
This worker also listens to the server's event stream: a `prefect.flow-run.Scheduled`
event for its pool makes it poll at once. The regular poll (PREFECT_WORKER_QUERY_SECONDS)
stays, as the fallback for a missed event or a dropped stream, so it can be slow.

Polls are serialised: a woken poll and a regular one never run at the same time, so a
run is never submitted twice. Which queue goes first is still the poll's choice (queue
priority), exactly as for `prefect worker start`.

Run it as `python -m docpipe.runtime.worker --pool docpipe --name <name> --limit <n>`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

log = logging.getLogger("docpipe.runtime.worker")
SCHEDULED_EVENT = "prefect.flow-run.Scheduled"
CANCELLING_EVENT = "prefect.flow-run.Cancelling"
# The event is published while the server is still committing the run: when a woken poll
# finds nothing, it looks once more after this long.
RECHECK_SECONDS = 0.5
RECONNECT_SECONDS = 5.0


def serialised(poll: Callable[[], Awaitable[list[Any]]]) -> Callable[[], Awaitable[list[Any]]]:
    """The same poll, never running twice at once."""
    lock = anyio.Lock()

    async def locked() -> list[Any]:
        async with lock:
            return await poll()

    return locked


def is_for_pool(event: Any, pool: str) -> bool:
    """Whether an event is about a flow run on work pool `pool`."""
    return any(
        related.get("prefect.resource.role") == "work-pool"
        and related.get("prefect.resource.name") == pool
        for related in event.related
    )


def started_outside_docpipe(event: Any) -> bool:
    """Whether an event is about a process-batch run without docpipe's tags: only such runs
    need taking in. Read from the event itself, so docpipe's own runs cost no request."""
    from docpipe import orchestrator

    related = [(r.get("prefect.resource.role"), r) for r in event.related]
    deployment = orchestrator.PROCESS_BATCH_DEPLOYMENT.split("/")[1]
    tags = [
        r.get("prefect.resource.id", "").removeprefix("prefect.tag.")
        for k, r in related
        if k == "tag"
    ]
    return any(
        k == "deployment" and r.get("prefect.resource.name") == deployment for k, r in related
    ) and not orchestrator.is_labelled(tags)


def flow_run_of(event: Any) -> str:
    return str(event.resource.id).removeprefix("prefect.flow-run.")


async def wake_on_scheduled_runs(pool: str, poll: Callable[[], Awaitable[list[Any]]]) -> None:
    """Poll at once whenever a flow run is scheduled on work pool `pool`, and end a batch
    whose run was cancelled in Prefect; forever.

    A batch's run started outside docpipe (the UI, Python) is first made the batch's own
    (`dispatch.adopt_flow_run`): named, tagged, and on its tier's queue before it is polled.
    """
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter

    from docpipe import dispatch

    event_filter = EventFilter(event=EventNameFilter(name=[SCHEDULED_EVENT, CANCELLING_EVENT]))
    while True:
        try:
            async with get_events_subscriber(filter=event_filter) as subscriber:
                log.info("listening for runs scheduled on pool %r", pool)
                async for event in subscriber:
                    if not is_for_pool(event, pool):
                        continue
                    if event.event == CANCELLING_EVENT:
                        await _in_thread(dispatch.cancelled_in_prefect, flow_run_of(event))
                        continue
                    if started_outside_docpipe(event):
                        await _in_thread(dispatch.adopt_flow_run, flow_run_of(event))
                    if not await poll():
                        await anyio.sleep(RECHECK_SECONDS)
                        await poll()
        except Exception as e:  # the regular poll carries on meanwhile
            log.warning("event stream lost (%s); listening again in %g s", e, RECONNECT_SECONDS)
        await anyio.sleep(RECONNECT_SECONDS)


async def _in_thread(step: Callable[[str], object], flow_run_id: str) -> None:
    """A domain step for one run, off the event loop; its failure never stops the worker."""
    try:
        await anyio.to_thread.run_sync(step, flow_run_id)
    except Exception as e:
        log.warning("%s(%s) failed: %s", getattr(step, "__name__", step), flow_run_id, e)


async def run(pool: str, name: str, limit: int | None) -> None:
    from prefect.settings import PREFECT_WORKER_HEARTBEAT_SECONDS
    from prefect.workers.process import ProcessWorker

    from docpipe.orchestrator import QUEUE_PRIORITIES

    worker = ProcessWorker(
        name=name,
        work_pool_name=pool,
        # Not the queue where runs started from the UI arrive: docpipe moves those first.
        work_queues=list(QUEUE_PRIORITIES),
        limit=limit,
        heartbeat_interval_seconds=int(PREFECT_WORKER_HEARTBEAT_SECONDS.value()),
    )
    # The worker's own loop looks the method up on the instance: both pollers share it.
    poll = serialised(worker.get_and_submit_flow_runs)
    worker.get_and_submit_flow_runs = poll  # type: ignore[method-assign, assignment]
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(stop_on_signal, tasks.cancel_scope)
        tasks.start_soon(wake_on_scheduled_runs, pool, poll)
        poll_when_a_slot_frees(worker, tasks, poll)
        await worker.start(printer=print)
        tasks.cancel_scope.cancel()


def poll_when_a_slot_frees(
    worker: Any, tasks: anyio.abc.TaskGroup, poll: Callable[[], Awaitable[list[Any]]]
) -> None:
    """Poll as soon as one of this worker's runs ends.

    A batch's run hands the next batch to Prefect before it ends itself, so the event that
    the next run was scheduled comes while this worker is still at its limit; without
    this, that run waited for the next regular poll (up to DOCPIPE_WORKER_POLL_SECONDS).
    Prefect's worker frees a slot in `_release_limit_slot` (Prefect is pinned to 3.9).
    """
    release = worker._release_limit_slot

    async def poll_quietly() -> None:
        try:
            await poll()
        except Exception as e:  # the regular poll carries on
            log.warning("poll after a run ended failed: %s", e)

    def release_then_poll(flow_run_id: Any) -> None:
        release(flow_run_id)
        tasks.start_soon(poll_quietly)

    worker._release_limit_slot = release_then_poll


async def stop_on_signal(scope: anyio.CancelScope) -> None:
    """SIGTERM or SIGINT stops the worker (its runs go on); a second one kills it."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if scope.cancel_called:
                os.kill(os.getpid(), signal.SIGKILL)
            print(f"Received {signal.Signals(signum).name}; stopping the worker.", flush=True)
            scope.cancel()


def main(argv: list[str] | None = None) -> None:
    from prefect.logging.configuration import setup_logging

    parser = argparse.ArgumentParser(prog="python -m docpipe.runtime.worker", description=__doc__)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    setup_logging()
    logging.getLogger("docpipe").setLevel(logging.INFO)
    asyncio.run(run(args.pool, args.name, args.limit))
    print(f"Worker {args.name!r} stopped!", flush=True)


if __name__ == "__main__":
    main()
