"""The one door to Prefect: flow runs, their states, artifacts, log filtering and the pool.

Everything docpipe asks of Prefect's client goes through this module, so a Prefect
upgrade touches one place and the domain is tested with a stand-in for it (tests/unit).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from docpipe.config import get_settings
from docpipe.home import prefect_auth_string
from docpipe.models import Tier

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.futures import PrefectFuture
    from prefect.states import State

log = logging.getLogger(__name__)

PROCESS_BATCH_DEPLOYMENT = "process-batch/process-batch"
# A big batch's helper runs (docpipe/parts.py).
PROCESS_BATCH_PART_DEPLOYMENT = "process-batch-part/process-batch-part"
QUEUES = {Tier.VIP: "critical", Tier.STANDARD: "batch"}
# The queues docpipe's workers take runs from, in the order they are served.
QUEUE_PRIORITIES = {"critical": 1, "batch": 2}
# process-batch's own queue, which no docpipe worker takes from: a run started from the UI
# or Python waits here until docpipe hands its batch to the tier's queue, so it never
# starts, or waits, in the wrong place (docpipe.dispatch.adopt_flow_run).
INCOMING_QUEUE = "incoming"
QUEUE_DESCRIPTIONS = {
    "critical": "VIP tenants' batches, and docpipe's light scheduled flows: served first.",
    "batch": "Standard tenants' batches: served when no VIP work waits.",
    INCOMING_QUEUE: "Runs of process-batch started from the UI or Python arrive here; "
    "docpipe moves each batch to its tier's queue at once. No worker takes runs from here.",
    # Prefect makes it with every pool and will not delete it.
    "default": "Prefect's own queue of this pool, which cannot be removed. docpipe puts "
    "nothing here, and no docpipe worker takes runs from it.",
}
# Prefect's own client asks a busy server (503, 429) or a timed-out one again, after a
# pause; once, so that a hung Prefect holds an upload for about two request timeouts.
CLIENT_RETRIES = 1


def queue_for(tier: Tier) -> str:
    return QUEUES[tier]


def run_tags(tenant_id: str, tier: Tier) -> list[str]:
    """The tags a batch's flow run carries, so the UI filters runs by tenant and tier."""
    return [f"tenant:{tenant_id}", f"tier:{tier.value}"]


def run_name(batch_id: str, number: int) -> str:
    """batch-<id> for a batch's first flow run; batch-<id>-2, -3, ... for the ones after."""
    return f"batch-{batch_id}" if number <= 1 else f"batch-{batch_id}-{number}"


def part_tag(batch_id: str) -> str:
    """The tag of a batch's helper runs, by which they are found to be stopped or deleted."""
    return f"part-of:{batch_id}"


def progress_key(batch_id: str) -> str:
    """The key of a batch's progress artifact (X of Y documents)."""
    return f"batch-{batch_id}"


def summary_key(batch_id: str) -> str:
    """The key of a batch's summary table artifact."""
    return f"batch-{batch_id}-summary"


def is_labelled(tags: Iterable[str]) -> bool:
    """Whether a flow run carries docpipe's tags (it was created or adopted by docpipe)."""
    return any(tag.startswith("tenant:") for tag in tags)


@dataclass(frozen=True)
class RunInfo:
    """What docpipe reads of a flow run it did not create."""

    batch_id: str | None
    tags: list[str]
    state: str


@contextmanager
def _client_settings_context() -> Iterator[None]:
    """Talk to this installation's Prefect server, and give up quickly if it is down."""
    import prefect.context

    current = prefect.context.get_settings_context()
    with prefect.context.SettingsContext(
        profile=current.profile, settings=_client_settings(current.settings)
    ):
        yield


# Derived client settings, by the settings they came from: deriving them reads every
# environment variable and profile again, which a recovery pass did twice.
_derived: dict[int, tuple[Any, Any, dict[Any, Any]]] = {}


def _client_settings(base: Any) -> Any:
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_REQUEST_TIMEOUT,
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
    )

    settings = get_settings()
    updates = {
        PREFECT_API_URL: settings.prefect_api_url,
        PREFECT_API_AUTH_STRING: prefect_auth_string(settings),
        PREFECT_API_REQUEST_TIMEOUT: settings.submit_timeout_seconds,
        PREFECT_CLIENT_MAX_RETRIES: CLIENT_RETRIES,
    }
    cached = _derived.get(id(base))
    if cached is None or cached[0] is not base or cached[2] != updates:
        if len(_derived) > 8:
            _derived.clear()
        cached = _derived[id(base)] = (base, base.copy_with_update(updates=updates), updates)
    return cached[1]


