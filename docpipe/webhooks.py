"""Completion webhooks: check a URL, keep a tenant's secret, and send a batch's end, signed.

A batch's end writes its delivery to the outbox (`webhook_deliveries`) in the same
transaction as the end itself; whoever sends it claims one attempt at a time with a
compare-and-set, so a crash anywhere leaves the delivery due, never lost, and two senders
never send the same attempt. At least once: a sender that dies after the receiver took the
request but before recording it sends again, under the same `X-Docpipe-Delivery` id.
docs/operations.md#webhooks has the receiver's side.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import anyio
import httpx
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.errors import DocpipeError, WebhookRefused
from docpipe.home import webhook_key
from docpipe.models import Batch, DeliveryState, Tenant, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
# The longest wait between two attempts, however many came before.
MAX_BACKOFF_SECONDS = 3600.0
# Attempts sent at once by one sender: a slow receiver holds one of them, not the rest.
SENDERS = 4
# Of a receiver's answer only the status counts; this much of its body is read, no more.
MAX_ANSWER_BYTES = 1024
SIGNATURE_PREFIX = "sha256="


# --- the tenant's secret -------------------------------------------------------------------


def new_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


@lru_cache
def _fernet(key: str) -> Fernet:
    return Fernet(key.encode())


def seal(secret: str) -> str:
    """The secret as the database keeps it: encrypted under the installation's webhook key."""
    return _fernet(webhook_key(get_settings())).encrypt(secret.encode()).decode()


