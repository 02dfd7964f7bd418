"""Schemathesis against the API's own OpenAPI schema, with a tenant's key: whatever it
sends, within the schema or just outside it, the API never answers 5xx, and every 4xx
has the `{"error": ...}` shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.helpers import make_tenant

KEY: dict[str, str] = {}


def _openapi() -> dict[str, Any]:
    """The schema as the app publishes it (building the app touches no disk)."""
    from docpipe.api.app import create_app
    from docpipe.config import get_settings

    try:
        return create_app().openapi()
    finally:
        get_settings.cache_clear()  # the session's settings come from its fixtures


schema = schemathesis.openapi.from_dict(_openapi())


@pytest.fixture
def app(home: Path) -> Any:
    """The in-process app, with a tenant; Prefect is the room's stand-in."""
    from docpipe.api.app import create_app

    tenant_id, key = make_tenant()
    KEY.update(tenant=tenant_id, key=key)
    return create_app()


def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx body is {"error": "..."}, possibly with invalidFiles."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body
        assert set(body) <= {"error", "invalidFiles"}, body
    return None


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_never_answers_5xx(app: Any, case: Any) -> None:
    if case.query and "tenantId" in case.query:
        case.query["tenantId"] = KEY["tenant"]  # past the 403, into the routes themselves
    case.call_and_validate(
        app=app,
        headers={"X-API-Key": KEY["key"]},
        checks=[schemathesis.checks.not_a_server_error, error_shape],
    )