@contextmanager
def _client() -> Iterator[SyncPrefectClient]:
    from prefect.client.orchestration import get_client

    with _client_settings_context(), get_client(sync_client=True) as client:
        yield client


def create_flow_run(*, batch_id: str, tenant_id: str, tier: Tier, number: int) -> str | None:
    """Create the batch's `number`th flow run on its tier's queue; its id, or None if Prefect
    is unreachable (the caller keeps the batch waiting)."""
    from prefect.deployments import run_deployment

    try:
        with _client_settings_context():
            flow_run = run_deployment(
                PROCESS_BATCH_DEPLOYMENT,
                parameters={"batch_id": batch_id},
                flow_run_name=run_name(batch_id, number),
                work_queue_name=queue_for(tier),
                # The same submission asked twice (a lost answer) makes one flow run.
                idempotency_key=f"batch-{batch_id}-{number}",
                tags=run_tags(tenant_id, tier),
                timeout=0,
                as_subflow=False,
            )
    except Exception as e:  # any failure to reach Prefect leaves the batch waiting, not lost
        log.warning("batch %s accepted but not submitted to Prefect: %s", batch_id, e)
        return None
    return str(flow_run.id)  # type: ignore[union-attr]  # the sync call returns a FlowRun


def start_helper_runs(
    *, batch_id: str, tenant_id: str, tier: Tier, number: int, count: int
) -> list[str]:
    """From inside a batch's flow run: `count` helper runs on the batch's tier queue, shown
    as its subflows; their ids (fewer if Prefect refused some: the batch goes on without)."""
    from prefect.deployments import run_deployment

    started = []
    for part in range(1, count + 1):
        name = f"{run_name(batch_id, number)}-part-{part}"
        try:
            run = run_deployment(
                PROCESS_BATCH_PART_DEPLOYMENT,
                parameters={"batch_id": batch_id},
                flow_run_name=name,
                work_queue_name=queue_for(tier),
                idempotency_key=name,
                tags=[*run_tags(tenant_id, tier), part_tag(batch_id)],
                timeout=0,
                as_subflow=True,
            )
        except Exception as e:  # the batch's own run does the work the helper would have
            log.warning("batch %s: helper run %s not started: %s", batch_id, name, e)
            continue
        started.append(str(run.id))  # type: ignore[union-attr]
    return started


def stop_helper_runs(batch_id: str, reason: str, *, running: bool) -> int:
    """Withdraw a batch's helper runs that have not started, and cancel the ones running
    if `running`; how many it stopped."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    wanted = [StateType.SCHEDULED, StateType.PENDING, *([StateType.RUNNING] if running else [])]
    try:
        with _client() as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[part_tag(batch_id)]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=wanted)),
                ),
                limit=200,
            )
    except Exception as e:
        log.warning("could not read batch %s's helper runs: %s", batch_id, e)
        return 0
    return sum(stop_flow_run(str(run.id), reason) for run in runs)


def stop_flow_run(flow_run_id: str, reason: str) -> bool:
    """End a flow run no worker has taken yet with the reason, or ask Prefect to cancel it
    (the worker stops it, starting or running); False if Prefect is unreachable."""
    return withdraw_flow_run(flow_run_id, reason) or cancel_flow_run(flow_run_id)


def cancel_flow_run(flow_run_id: str) -> bool:
    """Ask Prefect to cancel a flow run (the worker kills it); False if Prefect is unreachable."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import State

    try:
        with _client() as client:
            client.set_flow_run_state(flow_run_id, State(type=StateType.CANCELLING))
    except Exception as e:
        log.warning("could not cancel flow run %s: %s", flow_run_id, e)
        return False
    return True


