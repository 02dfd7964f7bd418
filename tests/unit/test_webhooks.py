"""Completion webhooks in process: which URLs, the outbox at every end, retries, signatures."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from docpipe import batches, webhooks
from docpipe.db import session_scope
from docpipe.dispatch import cancel
from docpipe.errors import WebhookRefused
from docpipe.models import Batch, WebhookDelivery, utcnow
from docpipe.recovery import run_recovery_pass
from docpipe.retention import run_retention_pass
from docpipe.tenants import rotate_webhook_secret, set_webhook
from tests import documents
from tests.helpers import files_part, settings_with
from tests.receiver import receiver, verified
from tests.unit.prefect_stand_in import PrefectStandIn
from tests.unit.test_recovery_decisions import accepted_batch, running, stored


def page() -> list[tuple[str, bytes]]:
    return [("a.png", documents.document(documents.phrase(1), "png"))]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:9/hook", id="loopback"),
        pytest.param("http://localhost/hook", id="loopback-name"),
        pytest.param("http://10.1.2.3/hook", id="private"),
        pytest.param("http://169.254.169.254/latest/meta-data", id="link-local"),
        pytest.param("http://[::ffff:127.0.0.1]/hook", id="mapped-loopback"),
        pytest.param("http://224.0.0.1/hook", id="multicast"),
        pytest.param("http://0.0.0.0/hook", id="unspecified"),
    ],
)
def test_an_upload_whose_callback_is_not_public_is_refused(
    client: TestClient, tenant: tuple[str, str], url: str
) -> None:
    tenant_id, key = tenant
    rotate_webhook_secret(tenant_id)

    response = client.post(
        "/api/documents/bulk-upload",
        params={"tenantId": tenant_id, "callbackUrl": url},
        files=files_part(page()),
        headers={"X-API-Key": key},
    )

    assert response.status_code == 400, response.text
    assert "not a public address" in response.json()["error"]
    assert "DOCPIPE_WEBHOOK_ALLOW_PRIVATE" in response.json()["error"]


def test_an_upload_whose_callback_host_is_not_punycode_is_a_400(
    client: TestClient, tenant: tuple[str, str]
) -> None:
    """An xn-- host that does not decode is the caller's mistake, not a 500."""
    tenant_id, key = tenant
    rotate_webhook_secret(tenant_id)

    response = client.post(
        "/api/documents/bulk-upload",
        params={"tenantId": tenant_id, "callbackUrl": "http://xn--/"},
        files=files_part(page()),
        headers={"X-API-Key": key},
    )

    assert response.status_code == 400, response.text
    assert response.json() == {"error": "the webhook URL is not a valid URL"}


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://example.com/hook", id="not-http"),
        pytest.param("file:///etc/passwd", id="file"),
        pytest.param("http://user:pw@example.com/", id="userinfo"),
        pytest.param("http:///nohost", id="no-host"),
        pytest.param("http://example.com/a b", id="space"),
        pytest.param("http://example.com/" + "a" * 2100, id="too-long"),
        pytest.param("http://xn--/", id="empty-punycode"),
        pytest.param("https://xn--zz.example/", id="bad-punycode"),
    ],
)
def test_a_webhook_url_must_be_plain_http(home: Path, tenant: tuple[str, str], url: str) -> None:
    with pytest.raises(WebhookRefused):
        set_webhook(tenant[0], url)


