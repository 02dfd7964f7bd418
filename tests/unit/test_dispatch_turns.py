"""Whose batch goes next: round-robin across a tier's tenants, and a slot kept for VIP."""

from __future__ import annotations

import io
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from docpipe import batches
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.models import Batch, BatchStatus, utcnow
from docpipe.tenants import get_tenant
from docpipe.uploads import stage_files
from tests import documents
from tests.helpers import make_tenant


def waiting_batch(tenant_id: str) -> str:
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    data = documents.document("X", "png")
    with stage_files([("a.png", io.BytesIO(data))], get_settings()) as staged:
        return batches.create_batch(tenant, staged).batch_id


def submitted(batch_id: str) -> None:
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        batch.flow_run_id = str(uuid.uuid4())  # a run Prefect never heard of


def finished(batch_id: str, started: datetime) -> None:
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        batch.status, batch.started_at = BatchStatus.COMPLETED, started


def test_a_tier_is_served_round_robin_across_tenants(home: Path) -> None:
    a_id, _ = make_tenant()
    b_id, _ = make_tenant()
    a = [waiting_batch(a_id) for _ in range(4)]
    b = [waiting_batch(b_id) for _ in range(2)]
    order = []
    started = utcnow() - timedelta(hours=1)
    for turn in range(6):
        chosen = batches.next_to_dispatch(slots=1, vip_reserved=0)
        assert chosen is not None
        order.append(chosen)
        submitted(chosen)
        assert batches.next_to_dispatch(slots=1, vip_reserved=0) is None  # the slot is taken
        finished(chosen, started + timedelta(minutes=turn))
    assert order == [a[0], b[0], a[1], b[1], a[2], a[3]]
    assert batches.next_to_dispatch(slots=1, vip_reserved=0) is None  # nothing waits


def test_standard_work_leaves_a_slot_for_vip(home: Path) -> None:
    standard_id, _ = make_tenant()
    vip_id, _ = make_tenant("vip")
    first, second = waiting_batch(standard_id), waiting_batch(standard_id)
    assert batches.next_to_dispatch(slots=2, vip_reserved=1) == first
    submitted(first)
    assert batches.next_to_dispatch(slots=2, vip_reserved=1) is None  # second waits
    vip = waiting_batch(vip_id)
    assert batches.next_to_dispatch(slots=2, vip_reserved=1) == vip
    submitted(vip)
    assert batches.next_to_dispatch(slots=2, vip_reserved=1) is None
    finished(first, utcnow())  # the standard slot is free again: the second's turn
    assert batches.next_to_dispatch(slots=2, vip_reserved=1) == second
