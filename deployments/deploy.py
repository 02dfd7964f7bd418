"""Create (idempotently) the work pool, its priority queues and the deployments."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from prefect._internal.versioning import VersionType
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_DEPLOYMENTS_CLEAR_SCHEDULES_ON_EMPTY, temporary_settings

from docpipe import orchestrator
from docpipe.config import Settings, get_settings

# Flow runs start through docpipe's warm starter (docpipe/runtime/warm.py): forked from a
# process that has Prefect and the flows imported already.
FLOW_RUN_COMMAND = "python -m docpipe.runtime.warm"
# The pool's job template takes no variables: nobody who may create a flow run can change
# the command it runs, its environment or its directory (job_variables are refused).
# `env` is left out on purpose: a dict there is merged with a run's `env` variable.
LOCKED_JOB_TEMPLATE = {
    "job_configuration": {"command": FLOW_RUN_COMMAND, "stream_output": True},
    "variables": {"type": "object", "properties": {}, "additionalProperties": False},
}
TAGS = ["docpipe"]


@dataclass(frozen=True)
class Deployment:
    """One flow deployed on the pool; `schedule` names the setting of its interval (s).

    The entrypoint is a module path (`flows.x.y`), never a file: a flow run imports it
    from wherever its worker's Python finds docpipe (a checkout at any path, or the
    installed package), so nothing deployed names a folder of the deploying machine.
    """

    entrypoint: str
    queue: str
    description: str
    schedule: str | None = None

    @property
    def name(self) -> str:
        return self.entrypoint.rsplit(".", 1)[1].replace("_", "-")

    def interval(self, settings: Settings) -> float | None:
        return float(getattr(settings, self.schedule)) if self.schedule else None


# deployments/prefect.yaml describes the same ones (tests/unit/test_deployments.py).
DEPLOYMENTS = (
    Deployment(
        "flows.process_batch.process_batch",
        # docpipe submits each run to its tenant tier's queue; one started from the UI or
        # Python arrives on this one, which no worker takes from, and is moved from there.
        queue=orchestrator.INCOMING_QUEUE,
        description="Validate and OCR one batch's documents, then summarise it. "
        "Runs on queue 'critical' for VIP tenants and 'batch' for standard ones.",
    ),
    # A big batch's helper runs: its own run starts them on the batch's tier queue.
    Deployment(
        "flows.process_batch_part.process_batch_part",
        queue="batch",
        description="Help a big batch's own run: take its documents until none is left. "
        "Started by process-batch for batches of more than DOCPIPE_SPLIT_PAGES pages.",
    ),
    # The scheduled flows are light work that unblocks others: they go on the queue that
    # is served first.
    Deployment(
        "flows.recover_batches.recover_batches",
        queue="critical",
        description="Submit batches Prefect never received; resubmit ones whose run died. "
        "The API also runs this pass, every DOCPIPE_RECOVERY_INTERVAL_SECONDS.",
        schedule="recovery_schedule_seconds",
    ),
    Deployment(
        "flows.ingest_folder.ingest_folder",
        queue="critical",
        description="Turn settled files in the inbox (one folder per tenant) into batches.",
        schedule="ingest_interval_seconds",
    ),
    # Scheduled even while retention is off (the default): its runs say so, and turning it
    # on takes only the setting where the worker runs, not another deploy.
    Deployment(
        "flows.expire_history.expire_history",
        queue="critical",
        description="Delete batches finished more than DOCPIPE_RETENTION_DAYS ago, with "
        "their files, runs and artifacts, and docpipe's runs older than "
        "DOCPIPE_PREFECT_RETENTION_DAYS.",
        schedule="retention_schedule_seconds",
    ),
)


def _deploy(pool: str, deployment: Deployment, interval: float | None) -> str:
    """Register one flow on the pool, by module path; returns its id.

    No storage, pull steps or path: a deployment made before with them loses them. The
    version is Prefect's simple one: inferring it from git would store the checkout's
    remote. An interval of 0 (or none) means no schedule, and removes one deployed before:
    Prefect keeps the old schedule when given none unless told to clear it.
    """
    runner = RunnerDeployment.from_flow(
        load_flow_from_entrypoint(deployment.entrypoint),
        name=deployment.name,
        interval=interval or None,
        description=deployment.description,
        tags=TAGS,
        version_type=VersionType.SIMPLE,
        work_queue_name=deployment.queue,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    with temporary_settings(updates={PREFECT_DEPLOYMENTS_CLEAR_SCHEDULES_ON_EMPTY: True}):
        deployment_id = runner.apply(work_pool_name=pool, schedules=None if interval else [])
    return str(deployment_id)


def deploy_flows(pool: str) -> dict[str, str]:
    """Every deployment in DEPLOYMENTS; returns their ids by name."""
    settings = get_settings()
    return {d.name: _deploy(pool, d, d.interval(settings)) for d in DEPLOYMENTS}


def main() -> None:
    settings = get_settings()
    if not orchestrator.is_reachable():
        sys.exit(
            f"error: no Prefect server answers at {settings.prefect_api_url}: start it (make up),"
            " or give DOCPIPE_PREFECT_PORT or DOCPIPE_PREFECT_API_URL as make up has them"
        )
    pool = settings.work_pool
    asyncio.run(orchestrator.ensure_work_pool(pool, LOCKED_JOB_TEMPLATE))
    ids = deploy_flows(pool)
    print(f"work pool {pool!r} ready; deployments: {', '.join(ids.values())}")
    for name, deployment_id in ids.items():  # only scheduled ones have runs to drop
        if dropped := asyncio.run(orchestrator.drop_missed_runs(deployment_id)):
            print(
                f"{name}: {dropped} scheduled runs that fell due while no worker ran were "
                "dropped; the newest one still runs"
            )


if __name__ == "__main__":
    main()