def test_a_webhook_url_on_port_zero_is_refused_as_such(
    home: Path, tenant: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Port 0 would be taken for the scheme's own: the batch's summary sent to port 80."""
    settings_with(monkeypatch, webhook_allow_private="true")
    with pytest.raises(WebhookRefused, match="port must be 1 to 65535"):
        set_webhook(tenant[0], "http://127.0.0.1:0/hook")


def test_private_addresses_are_allowed_by_the_setting(
    client: TestClient, tenant: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id, key = tenant
    rotate_webhook_secret(tenant_id)
    settings_with(monkeypatch, webhook_allow_private="true")

    response = client.post(
        f"/api/documents/bulk-upload?tenantId={tenant_id}",
        data={"callbackUrl": "http://127.0.0.1:9/hook"},
        files=files_part(page()),
        headers={"X-API-Key": key},
    )

    assert response.status_code == 202, response.text


def test_a_callback_needs_a_secret_to_sign_with(
    client: TestClient, tenant: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id, key = tenant
    settings_with(monkeypatch, webhook_allow_private="true")
    response = client.post(
        "/api/documents/bulk-upload",
        params={"tenantId": tenant_id, "callbackUrl": "http://127.0.0.1:9/hook"},
        files=files_part(page()),
        headers={"X-API-Key": key},
    )
    assert response.status_code == 400
    assert "rotate-webhook-secret" in response.json()["error"]


def test_the_secret_is_kept_encrypted(home: Path, tenant: tuple[str, str]) -> None:
    from docpipe.tenants import get_tenant

    secret = rotate_webhook_secret(tenant[0])
    row = get_tenant(tenant[0])
    assert row is not None and row.webhook_secret is not None
    assert secret not in row.webhook_secret
    assert webhooks.unseal(row.webhook_secret) == secret
    assert (home / "webhook-key").stat().st_mode & 0o077 == 0


def test_a_batch_cancelled_while_waiting_gets_one_signed_delivery(
    home: Path, monkeypatch: pytest.MonkeyPatch, prefect: PrefectStandIn
) -> None:
    settings_with(monkeypatch, webhook_allow_private="true", webhook_backoff_seconds=0)
    prefect.reachable = False  # the batch waits, Queued
    batch_id = accepted_batch(home)
    tenant_id = batches.get_batch_tenant(batch_id)
    with receiver() as hook:
        secret = set_webhook(tenant_id, hook.url)
        assert secret is not None and secret.startswith("whsec_")

        cancel(tenant_id, batch_id)
        delivered = webhooks.send_due()

        assert len(delivered) == 1
        assert webhooks.send_due() == []  # exactly one
        (request,) = hook.received
    assert verified(secret, request)
    body = request.json()
    assert request.headers["x-docpipe-event"] == "batch.cancelled" == body["event"]
    assert request.headers["x-docpipe-delivery"] == f"{batch_id}.batch.cancelled.1"
    assert (body["batchId"], body["status"], body["cancelled"]) == (batch_id, "Cancelled", 1)
    view = batches.find_batch(tenant_id, batch_id).webhook
    assert view is not None and (view.attempts, view.last_status) == (1, 200)


def test_a_batch_recovery_fails_gets_its_delivery_from_that_pass(
    home: Path, monkeypatch: pytest.MonkeyPatch, prefect: PrefectStandIn
) -> None:
    settings_with(monkeypatch, webhook_allow_private="true", max_submissions=1)
    batch_id = accepted_batch(home)
    with receiver() as hook:
        set_webhook(batches.get_batch_tenant(batch_id), hook.url)
        flow_run_id = running(batch_id, prefect, beat_seconds_ago=0)
        prefect.flow_runs[flow_run_id].state = "CRASHED"

        report = run_recovery_pass()

        assert report.failed == [batch_id]
        assert report.webhooks_delivered == [f"{batch_id}.batch.failed.1"]
        (request,) = hook.received
    assert request.json()["status"] == "Failed"
    assert stored(batch_id).status.value == "Failed"


def test_a_failing_receiver_is_tried_a_bounded_number_of_times(
    home: Path, monkeypatch: pytest.MonkeyPatch, prefect: PrefectStandIn
) -> None:
    settings_with(
        monkeypatch, webhook_allow_private="true", webhook_backoff_seconds=0, webhook_max_attempts=3
    )
    prefect.reachable = False
    batch_id = accepted_batch(home)
    tenant_id = batches.get_batch_tenant(batch_id)
    with receiver(503) as hook:
        set_webhook(tenant_id, hook.url)
        cancel(tenant_id, batch_id)
        for _ in range(5):
            webhooks.send_due()
        assert len(hook.received) == 3
    delivery = batches.find_batch(tenant_id, batch_id).webhook
    assert delivery is not None
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("failed", 3, 503)
    assert delivery.delivered_at is None


def test_the_address_is_checked_again_at_delivery(
    home: Path, monkeypatch: pytest.MonkeyPatch, prefect: PrefectStandIn
) -> None:
    settings_with(monkeypatch, webhook_allow_private="true", webhook_backoff_seconds=0)
    prefect.reachable = False
    batch_id = accepted_batch(home)
    tenant_id = batches.get_batch_tenant(batch_id)
    with receiver() as hook:
        set_webhook(tenant_id, hook.url)  # allowed then
        cancel(tenant_id, batch_id)
        settings_with(monkeypatch, webhook_allow_private="false")

        assert webhooks.send_due() == []

        assert hook.received == []
    delivery = batches.find_batch(tenant_id, batch_id).webhook
    assert delivery is not None and delivery.state == "pending"
    assert delivery.last_error is not None and "not a public address" in delivery.last_error


def test_a_redirect_is_not_followed(
    home: Path, monkeypatch: pytest.MonkeyPatch, prefect: PrefectStandIn
) -> None:
    settings_with(monkeypatch, webhook_allow_private="true", webhook_backoff_seconds=0)
    prefect.reachable = False
    batch_id = accepted_batch(home)
    tenant_id = batches.get_batch_tenant(batch_id)
    with receiver(302) as hook:
        set_webhook(tenant_id, hook.url)
        cancel(tenant_id, batch_id)
        webhooks.send_due()
        assert len(hook.received) == 1
    delivery = batches.find_batch(tenant_id, batch_id).webhook
    assert delivery is not None and (delivery.state, delivery.last_status) == ("pending", 302)


def test_no_webhook_no_delivery(home: Path, prefect: PrefectStandIn) -> None:
    prefect.reachable = False
    batch_id = accepted_batch(home)
    tenant_id = batches.get_batch_tenant(batch_id)
    cancel(tenant_id, batch_id)
    assert batches.find_batch(tenant_id, batch_id).webhook is None
    assert webhooks.send_due() == []


def test_retention_deletes_a_batch_with_its_delivery(
    home: Path, monkeypatch: pytest.MonkeyPatch, prefect: PrefectStandIn
) -> None:
    settings_with(monkeypatch, webhook_allow_private="true", retention_days=1)
    prefect.reachable = False
    batch_id = accepted_batch(home)
    tenant_id = batches.get_batch_tenant(batch_id)
    set_webhook(tenant_id, "http://127.0.0.1:9/hook")
    cancel(tenant_id, batch_id)
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        batch.completed_at = utcnow() - timedelta(days=2)
    prefect.reachable = True

    assert run_retention_pass().batches == 1

    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
