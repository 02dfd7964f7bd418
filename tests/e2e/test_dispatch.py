"""Turns against the real stack: one tenant's queue never holds back another's batch, and VIP
work never waits for standard work holding the slots."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests import documents
from tests.helpers import post_batch, started_stack, wait_for_batch

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_slot_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A stack whose worker runs two flow runs at once; standard work may take one."""
    with started_stack(tmp_path_factory.mktemp("dispatch"), worker_limit=2) as stack:
        yield stack


def tenant_on(stack: Any, tier: str = "standard") -> tuple[str, str]:
    import json

    from tests.helpers import cli

    tenant_id = f"{tier}-{datetime.now().strftime('%H%M%S%f')}"
    created = json.loads(cli(stack, "tenant", "create", tenant_id, "--tier", tier, "--json"))
    return tenant_id, created["apiKey"]


def upload(api: httpx.Client, tenant: tuple[str, str], files: list[tuple[str, bytes]]) -> str:
    return post_batch(api, *tenant, files)


def completed_at(api: httpx.Client, tenant: tuple[str, str], batch_id: str) -> datetime:
    batch = wait_for_batch(api, tenant[1], batch_id, timeout=600)
    assert batch["status"] == "Completed"
    return datetime.fromisoformat(batch["completedAt"])


def test_one_tenants_queue_does_not_hold_back_anothers_batch(two_slot_stack: Any) -> None:
    """Tenant A queues four batches, then tenant B one: B's ends before A's third."""
    page = [("a.png", documents.document(documents.phrase(1), "png"))]
    a, b = tenant_on(two_slot_stack), tenant_on(two_slot_stack)
    with httpx.Client(base_url=two_slot_stack.settings.api_url, timeout=60) as api:
        a_batches = [upload(api, a, page) for _ in range(4)]
        b_batch = upload(api, b, page)
        assert completed_at(api, b, b_batch) < completed_at(api, a, a_batches[2])


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
