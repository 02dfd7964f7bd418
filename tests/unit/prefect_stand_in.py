"""A stand-in for docpipe.orchestrator, the door to Prefect, for tests without a server."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime

from docpipe import orchestrator
from docpipe.models import Tier


@dataclass
class FlowRun:
    batch_id: str
    tenant_id: str
    tier: Tier | None
    number: int
    state: str = "SCHEDULED"
    started: datetime | None = None
    queue: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    message: str = ""
    ended: datetime | None = None


@dataclass
class PrefectStandIn:
    """Answers for docpipe.orchestrator as a Prefect server would, and records each call."""

    reachable: bool = True
    flow_runs: dict[str, FlowRun] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    crashed: list[tuple[str, str]] = field(default_factory=list)

    def create_flow_run(
        self, *, batch_id: str, tenant_id: str, tier: Tier, number: int
    ) -> str | None:
        if not self.reachable:
            return None
        flow_run_id = str(uuid.uuid4())
        self.flow_runs[flow_run_id] = FlowRun(
            batch_id,
            tenant_id,
            tier,
            number,
            queue=orchestrator.queue_for(tier),
            name=orchestrator.run_name(batch_id, number),
            tags=orchestrator.run_tags(tenant_id, tier),
        )
        return flow_run_id

    def started_outside(self, batch_id: str, queue: str = orchestrator.INCOMING_QUEUE) -> str:
        """A run as the Prefect UI makes one: a random name, the default queue, no tags."""
        flow_run_id = str(uuid.uuid4())
        self.flow_runs[flow_run_id] = FlowRun(batch_id, "", None, 0, queue=queue, name="hairy-dog")
        return flow_run_id

    def read_flow_run(self, flow_run_id: str) -> orchestrator.RunInfo | None:
        run = self.flow_runs.get(flow_run_id)
        if run is None or not self.reachable:
            return None
        return orchestrator.RunInfo(run.batch_id, run.tags, run.state)

    def label_flow_run(self, flow_run_id: str, *, name: str | None, tags: list[str]) -> None:
        run = self.flow_runs[flow_run_id]
        kinds = tuple(t.split(":", 1)[0] + ":" for t in tags)
        run.tags = [t for t in run.tags if not t.startswith(kinds)] + list(tags)
        run.name = name or run.name

    def withdraw_flow_run(self, flow_run_id: str, reason: str) -> bool:
        run = self.flow_runs[flow_run_id]
        if run.state != "SCHEDULED":  # Prefect refuses to cancel what started or ended
            return False
        run.state, run.message = "CANCELLED", reason
        return True

    def waiting_runs(self, queue: str) -> list[str]:
        return [i for i, r in self.flow_runs.items() if r.queue == queue and r.state == "SCHEDULED"]

    def cancel_flow_run(self, flow_run_id: str) -> bool:
        self.cancelled.append(flow_run_id)
        return self.reachable

    def flow_run_states(self, ids: list[str]) -> dict[str, tuple[str, datetime | None]] | None:
        if not self.reachable:
            return None
        return {
            i: (self.flow_runs[i].state, self.flow_runs[i].started)
            for i in ids
            if i in self.flow_runs
        }

    def mark_crashed(self, flow_run_id: str, reason: str) -> None:
        self.crashed.append((flow_run_id, reason))
        self.flow_runs[flow_run_id].state = "CRASHED"

    def is_reachable(self) -> bool:
        return self.reachable

    def delete_batch_runs(self, submissions: dict[str, int]) -> orchestrator.Deleted | None:
        if not self.reachable:
            return None
        names = {orchestrator.run_name(b, n) for b, c in submissions.items() for n in range(c + 1)}
        return self._delete(lambda run: run.name in names, limit=len(self.flow_runs))

    def delete_ended_runs(
        self, *, ended_before: datetime, keep: list[str], limit: int
    ) -> orchestrator.Deleted | None:
        if not self.reachable:
            return None
        return self._delete(
            lambda run: run.ended is not None and run.ended < ended_before,
            limit=limit,
            keep=set(keep),
        )

    def _delete(
        self, matches: Callable[[FlowRun], bool], *, limit: int, keep: Collection[str] = ()
    ) -> orchestrator.Deleted:
        """Delete ended runs that match, as the Prefect door does (no artifacts here)."""
        doomed = [
            i
            for i, run in self.flow_runs.items()
            if run.state in orchestrator.ENDED_STATES and matches(run) and i not in keep
        ][:limit]
        for flow_run_id in doomed:
            del self.flow_runs[flow_run_id]
        return orchestrator.Deleted(flow_runs=len(doomed))

    def runs_of(self, batch_id: str) -> list[FlowRun]:
        return [run for run in self.flow_runs.values() if run.batch_id == batch_id]
