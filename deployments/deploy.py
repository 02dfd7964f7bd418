"""Create (idempotently) the work pool, its priority queues and the deployments."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectAlreadyExists
from prefect.settings import PREFECT_DEPLOYMENTS_CLEAR_SCHEDULES_ON_EMPTY, temporary_settings

from docpipe.config import get_settings
from docpipe.submit import QUEUE_PRIORITIES

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Flow runs start through docpipe's warm starter (docpipe/runtime/warm.py): forked from a process
# that has Prefect and the flows imported, instead of a new Python importing them again.
FLOW_RUN_COMMAND = "python -m docpipe.runtime.warm"
# The pool's job template takes no variables: nobody who may create a flow run can change
# the command it runs, its environment or its directory (job_variables are refused).
# `env` is left out on purpose: a dict there is merged with a run's `env` variable.
LOCKED_JOB_TEMPLATE = {
    "job_configuration": {"command": FLOW_RUN_COMMAND, "stream_output": True},
    "variables": {"type": "object", "properties": {}, "additionalProperties": False},
}


async def ensure_work_pool(pool: str) -> None:
    """Pool `pool` (process type, locked job template) with queues critical (priority 1) and
    batch (priority 2)."""
    async with get_client() as client:
        try:
            await client.create_work_pool(
                WorkPoolCreate(name=pool, type="process", base_job_template=LOCKED_JOB_TEMPLATE)
            )
        except ObjectAlreadyExists:  # made by an older docpipe, or changed by hand: lock it
            await client.update_work_pool(
                pool, WorkPoolUpdate(base_job_template=LOCKED_JOB_TEMPLATE)
            )
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


def _deploy(
    pool: str, entrypoint: str, *, queue: str, description: str, interval: float | None = None
) -> tuple[str, str]:
    """Register one flow from the local source tree on the pool; returns the deployment's
    name and id.

    An interval of 0 (or none) means no schedule, and removes one deployed before: Prefect
    keeps the old schedule when given none unless told to clear it.
    """
    name = entrypoint.rsplit(":", 1)[1].replace("_", "-")
    source = flow.from_source(source=str(PROJECT_DIR), entrypoint=entrypoint)
    with temporary_settings(updates={PREFECT_DEPLOYMENTS_CLEAR_SCHEDULES_ON_EMPTY: True}):
        deployment_id = source.deploy(  # type: ignore[union-attr]
            name=name,
            work_pool_name=pool,
            work_queue_name=queue,
            description=description,
            interval=interval or None,
            schedules=None if interval else [],
            tags=["docpipe"],
            build=False,
            push=False,
            print_next_steps=False,
            ignore_warnings=True,
        )
    return name, str(deployment_id)


async def drop_missed_runs(deployment_id: str) -> int:
    """Delete a scheduled deployment's runs that fell due while no worker took them, but the
    newest; returns how many.

    Prefect schedules runs ahead, so a stack that was down for an hour comes back to sixty
    ingest runs due at once. Each would scan the same folder, and together they took every
    slot of the worker for the first seconds, ahead of the batches waiting. One run, the
    newest, does what they all would. Only the schedule's own runs go: a run someone started
    by hand still runs.
    """
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    due = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),  # type: ignore[list-item]
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        expected_start_time=FlowRunFilterExpectedStartTime(before_=datetime.now(UTC)),
    )
    dropped, page = 0, 200
    async with get_client() as client:
        while True:
            runs = await client.read_flow_runs(
                flow_run_filter=due, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=page
            )
            missed = [run for run in runs if run.auto_scheduled][1:]
            for run in missed:
                await client.delete_flow_run(run.id)
            dropped += len(missed)
            if len(runs) < page or not missed:
                return dropped


def deploy_flows(pool: str) -> dict[str, str]:
    """process-batch, and the two scheduled flows; returns the deployment ids by name."""
    settings = get_settings()
    return dict(
        [
            _deploy(
                pool,
                "flows/process_batch.py:process_batch",
                # The default; each run is submitted to its tenant tier's queue.
                queue="batch",
                description="Validate and OCR one batch's documents, then summarise it. "
                "Runs on queue 'critical' for VIP tenants and 'batch' for standard ones.",
            ),
            # The scheduled flows are light work that unblocks others: they go on the
            # queue that is served first.
            _deploy(
                pool,
                "flows/recover_batches.py:recover_batches",
                queue="critical",
                description="Submit batches Prefect never received; resubmit ones whose run died. "
                "The API also runs this pass, every DOCPIPE_RECOVERY_INTERVAL_SECONDS.",
                # Every 15 minutes by default: the API's pass is the frequent one, and this
                # covers the time no API runs.
                interval=settings.recovery_schedule_seconds,
            ),
            _deploy(
                pool,
                "flows/ingest_folder.py:ingest_folder",
                queue="critical",
                description="Turn settled files in the inbox (one folder per tenant) into batches.",
                interval=settings.ingest_interval_seconds,
            ),
        ]
    )


def main() -> None:
    pool = get_settings().work_pool
    asyncio.run(ensure_work_pool(pool))
    ids = deploy_flows(pool)
    print(f"work pool {pool!r} ready; deployments: {', '.join(ids.values())}")
    for name, deployment_id in ids.items():  # only scheduled ones have runs to drop
        if dropped := asyncio.run(drop_missed_runs(deployment_id)):
            print(
                f"{name}: {dropped} scheduled runs that fell due while no worker ran were "
                "dropped; the newest one still runs"
            )


if __name__ == "__main__":
    main()
