"""/health answers even when a part it checks does not: a probe must not hang on it."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from docpipe.storage import Storage


def test_a_store_that_hangs_is_down_and_holds_one_check(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that never answers (a fault injected: the check blocks) is reported down, to
    every request, while one check waits on it."""
    released, calls = threading.Event(), []

    def hangs(self: Storage) -> None:
        calls.append(self)
        released.wait(timeout=120)

    monkeypatch.setattr(Storage, "check", hangs)
    answers: list[Any] = []

    def ask_twice() -> None:
        answers.extend(client.get("/health") for _ in range(2))

    asking = threading.Thread(target=ask_twice)
    asking.start()
    asking.join(timeout=60)  # far short of the hang: a /health that waits for it fails here
    released.set()
    assert not asking.is_alive(), "/health waited for a store that does not answer"

    assert [a.status_code for a in answers] == [200, 200]
    for answer in answers:
        assert answer.json()["storage"] is False and answer.json()["status"] == "degraded"
        assert answer.json()["database"] is True
    assert len(calls) == 1  # the second request waited on the first one's check


def test_a_store_that_hung_is_seen_again_once_it_answers(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check stuck on a connection that never answers is given up on after a while: the
    next request checks again, and sees the store back."""
    from docpipe.api.routes import health

    stuck = threading.Event()

    def hangs_the_first_time(self: Storage) -> None:
        if not stuck.is_set():
            stuck.set()
            threading.Event().wait(timeout=120)  # never answers, as far as the test goes

    monkeypatch.setattr(Storage, "check", hangs_the_first_time)
    monkeypatch.setattr(health, "STALE_CHECK_SECONDS", 0.0, raising=False)

    assert client.get("/health").json()["storage"] is False
    assert client.get("/health").json()["storage"] is True
