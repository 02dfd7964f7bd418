"""The API's answers when its own parts fail: a 503 with the error shape, never a 500,
and nothing half-stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from docpipe.storage import Storage, get_storage
from tests.helpers import make_tenant
from tests.unit.test_tenant_limits import batch_count, client_with, upload


def test_a_storage_failure_on_upload_is_a_503_and_nothing_is_kept(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id, key = make_tenant()
    real_put = Storage.put_file
    calls = []

    def failing_put(self: Storage, local_path: Path, key: str) -> None:
        calls.append(key)
        if len(calls) == 2:  # the first file is stored, the second fails
            raise OSError(28, "No space left on device")
        real_put(self, local_path, key)

    for client in client_with(monkeypatch):
        monkeypatch.setattr(Storage, "put_file", failing_put)
        response = upload(client, tenant_id, key, pages=3)
    assert response.status_code == 503
    assert response.json() == {
        "error": "docpipe's database or storage is unavailable; try again shortly"
    }
    assert "No space" not in response.text
    assert batch_count(tenant_id) == 0
    assert get_storage().keys(tenant_id) == []


def test_a_database_that_does_not_answer_is_a_503_before_the_body(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import docpipe.tenants

    tenant_id, key = make_tenant()

    def down(*_: Any) -> Any:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    for client in client_with(monkeypatch):
        monkeypatch.setattr(docpipe.tenants, "session_scope", down)
        response = upload(client, tenant_id, key)
    assert response.status_code == 503
    assert set(response.json()) == {"error"}
