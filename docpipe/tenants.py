"""Tenants and their API keys (only a hash of a key is ever stored)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from docpipe import webhooks
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.errors import Conflict, DocpipeError, NotFound, Unauthorized
from docpipe.models import Tenant, Tier, parse_outputs
from docpipe.ocr import check_languages

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def hash_api_key(api_key: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(api_key.encode()).hexdigest()


def create_tenant(
    tenant_id: str, tier: Tier, *, languages: str | None = None, outputs: str | None = None
) -> tuple[Tenant, str]:
    """Store a new tenant; returns it with its API key, which is shown only this once.

    `languages` (`deu+eng`) and `outputs` (`text,pdf,words`) default to the settings'.
    """
    languages, outputs = _checked_choices(languages, outputs)
    if not TENANT_ID.fullmatch(tenant_id):
        raise DocpipeError(
            "tenant id must be 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter "
            "or digit"
        )
    api_key = _new_key()
    with session_scope() as session:
        if session.get(Tenant, tenant_id) is not None:
            raise Conflict(f"tenant {tenant_id!r} already exists")
        tenant = Tenant(
            id=tenant_id,
            tier=tier,
            api_key_hash=hash_api_key(api_key),
            languages=None if languages == DEFAULT else languages,
            outputs=None if outputs == DEFAULT else outputs,
        )
        session.add(tenant)
    return tenant, api_key


REVOKED = "revoked-"
DEFAULT = "default"  # as a tenant's languages or outputs: the settings' own


def _checked_choices(languages: str | None, outputs: str | None) -> tuple[str | None, str | None]:
    """Languages Tesseract has here, and known outputs, spelled one way; `default` stays."""
    if languages not in (None, DEFAULT):
        languages = check_languages(languages, max_languages=get_settings().ocr_max_languages)
    if outputs not in (None, DEFAULT):
        outputs = ",".join(o.value for o in parse_outputs(outputs))
    return languages, outputs


def configure_tenant(
    tenant_id: str,
    *,
    tier: Tier | None = None,
    languages: str | None = None,
    outputs: str | None = None,
) -> Tenant:
    """Change a tenant's tier, OCR languages or outputs; what is not given stays."""
    languages, outputs = _checked_choices(languages, outputs)
    with session_scope() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        if tier is not None:
            tenant.tier = tier
        if languages is not None:
            tenant.languages = None if languages == DEFAULT else languages
        if outputs is not None:
            tenant.outputs = None if outputs == DEFAULT else outputs
        return tenant


def _new_key() -> str:
    return f"dp_{secrets.token_urlsafe(32)}"


def rotate_key(tenant_id: str) -> str:
    """Give the tenant a new API key, shown only this once; the old one stops working now."""
    api_key = _new_key()
    _replace_key_hash(tenant_id, hash_api_key(api_key))
    return api_key


def revoke_key(tenant_id: str) -> None:
    """Stop the tenant's API key working, with no new one (rotate-key gives one again)."""
    # Not a SHA-256 of anything: no key can ever hash to it.
    _replace_key_hash(tenant_id, f"{REVOKED}{secrets.token_hex(16)}")


def _replace_key_hash(tenant_id: str, key_hash: str) -> None:
    with session_scope() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        tenant.api_key_hash = key_hash


NO_WEBHOOK = "none"  # as a webhook URL: send none


def set_webhook(tenant_id: str, url: str) -> str | None:
    """Send the tenant's batch ends to `url` (`none`: to nowhere); checked as it would be
    at delivery. Returns the webhook secret if this made one (shown only this once): a
    tenant that has one keeps it (`rotate_webhook_secret` for a new one)."""
    checked = None if url == NO_WEBHOOK else webhooks.check_url(url)
    with session_scope() as session:
        tenant = _tenant(session, tenant_id)
        tenant.webhook_url = checked
        if checked is None or tenant.webhook_secret is not None:
            return None
        secret = webhooks.new_secret()
        tenant.webhook_secret = webhooks.seal(secret)
        return secret


def rotate_webhook_secret(tenant_id: str) -> str:
    """Give the tenant a new webhook secret, shown only this once; deliveries from now on
    are signed with it, retries of earlier ones included."""
    secret = webhooks.new_secret()
    with session_scope() as session:
        _tenant(session, tenant_id).webhook_secret = webhooks.seal(secret)
    return secret


def _tenant(session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    return tenant


@dataclass(frozen=True)
class TenantListing:
    id: str
    tier: Tier
    created_at: datetime
    key_active: bool
    languages: str
    outputs: str
    webhook_url: str | None = None


def list_tenants() -> list[TenantListing]:
    """Every tenant, without its key."""
    settings = get_settings()
    with session_scope() as session:
        return [
            TenantListing(
                t.id,
                t.tier,
                t.created_at,
                not t.api_key_hash.startswith(REVOKED),
                t.languages or settings.ocr_language,
                t.outputs or settings.ocr_outputs,
                t.webhook_url,
            )
            for t in session.scalars(select(Tenant).order_by(Tenant.id))
        ]


def authenticate(api_key: str | None) -> Tenant:
    """The tenant an API key belongs to."""
    if not api_key:
        raise Unauthorized("missing API key: send it in the X-API-Key header")
    with session_scope() as session:
        tenant = session.scalar(select(Tenant).where(Tenant.api_key_hash == hash_api_key(api_key)))
    if tenant is None:
        raise Unauthorized(
            "invalid API key: no tenant of this docpipe has it (a key works only with the "
            "installation, DOCPIPE_HOME or database, where its tenant was created, and until "
            "the tenant's key is rotated or revoked)"
        )
    return tenant


def get_tenant(tenant_id: str) -> Tenant | None:
    with session_scope() as session:
        return session.get(Tenant, tenant_id)
