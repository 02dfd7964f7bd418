"""For every test, unit and end-to-end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _settings_follow_the_environment() -> Iterator[None]:
    """Settings a test changed (tests.helpers.settings_with) end with it. An autouse fixture
    is set up first and so torn down last: after monkeypatch has put the environment back,
    the cached settings are dropped, and the next test reads the environment as it is."""
    yield
    from docpipe.config import get_settings

    get_settings.cache_clear()