def unseal(sealed: str) -> str:
    try:
        return _fernet(webhook_key(get_settings())).decrypt(sealed.encode()).decode()
    except InvalidToken as e:
        raise DocpipeError(
            "a webhook secret does not decrypt with this installation's webhook key "
            "(DOCPIPE_WEBHOOK_KEY, or <home>/webhook-key)"
        ) from e


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """X-Docpipe-Signature: HMAC-SHA256 of `<timestamp>.<body>` under the secret, in hex."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + digest.hexdigest()


# --- which URLs ----------------------------------------------------------------------------


def check_url(url: str) -> str:
    """The URL, if docpipe may send to it now: http(s), no user or password, and a host
    whose every address is public (unless DOCPIPE_WEBHOOK_ALLOW_PRIVATE). Raises
    WebhookRefused saying why."""
    parts = _parsed(url)
    _addresses(parts)
    return str(parts)


def _parsed(url: str) -> httpx.URL:
    if len(url) > MAX_URL_LENGTH:
        raise WebhookRefused(f"a webhook URL may have at most {MAX_URL_LENGTH} characters")
    if any(not c.isprintable() or c.isspace() for c in url):
        raise WebhookRefused("a webhook URL may not hold spaces or control characters")
    try:
        parts = httpx.URL(url)
        host = parts.host  # an xn-- label that is not punycode fails only here
    except (httpx.InvalidURL, TypeError, UnicodeError) as e:
        raise WebhookRefused("the webhook URL is not a valid URL") from e
    if parts.scheme not in ("http", "https") or not host:
        raise WebhookRefused("a webhook URL must be http:// or https:// with a host")
    if parts.userinfo:
        raise WebhookRefused("a webhook URL may not hold a user name or password")
    if parts.port == 0:  # no server listens there; it would be taken for the default port
        raise WebhookRefused("a webhook URL's port must be 1 to 65535")
    return parts


def _addresses(parts: httpx.URL) -> list[str]:
    """Every address the URL's host resolves to, all of them allowed; the first is used."""
    host = parts.raw_host.decode("ascii")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise WebhookRefused(f"the webhook host {host} does not resolve") from e
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    # Every one: a host that resolves to a public and a private address could be reached
    # at either.
    if not get_settings().webhook_allow_private and not all(_public(a) for a in addresses):
        raise WebhookRefused(
            f"the webhook host {host} is not a public address (loopback, private, "
            "link-local, multicast and reserved ones are refused unless "
            "DOCPIPE_WEBHOOK_ALLOW_PRIVATE=true)"
        )
    if not addresses:
        raise WebhookRefused(f"the webhook host {host} does not resolve")
    return addresses


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    embedded: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one reaches that IPv4 address.
        embedded += [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
        if ip.teredo is not None:
            embedded.append(ip.teredo[1])
    return all(
        a.is_global
        and not (a.is_multicast or a.is_reserved or a.is_unspecified or a.is_link_local)
        and not (a.is_loopback or a.is_private)
        for a in embedded
    )


# --- the outbox ----------------------------------------------------------------------------


def record_end(session: Session, batch: Batch, summary: Callable[[], dict[str, Any]]) -> None:
    """Put the batch's end in the outbox, in the caller's transaction: to its upload's
    callbackUrl, else its tenant's webhook, else nowhere. The body is the event, the
    delivery's id and `summary()`; a delivery of an earlier end not yet made is replaced."""
    url = batch.callback_url
    if url is None:
        tenant = session.get(Tenant, batch.tenant_id)
        url = tenant.webhook_url if tenant is not None else None
    if url is None:
        return
    event = f"batch.{batch.status.value.lower()}"
    delivery = session.get(WebhookDelivery, batch.id)
    if delivery is None:
        delivery = WebhookDelivery(batch_id=batch.id, sequence=1)
        session.add(delivery)
    else:
        delivery.sequence += 1
    now = utcnow()
    delivery.event = event
    delivery.url = url
    body = {"event": event, "deliveryId": delivery.delivery_id, **summary()}
    delivery.payload = json.dumps(body, default=_json_default)
    delivery.state = DeliveryState.PENDING
    delivery.attempts = 0
    delivery.last_status = None
    delivery.last_error = None
    delivery.created_at = now
    delivery.next_attempt_at = now
    delivery.leased_until = None
    delivery.delivered_at = None


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        # As the API writes times: UTC, with a Z.
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON")


@dataclass(frozen=True)
class Attempt:
    """One claimed attempt at one delivery, with all it needs to be sent."""

    batch_id: str
    sequence: int
    delivery_id: str
    event: str
    url: str
    body: bytes
    secret: str | None
    number: int


@dataclass(frozen=True)
class Answer:
    status: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def is_due(batch_id: str) -> bool:
    """Whether the batch has a delivery waiting for an attempt now."""
    with session_scope() as session:
        return (
            session.scalar(
                select(WebhookDelivery.batch_id).where(
                    WebhookDelivery.batch_id == batch_id,
                    WebhookDelivery.state == DeliveryState.PENDING,
                    WebhookDelivery.next_attempt_at <= utcnow(),
                )
            )
            is not None
        )


def send_due(batch_id: str | None = None, *, limit: int = 50) -> list[str]:
    """Make one attempt at each delivery that is due (of this batch only, if given); the
    ids of those delivered. Never raises for a receiver's failure: it is recorded."""
    settings = get_settings()
    now = utcnow()
    free = or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now)
    with session_scope() as session:
        query = (
            select(WebhookDelivery.batch_id, WebhookDelivery.sequence, WebhookDelivery.attempts)
            .where(
                WebhookDelivery.state == DeliveryState.PENDING,
                WebhookDelivery.next_attempt_at <= now,
                free,
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
        if batch_id is not None:
            query = query.where(WebhookDelivery.batch_id == batch_id)
        due = session.execute(query).all()
        # A sender that died holding the last attempt used it up. Written only when there
        # is one: an idle poll writes nothing.
        if spent := [r.batch_id for r in due if r.attempts >= settings.webhook_max_attempts]:
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.batch_id.in_(spent), free)
                .values(state=DeliveryState.FAILED, next_attempt_at=None, leased_until=None)
                .execution_options(synchronize_session=False)
            )
    attempts = [a for row in due if (a := _claim(row.batch_id, row.sequence)) is not None]
    if not attempts:
        return []
    with ThreadPoolExecutor(max_workers=min(SENDERS, len(attempts))) as pool:
        answers = list(pool.map(_deliver, attempts))
    return [a.delivery_id for a, answer in zip(attempts, answers, strict=True) if answer.delivered]


def _claim(batch_id: str, sequence: int) -> Attempt | None:
    """Take the delivery's next attempt, unless another sender took it first."""
    settings = get_settings()
    now = utcnow()
    lease = timedelta(seconds=settings.webhook_timeout_seconds + 60)
    with session_scope() as session:
        taken = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.batch_id == batch_id,
                WebhookDelivery.sequence == sequence,
                WebhookDelivery.state == DeliveryState.PENDING,
                WebhookDelivery.attempts < settings.webhook_max_attempts,
                or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now),
            )
            .values(attempts=WebhookDelivery.attempts + 1, leased_until=now + lease)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return None
        delivery = session.get(WebhookDelivery, batch_id, populate_existing=True)
        sealed = session.scalar(
            select(Tenant.webhook_secret)
            .join(Batch, Batch.tenant_id == Tenant.id)
            .where(Batch.id == batch_id)
        )
        assert delivery is not None
        return Attempt(
            batch_id=batch_id,
            sequence=sequence,
            delivery_id=delivery.delivery_id,
            event=delivery.event,
            url=delivery.url,
            body=delivery.payload.encode(),
            secret=unseal(sealed) if sealed else None,
            number=delivery.attempts,
        )


