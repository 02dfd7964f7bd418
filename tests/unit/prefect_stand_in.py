"""A stand-in for docpipe.orchestrator, the door to Prefect, for tests without a server."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from docpipe.models import Tier


@dataclass
class FlowRun:
    batch_id: str
    tenant_id: str
    tier: Tier
    number: int
    state: str = "SCHEDULED"
    started: datetime | None = None


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
        self.flow_runs[flow_run_id] = FlowRun(batch_id, tenant_id, tier, number)
        return flow_run_id

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

    def runs_of(self, batch_id: str) -> list[FlowRun]:
        return [run for run in self.flow_runs.values() if run.batch_id == batch_id]
