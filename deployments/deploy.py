"""Create (idempotently) the work pool, its priority queues and the deployments."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

from docpipe.config import get_settings
from docpipe.submit import QUEUE_PRIORITIES

PROJECT_DIR = Path(__file__).resolve().parent.parent


async def ensure_work_pool(pool: str) -> None:
    """Pool `pool` (process type) with queues critical (priority 1) and batch (priority 2)."""
    async with get_client() as client:
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        existing = {q.name: q for q in await client.read_work_queues(work_pool_name=pool)}
        # The pool's own "default" queue goes last so it never outranks ours.
        if "default" in existing:
            await client.update_work_queue(
                existing["default"].id, priority=len(QUEUE_PRIORITIES) + 1
            )
        for name, priority in QUEUE_PRIORITIES.items():
            if name in existing:
                await client.update_work_queue(existing[name].id, priority=priority)
            else:
                await client.create_work_queue(name=name, work_pool_name=pool, priority=priority)


def deploy_flows(pool: str) -> list[str]:
    """Register process-batch from the local source tree; returns the deployment ids."""
    process_batch = flow.from_source(
        source=str(PROJECT_DIR), entrypoint="flows/process_batch.py:process_batch"
    )
    deployment_id = process_batch.deploy(  # type: ignore[union-attr]
        name="process-batch",
        work_pool_name=pool,
        work_queue_name="batch",
        description="Validate and OCR one batch's documents, then summarise it. "
        "Runs on queue 'critical' for VIP tenants and 'batch' for standard ones.",
        tags=["docpipe"],
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,
    )
    settings = get_settings()
    recover = flow.from_source(
        source=str(PROJECT_DIR), entrypoint="flows/recover_batches.py:recover_batches"
    )
    recover_id = recover.deploy(  # type: ignore[union-attr]
        name="recover-batches",
        work_pool_name=pool,
        # Light work that unblocks others: it goes on the queue that is served first.
        work_queue_name="critical",
        description="Submit batches Prefect never received; resubmit ones whose flow run died.",
        interval=settings.recovery_interval_seconds,
        tags=["docpipe"],
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,
    )
    ingest = flow.from_source(
        source=str(PROJECT_DIR), entrypoint="flows/ingest_folder.py:ingest_folder"
    )
    ingest_id = ingest.deploy(  # type: ignore[union-attr]
        name="ingest-folder",
        work_pool_name=pool,
        work_queue_name="critical",
        description="Turn settled files in the inbox (one folder per tenant) into batches.",
        interval=settings.ingest_interval_seconds,
        tags=["docpipe"],
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,
    )
    return [str(deployment_id), str(recover_id), str(ingest_id)]


def main() -> None:
    pool = get_settings().work_pool
    asyncio.run(ensure_work_pool(pool))
    ids = deploy_flows(pool)
    print(f"work pool {pool!r} ready; deployments: {', '.join(ids)}")


if __name__ == "__main__":
    main()
