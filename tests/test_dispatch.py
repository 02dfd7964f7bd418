"""Whose batch goes next: round-robin across a tier's tenants, and a slot kept for VIP."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from docpipe import batches
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.models import Batch, BatchStatus, utcnow
from docpipe.tenants import get_tenant
from docpipe.uploads import stage_files
from tests import documents
from tests.conftest import make_tenant, post_batch, started_stack, wait_for_batch


@pytest.fixture
def clean_queue(
    docpipe_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A database of this test's own: no other test's batches in the queue, and none of
    this test's made-up flow runs left in the session's."""
    monkeypatch.setenv("DOCPIPE_DATABASE_URL", f"sqlite:///{tmp_path / 'queue.db'}")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


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


def test_a_tier_is_served_round_robin_across_tenants(clean_queue: None) -> None:
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


def test_standard_work_leaves_a_slot_for_vip(clean_queue: None) -> None:
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
    assert second  # still waiting its turn


@pytest.fixture(scope="module")
def two_slot_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A stack whose worker runs two flow runs at once; standard work may take one."""
    with started_stack(tmp_path_factory.mktemp("dispatch"), worker_limit=2) as stack:
        yield stack


def tenant_on(stack: Any, tier: str = "standard") -> tuple[str, str]:
    import json

    from tests.conftest import cli

    tenant_id = f"{tier}-{datetime.now().strftime('%H%M%S%f')}"
    created = json.loads(cli(stack, "tenant", "create", tenant_id, "--tier", tier, "--json"))
    return tenant_id, created["apiKey"]


def upload(api: httpx.Client, tenant: tuple[str, str], files: list[tuple[str, bytes]]) -> str:
    return post_batch(api, *tenant, files)


def completed_at(api: httpx.Client, tenant: tuple[str, str], batch_id: str) -> datetime:
    batch = wait_for_batch(api, tenant[1], batch_id, timeout=600)
    assert batch["status"] == "Completed"
    return datetime.fromisoformat(batch["completedAt"])


@pytest.mark.e2e
def test_one_tenants_queue_does_not_hold_back_anothers_batch(two_slot_stack: Any) -> None:
    """Tenant A queues four batches, then tenant B one: B's ends before A's third."""
    page = [("a.png", documents.document(documents.phrase(1), "png"))]
    a, b = tenant_on(two_slot_stack), tenant_on(two_slot_stack)
    with httpx.Client(base_url=two_slot_stack.settings.api_url, timeout=60) as api:
        a_batches = [upload(api, a, page) for _ in range(4)]
        b_batch = upload(api, b, page)
        assert completed_at(api, b, b_batch) < completed_at(api, a, a_batches[2])


@pytest.mark.e2e
def test_a_vip_batch_does_not_wait_for_standard_work_holding_the_slots(
    two_slot_stack: Any,
) -> None:
    """Standard batches of slow documents, then a one-page VIP batch: the VIP batch ends
    before any of them, instead of waiting for one to give up its slot."""
    slow = [
        (f"{i}.pdf", documents.multipage_pdf([documents.phrase(p) for p in range(8)]))
        for i in range(2)
    ]
    standard, vip = tenant_on(two_slot_stack), tenant_on(two_slot_stack, "vip")
    with httpx.Client(base_url=two_slot_stack.settings.api_url, timeout=60) as api:
        standard_batches = [upload(api, standard, slow) for _ in range(3)]
        vip_batch = upload(api, vip, [("v.png", documents.document(documents.phrase(2), "png"))])
        vip_done = completed_at(api, vip, vip_batch)
        assert all(vip_done < completed_at(api, standard, b) for b in standard_batches)