def flow_run_states(ids: Sequence[str]) -> dict[str, tuple[str, datetime | None]] | None:
    """Each flow run's state type and start time; None if Prefect does not answer."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    try:
        with _client() as client:
            if not ids:
                if (error := client.api_healthcheck()) is not None:
                    raise error
                return {}
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids)))  # type: ignore[arg-type]
            )
    except Exception as e:
        log.warning("Prefect did not answer; recovery waits: %s", e)
        return None
    return {str(r.id): (r.state.type.value if r.state else "PENDING", r.start_time) for r in runs}


def mark_crashed(flow_run_id: str, reason: str) -> None:
    """Tell Prefect a flow run is dead, so the UI stops showing it Running."""
    from prefect.states import Crashed

    try:
        with _client() as client:
            client.set_flow_run_state(flow_run_id, Crashed(message=reason), force=True)
    except Exception as e:
        log.warning("could not mark flow run %s crashed: %s", flow_run_id, e)


def read_flow_run(flow_run_id: str) -> RunInfo | None:
    """A process-batch flow run's batch, tags and state; None for another flow's run, or if
    Prefect does not answer."""
    try:
        with _client() as client:
            run = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
            if run.deployment_id is None:
                return None
            deployment = client.read_deployment(run.deployment_id)
    except Exception as e:
        log.warning("could not read flow run %s: %s", flow_run_id, e)
        return None
    if deployment.name != PROCESS_BATCH_DEPLOYMENT.split("/")[1]:
        return None
    batch_id = run.parameters.get("batch_id")
    return RunInfo(
        batch_id=str(batch_id) if batch_id is not None else None,
        tags=list(run.tags),
        state=run.state.type.value if run.state else "PENDING",
    )


def label_flow_run(flow_run_id: str, *, name: str | None, tags: Iterable[str]) -> None:
    """Give a flow run docpipe's name and these `kind:value` tags, each replacing a tag of
    its kind; the run's other tags are kept."""
    wanted = list(tags)
    kinds = tuple(tag.split(":", 1)[0] + ":" for tag in wanted)
    try:
        with _client() as client:
            run = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
            kept = [t for t in run.tags if not t.startswith(kinds)]
            client.update_flow_run(flow_run_id, name=name, tags=kept + wanted)  # type: ignore[arg-type]
    except Exception as e:  # a run without its label still runs
        log.warning("could not label flow run %s: %s", flow_run_id, e)


def withdraw_flow_run(flow_run_id: str, reason: str) -> bool:
    """End a flow run that has not started, with the reason as its state message; whether
    it was withdrawn (not if it started meanwhile, or another caller withdrew it first)."""
    from prefect.client.schemas.actions import LogCreate
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    try:
        with _client() as client:
            run = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
            if run.state is None or run.state.type != StateType.SCHEDULED:
                return False
            result: Any = client.set_flow_run_state(flow_run_id, Cancelled(message=reason))
            if result.status.value != "ACCEPT":
                return False
            # The run never starts, so nothing else writes in its Logs tab: say why there.
            client.create_logs(
                [
                    LogCreate(
                        name="docpipe",
                        level=logging.WARNING,
                        message=reason,
                        timestamp=datetime.now(UTC),
                        flow_run_id=run.id,
                    )
                ]
            )
    except Exception as e:
        log.warning("could not withdraw flow run %s: %s", flow_run_id, e)
        return False
    return True


