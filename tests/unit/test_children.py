"""docpipe.children against a child that breaks the protocol: every request stays bounded
in time and memory, and no answer ever reaches the wrong request."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from docpipe.children import ChildDied, Children, ChildTimedOut


@pytest.fixture
def children() -> Iterator[Children]:
    made = Children("tests.unit.misbehaving_child", lambda: [])
    yield made
    made.close()


def test_a_child_that_answers_twice_is_replaced(children: Children) -> None:
    with pytest.raises(ChildDied, match="answered more than once"):
        children.ask({"do": "twice"}, timeout=10)
    assert children.ask({"do": "fine"}, timeout=10) == {"ok": "fine"}


def test_a_line_that_never_ends_is_bounded_by_the_deadline(children: Children) -> None:
    started = time.monotonic()
    with pytest.raises(ChildTimedOut):
        children.ask({"do": "trickle"}, timeout=1)
    assert time.monotonic() - started < 5
    assert children.ask({"do": "fine"}, timeout=10) == {"ok": "fine"}


def test_an_endless_answer_is_cut_off(children: Children) -> None:
    with pytest.raises(ChildDied, match="answered over"):
        children.ask({"do": "flood"}, timeout=10)


def test_what_a_child_says_unasked_never_answers_the_next_request(children: Children) -> None:
    assert children.ask({"do": "later"}, timeout=10) == {"ok": 1}
    time.sleep(0.6)  # it has spoken again, unasked
    assert children.ask({"do": "next"}, timeout=10) == {"ok": "next"}


def test_an_answer_that_is_not_an_object_is_refused(children: Children) -> None:
    with pytest.raises(ChildDied, match="other than an object"):
        children.ask({"do": "list"}, timeout=10)


def test_a_child_gets_none_of_the_parents_secrets(
    children: Children, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "admin:secret")
    monkeypatch.setenv("DOCPIPE_STORAGE_SECRET", "hush")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hush")
    names = children.ask({"do": "env"}, timeout=10)["env"]
    assert "PATH" in names
    assert not [n for n in names if n.startswith(("PREFECT_", "DOCPIPE_", "AWS_"))]