def _deliver(attempt: Attempt) -> Answer:
    try:
        answer = _send(attempt)
    except Exception as e:  # recorded, and the next attempt is due later
        log.exception("webhook %s: attempt %d broke", attempt.delivery_id, attempt.number)
        answer = Answer(None, f"could not be sent ({type(e).__name__})")
    _record(attempt, answer)
    return answer


def _send(attempt: Attempt) -> Answer:
    """POST the body, signed, to the address checked just now; follow no redirect."""
    if attempt.secret is None:
        return Answer(None, "the tenant has no webhook secret (docpipe tenant set-webhook)")
    settings = get_settings()
    try:
        parts = _parsed(attempt.url)
        # Checked again at each attempt, and the address checked is the one connected to:
        # a name that resolves elsewhere since registration reaches nothing it may not.
        address = _addresses(parts)[0]
    except WebhookRefused as e:
        return Answer(None, str(e)[:200])
    timestamp = int(time.time())
    headers = {
        "Host": parts.netloc.decode("ascii"),
        "Content-Type": "application/json",
        "User-Agent": "docpipe-webhook",
        "X-Docpipe-Event": attempt.event,
        "X-Docpipe-Delivery": attempt.delivery_id,
        "X-Docpipe-Timestamp": str(timestamp),
        "X-Docpipe-Signature": signature(attempt.secret, timestamp, attempt.body),
    }
    target = parts.copy_with(host=address)
    # TLS is checked against the URL's own name, though the connection goes to an address.
    sni = {"sni_hostname": parts.raw_host.decode("ascii")} if parts.scheme == "https" else {}

    async def post() -> int:
        # The whole attempt, answer included, in the timeout: a receiver that trickles
        # its answer is cut off as surely as one that never answers.
        with anyio.fail_after(settings.webhook_timeout_seconds):
            async with (
                httpx.AsyncClient(
                    timeout=settings.webhook_timeout_seconds,
                    follow_redirects=False,
                    trust_env=False,  # no proxy from the environment: it would reach anywhere
                ) as client,
                client.stream(
                    "POST", target, content=attempt.body, headers=headers, extensions=sni
                ) as response,
            ):
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_ANSWER_BYTES:
                        break
                return response.status_code

    try:
        status = anyio.run(post)
    except TimeoutError:
        return Answer(None, "timed out")
    except httpx.TimeoutException:
        return Answer(None, "timed out")
    except httpx.ConnectError:
        return Answer(None, "could not connect")
    except httpx.HTTPError as e:
        return Answer(None, f"request failed ({type(e).__name__})")
    return Answer(status, None if 200 <= status < 300 else f"answered {status}")


def _record(attempt: Attempt, answer: Answer) -> None:
    """Write an attempt's outcome, unless a newer end of the batch replaced the delivery."""
    settings = get_settings()
    now = utcnow()
    values: dict[str, Any] = {
        "last_status": answer.status,
        "last_error": answer.error,
        "leased_until": None,
    }
    if answer.delivered:
        values |= {"state": DeliveryState.DELIVERED, "delivered_at": now, "next_attempt_at": None}
    elif attempt.number >= settings.webhook_max_attempts:
        values |= {"state": DeliveryState.FAILED, "next_attempt_at": None}
    else:
        wait = min(
            MAX_BACKOFF_SECONDS, settings.webhook_backoff_seconds * 2 ** (attempt.number - 1)
        )
        values["next_attempt_at"] = now + timedelta(seconds=wait)
    with session_scope() as session:
        session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.batch_id == attempt.batch_id,
                WebhookDelivery.sequence == attempt.sequence,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    if not answer.delivered:
        log.warning(
            "webhook %s: attempt %d of %d: %s",
            attempt.delivery_id, attempt.number, settings.webhook_max_attempts, answer.error,
        )  # fmt: skip


async def deliver_periodically(interval: float) -> None:
    """The API's sender: every `interval` seconds, one attempt at each due delivery."""
    while True:
        try:
            await anyio.to_thread.run_sync(send_due)
        except Exception:
            log.exception("sending webhooks failed; trying again in %g s", interval)
        await anyio.sleep(interval)
