"""Dispatches wait for each other across machines: a lock every process of the database sees."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from docpipe.db import exclusive
from tests.helpers import postgres_schema


def test_the_lock_holds_across_homes_on_postgresql(tmp_path: Path) -> None:
    """Two machines (two homes) on one PostgreSQL: the second waits for the first."""
    events: list[str] = []
    held = threading.Event()

    def second_machine(url: str) -> None:
        held.wait()
        with exclusive("dispatch", url=url, home=tmp_path / "b"):
            events.append("b has it")

    with postgres_schema() as url:
        other = threading.Thread(target=second_machine, args=(url,))
        other.start()
        with exclusive("dispatch", url=url, home=tmp_path / "a"):
            held.set()
            time.sleep(0.5)  # the other machine asks meanwhile
            events.append("a lets go")
        other.join(timeout=10)

    assert events == ["a lets go", "b has it"]


def test_other_names_do_not_wait(tmp_path: Path) -> None:
    with postgres_schema() as url, exclusive("dispatch", url=url, home=tmp_path):
        done = threading.Event()

        def other() -> None:
            with exclusive("something-else", url=url, home=tmp_path):
                done.set()

        thread = threading.Thread(target=other)
        thread.start()
        assert done.wait(timeout=10)
        thread.join()
