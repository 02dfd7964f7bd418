"""Tenants and their API keys (only a hash of a key is ever stored)."""

from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import select

from docpipe.db import session_scope
from docpipe.errors import Conflict, DocpipeError, Unauthorized
from docpipe.models import Tenant, Tier

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def hash_api_key(api_key: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(api_key.encode()).hexdigest()


def create_tenant(tenant_id: str, tier: Tier) -> tuple[Tenant, str]:
    """Store a new tenant; returns it with its API key, which is shown only this once."""
    if not TENANT_ID.fullmatch(tenant_id):
        raise DocpipeError(
            "tenant id must be 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter "
            "or digit"
        )
    api_key = f"dp_{secrets.token_urlsafe(32)}"
    with session_scope() as session:
        if session.get(Tenant, tenant_id) is not None:
            raise Conflict(f"tenant {tenant_id!r} already exists")
        tenant = Tenant(id=tenant_id, tier=tier, api_key_hash=hash_api_key(api_key))
        session.add(tenant)
    return tenant, api_key


def authenticate(api_key: str | None) -> Tenant:
    """The tenant an API key belongs to."""
    if not api_key:
        raise Unauthorized("missing API key: send it in the X-API-Key header")
    with session_scope() as session:
        tenant = session.scalar(select(Tenant).where(Tenant.api_key_hash == hash_api_key(api_key)))
    if tenant is None:
        raise Unauthorized("invalid API key")
    return tenant


def get_tenant(tenant_id: str) -> Tenant | None:
    with session_scope() as session:
        return session.get(Tenant, tenant_id)
