"""Completion webhooks against the real stack: the flow run, the API's sender, a cancel."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest.pages import page_png
from tests import documents
from tests.helpers import cli, client, files_part, post_batch, wait_for_batch
from tests.receiver import receiver, verified

pytestmark = pytest.mark.e2e


def webhook_of(api: httpx.Client, key: str, batch_id: str, timeout: float = 60) -> dict[str, Any]:
    """The batch's webhook delivery once it is no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(f"/api/batches/{batch_id}", headers={"X-API-Key": key}).json()
        if body["webhook"] is not None and body["webhook"]["state"] != "pending":
            return dict(body["webhook"])
        assert time.monotonic() < deadline, body["webhook"]
        time.sleep(0.3)


def set_webhook(stack: Any, tenant_id: str, url: str) -> str:
    """`docpipe tenant set-webhook`, as an operator runs it; the secret it shows."""
    shown = json.loads(cli(stack, "tenant", "set-webhook", tenant_id, url, "--json"))
    # The operator sees what is registered.
    listed = json.loads(cli(stack, "tenant", "list", "--json"))
    assert {t["tenantId"]: t["webhookUrl"] for t in listed}[tenant_id] == url
    return str(shown["webhookSecret"])


def test_a_receiver_that_fails_twice_gets_the_summary_signed_on_the_third_attempt(
    api: httpx.Client, stack: Any, tenant: tuple[str, str], tmp_path: Path
) -> None:
    tenant_id, key = tenant
    with receiver(500, 500, 200) as hook:
        secret = set_webhook(stack, tenant_id, hook.url)
        files = [("a.png", documents.document(documents.phrase(3), "png"))]
        batch_id = post_batch(api, tenant_id, key, files)
        done = wait_for_batch(api, key, batch_id)

        webhook = webhook_of(api, key, batch_id)

        requests = hook.wait_for(3)
    assert (webhook["state"], webhook["attempts"], webhook["lastStatus"]) == ("delivered", 3, 200)
    assert webhook["deliveredAt"] is not None and webhook["url"] == hook.url
    assert len(requests) == 3
    # Every attempt is the same delivery; the last one is signed with the secret shown.
    assert {r.headers["x-docpipe-delivery"] for r in requests} == {webhook["deliveryId"]}
    assert all(verified(secret, r) for r in requests)
    assert not verified("whsec_someone-else", requests[-1])
    body = requests[-1].json()
    assert body["event"] == "batch.completed" == requests[-1].headers["x-docpipe-event"]
    assert (body["batchId"], body["tenantId"], body["status"]) == (batch_id, tenant_id, "Completed")
    assert (body["total"], body["succeeded"], body["failed"]) == (1, 1, 0)
    # The same values, in the same types and formats, as the API gives.
    assert (body["createdAt"], body["completedAt"]) == (done["createdAt"], done["completedAt"])
    [document] = body["documents"]
    assert (document["documentId"], document["status"]) == (done["documents"][0]["id"], "Ready")
    assert document["outputs"] == ["text", "pdf"]
    # The tenant's `docpipe status` says so too.
    shown = client("status", batch_id, url=stack.settings.api_url, key=key, home=tmp_path)
    assert f"webhook: delivered at {webhook['deliveredAt']} (3 attempts)" in shown.stdout


def test_a_batch_cancelled_while_running_gets_its_webhook_once(
    api: httpx.Client, stack: Any, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    with receiver() as hook:
        secret = set_webhook(stack, tenant_id, hook.url)
        # Whole A4 pages: still running when the cancel comes.
        batch_id = post_batch(api, tenant_id, key, [(f"{i}.png", page_png(i)) for i in range(12)])
        wait_for_batch(api, key, batch_id, until=("Processing",), timeout=120)
        cancelled = api.post(f"/api/batches/{batch_id}/cancel", headers={"X-API-Key": key})
        assert cancelled.status_code == 200, cancelled.text

        webhook = webhook_of(api, key, batch_id)
        time.sleep(5)  # the cancelled flow run's end sends nothing more

        requests = list(hook.received)
    assert (webhook["state"], webhook["attempts"], webhook["lastStatus"]) == ("delivered", 1, 200)
    [request] = requests
    assert verified(secret, request)
    body = request.json()
    assert (body["event"], body["status"]) == ("batch.cancelled", "Cancelled")
    assert body["cancelled"] > 0 and body["total"] == 12


def test_an_uploads_callback_url_wins_over_the_tenants_webhook(
    api: httpx.Client, stack: Any, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    with receiver() as tenants, receiver() as uploads:
        secret = set_webhook(stack, tenant_id, tenants.url)
        response = api.post(
            "/api/documents/bulk-upload",
            params={"tenantId": tenant_id, "callbackUrl": uploads.url},
            files=files_part([("a.png", documents.document(documents.phrase(4), "png"))]),
            headers={"X-API-Key": key},
        )
        assert response.status_code == 202, response.text
        batch_id = response.json()["batchId"]

        webhook = webhook_of(api, key, batch_id)

        [request] = uploads.wait_for(1)
        assert tenants.received == []
    assert (webhook["url"], webhook["state"]) == (uploads.url, "delivered")
    assert verified(secret, request) and request.json()["batchId"] == batch_id
