"""The README's first batch: the three sample scans in examples/ read back as printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.make_examples import SAMPLES
from tests.helpers import post_batch, wait_for_batch

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_sample_scans_read_back_as_the_readme_says(
    api: httpx.Client, tenant: tuple[str, str], stack: Any
) -> None:
    tenant_id, key = tenant
    files = [(name, (EXAMPLES / name).read_bytes()) for name in SAMPLES]

    batch = wait_for_batch(api, key, post_batch(api, tenant_id, key, files))

    assert (batch["status"], batch["successCount"], batch["failureCount"]) == ("Completed", 3, 0)
    for document, lines in zip(batch["documents"], SAMPLES.values(), strict=True):
        text = api.get(f"/api/documents/{document['id']}/text", headers={"X-API-Key": key}).text
        assert text.split() == " ".join(lines).split(), document["fileName"]
    # No warning a reader of the worker's log must puzzle over for every run: runpy's, that
    # the warm starter imported Prefect's engine before running it (it is meant to).
    assert "found in sys.modules" not in (stack.log_dir / "worker.log").read_text()