def waiting_runs(queue: str) -> list[str]:
    """The ids of the Scheduled runs on one of the pool's queues (oldest first, at most 200)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkQueueFilter,
        WorkQueueFilterName,
    )
    from prefect.client.schemas.objects import StateType

    try:
        with _client() as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    )
                ),
                work_queue_filter=WorkQueueFilter(name=WorkQueueFilterName(any_=[queue])),
                limit=200,
            )
    except Exception as e:
        log.warning("could not read the runs waiting on queue %s: %s", queue, e)
        return []
    return [str(r.id) for r in runs]


@dataclass(frozen=True)
class Deleted:
    """What a retention pass deleted in Prefect."""

    flow_runs: int = 0
    artifacts: int = 0

    def __add__(self, other: Deleted) -> Deleted:
        return Deleted(self.flow_runs + other.flow_runs, self.artifacts + other.artifacts)


# Flow runs in these states have ended: only such runs are ever deleted.
ENDED_STATES = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
# Runs read (and deleted) a request.
DELETE_PAGE = 200


def delete_batch_runs(submissions: dict[str, int]) -> Deleted | None:
    """Delete the ended flow runs of these batches (by id, with how many runs each was
    submitted: batch-<id>, batch-<id>-2, ...) and every artifact keyed to them; None if
    Prefect does not answer."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilterName,
        FlowRunFilterTags,
    )

    names = [run_name(b, n) for b, count in submissions.items() for n in range(1, count + 1)]
    keys = [key for b in submissions for key in (progress_key(b), summary_key(b))]
    try:
        with _client() as client:
            artifacts = _delete_artifacts(client, ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
            deleted = Deleted(artifacts=artifacts)
            while names:
                page = _delete_runs(client, DELETE_PAGE, name=FlowRunFilterName(any_=names))
                deleted += page
                if page.flow_runs < DELETE_PAGE:
                    break
            for batch_id in submissions:  # a shared batch's helper runs
                while True:
                    tags = FlowRunFilterTags(all_=[part_tag(batch_id)])
                    page = _delete_runs(client, DELETE_PAGE, tags=tags)
                    deleted += page
                    if page.flow_runs < DELETE_PAGE:
                        break
    except Exception as e:
        log.warning("could not delete the flow runs of %d batches: %s", len(submissions), e)
        return None
    return deleted


def delete_ended_runs(*, ended_before: datetime, keep: Iterable[str], limit: int) -> Deleted | None:
    """Delete at most `limit` flow runs of docpipe's work pool that ended before
    `ended_before`, but those in `keep`, with their artifacts; None if Prefect does not answer.

    Only the pool's runs: a Prefect server shared with other work keeps the rest.
    """
    from prefect.client.schemas.filters import (
        FlowRunFilterEndTime,
        FlowRunFilterId,
        WorkPoolFilter,
        WorkPoolFilterName,
    )

    criteria: dict[str, Any] = {"end_time": FlowRunFilterEndTime(before_=ended_before)}
    if kept := list(keep):
        criteria["id"] = FlowRunFilterId(not_any_=kept)  # type: ignore[arg-type]
    pool = WorkPoolFilter(name=WorkPoolFilterName(any_=[get_settings().work_pool]))
    try:
        with _client() as client:
            return _delete_runs(client, limit, work_pool_filter=pool, **criteria)
    except Exception as e:
        log.warning("could not delete ended flow runs: %s", e)
        return None


def _delete_runs(
    client: SyncPrefectClient, limit: int, work_pool_filter: Any = None, **criteria: Any
) -> Deleted:
    """Delete up to `limit` ended runs matching the FlowRunFilter criteria: each one's
    artifacts first, so a pass cut short leaves none without its run. The server deletes a
    run's task runs with it, and its logs just after."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    ended = FlowRunFilterState(
        type=FlowRunFilterStateType(any_=[StateType(s) for s in ENDED_STATES])
    )
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(state=ended, **criteria),
        work_pool_filter=work_pool_filter,
        limit=limit,
    )
    if not runs:
        return Deleted()
    ids = [run.id for run in runs]
    artifacts = _delete_artifacts(
        client, ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
    )
    for flow_run_id in ids:
        with contextlib.suppress(ObjectNotFound):  # another pass was quicker
            client.delete_flow_run(flow_run_id)
    return Deleted(flow_runs=len(ids), artifacts=artifacts)


def _delete_artifacts(client: SyncPrefectClient, artifact_filter: Any) -> int:
    """Delete every artifact (every version of a key) the filter matches; how many."""
    from prefect.exceptions import ObjectNotFound

    deleted = 0
    while artifacts := client.read_artifacts(artifact_filter=artifact_filter, limit=DELETE_PAGE):
        for artifact in artifacts:
            with contextlib.suppress(ObjectNotFound):
                client.delete_artifact(artifact.id)
        deleted += len(artifacts)
        if len(artifacts) < DELETE_PAGE:
            break
    return deleted


def is_reachable() -> bool:
    """Whether the Prefect server answers its health check (which needs no secret)."""
    try:
        url = f"{get_settings().prefect_api_url}/health"
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# Inside a flow run.


class ProgressArtifact:
    """The batch's progress artifact (key batch-<id>): the Prefect UI shows X of Y.

    Sent at most every MIN_INTERVAL seconds (and at the end): each update is a write for
    the server, and a person watching sees no difference.
    """

    MIN_INTERVAL = 2.0

    def __init__(self, batch_id: str, total: int, done: int) -> None:
        self.batch_id, self.total, self.done = batch_id, total, done

    def __enter__(self) -> ProgressArtifact:
        from prefect.artifacts import create_progress_artifact
        from prefect.client.orchestration import get_client

        self.client = get_client(sync_client=True)
        self.client.__enter__()
        self.artifact_id = create_progress_artifact(
            progress=self._percent(), key=progress_key(self.batch_id), description=self._text()
        )
        self.sent_at = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.__exit__(None, None, None)

    def advance(self) -> None:
        self.set(self.done + 1)

    def set(self, done: int) -> None:
        """`done` documents of the batch are finished (counted by whoever did them)."""
        if done == self.done:
            return
        self.done = done
        if self.done >= self.total or time.monotonic() - self.sent_at >= self.MIN_INTERVAL:
            self._send()

    def _send(self) -> None:
        from prefect.client.schemas.actions import ArtifactUpdate

        try:
            self.client.update_artifact(
                self.artifact_id,  # type: ignore[arg-type]
                ArtifactUpdate(data=self._percent(), description=self._text()),
            )
        except Exception as e:  # progress is for people to watch: the batch goes on
            log.warning("could not update batch %s's progress: %s", self.batch_id, e)
        self.sent_at = time.monotonic()

    def _percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    def _text(self) -> str:
        return f"{self.done} of {self.total} documents finished"


def finished_state(result: dict[str, Any], *, outcome: str) -> State:
    """The run's final state: Completed, named "Completed with failures" when a document
    failed, with "8 of 10 succeeded" as its message and an outcome:<...> tag on the run,
    so the run list tells them apart at a glance."""
    from prefect import runtime
    from prefect.states import Completed

    flow_run_id = str(runtime.flow_run.id)
    label_flow_run(flow_run_id, name=None, tags=[f"outcome:{outcome}"])
    name = "Completed" if outcome == "all-succeeded" else "Completed with failures"
    return Completed(name=name, message=result["headline"], data=result)


def not_run(message: str) -> State:
    """The final state of a run that refused to do anything: "Not run", with the reason.

    Completed in type: a flow run that ends Cancelled by its own hand makes Prefect's engine
    log an error and a traceback, for what is a plain, expected answer.
    """
    from prefect.states import Completed

    return Completed(name="Not run", message=message)


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """A table artifact on the current run (the batch's summary in the UI)."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact(key=key, table=rows, description=description)


def as_finished(
    futures: Iterable[PrefectFuture[Any]], keys: Sequence[str]
) -> Iterator[tuple[str, State]]:
    """(key, final state) of each task run as it finishes; `keys` are in the futures' order."""
    from prefect.futures import as_completed

    futures = list(futures)
    key_of = dict(zip((f.task_run_id for f in futures), keys, strict=True))
    for future in as_completed(futures):
        future.wait()  # the task's own final state, not the API's view, which may lag
        yield key_of[future.task_run_id], future.state


def failure_of(state: State) -> object:
    """The exception a failed task run raised, if Prefect still has it; else None."""
    try:
        return state.result(raise_on_failure=False)
    except Exception:  # a result that cannot be read back says nothing more
        return None


class _QuietCompletions(logging.Filter):
    """Leaves out each task run's "Finished in state Completed()" line: its state says so,
    and every line costs the run, the worker and the server. Failures still log; a task
    run a cancel ended logs as information (Prefect logs it as an error), not a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        said = record.msg if isinstance(record.msg, str) else ""
        if said.startswith("Finished in state Cancelled"):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return not (
            record.levelno == logging.INFO and said.startswith("Finished in state Completed")
        )


_QUIET = _QuietCompletions()


def quiet_task_completions() -> None:
    logging.getLogger("prefect.task_runs").addFilter(_QUIET)


# The work pool and its deployments' runs (docpipe deploy).


async def ensure_work_pool(pool: str, job_template: dict[str, Any]) -> None:
    """Pool `pool` (process type, this job template) with queues critical (priority 1) and
    batch (priority 2); an existing pool gets the template again."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists

    async with get_client() as client:
        try:
            await client.create_work_pool(
                WorkPoolCreate(name=pool, type="process", base_job_template=job_template)
            )
        except ObjectAlreadyExists:  # made by an older docpipe, or changed by hand
            await client.update_work_pool(pool, WorkPoolUpdate(base_job_template=job_template))
        existing = {q.name: q for q in await client.read_work_queues(work_pool_name=pool)}
        # The pool's own "default" queue goes last so it never outranks ours.
        priorities = {**QUEUE_PRIORITIES, INCOMING_QUEUE: 3, "default": 4}
        for name, priority in priorities.items():
            description = QUEUE_DESCRIPTIONS[name]
            if name in existing:
                await client.update_work_queue(
                    existing[name].id, priority=priority, description=description
                )
            elif name != "default":
                await client.create_work_queue(
                    name=name, work_pool_name=pool, priority=priority, description=description
                )


def drop_pool_missed_runs(pool: str) -> int:
    """drop_missed_runs for every deployment of the pool, on this installation's server;
    how many runs were dropped."""
    import asyncio

    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    with _client() as client:
        deployments = client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))
        )
    with _client_settings_context():
        return sum(asyncio.run(drop_missed_runs(str(d.id))) for d in deployments)


async def drop_missed_runs(deployment_id: str) -> int:
    """Delete a scheduled deployment's runs that fell due while no worker took them, but the
    newest; returns how many.

    A stack that was down for an hour comes back to sixty scans due at once, each doing
    what the newest does, and together they took every worker slot ahead of the batches.
    Runs someone started by hand are kept.
    """
    from prefect.client.orchestration import get_client
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
