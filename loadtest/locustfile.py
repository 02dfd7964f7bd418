"""Locust users for a VIP and a standard tenant: each uploads a batch and waits for it.

Configuration (environment):
  DOCPIPE_LOADTEST_VIP_TENANT / _VIP_KEY            the VIP tenant and its API key
  DOCPIPE_LOADTEST_STANDARD_TENANT / _STANDARD_KEY  the standard tenant and its API key
  DOCPIPE_LOADTEST_BATCH_SIZE                       documents per batch (default 100)
  DOCPIPE_LOADTEST_PAGES                            where generated pages are cached
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, between, events, task
from locust.stats import CSV_STATS_INTERVAL_SEC

from loadtest.pages import cached_pages

BATCH_SIZE = int(os.environ.get("DOCPIPE_LOADTEST_BATCH_SIZE", "100"))
PAGES_DIR = Path(
    os.environ.get("DOCPIPE_LOADTEST_PAGES", Path(__file__).resolve().parent / ".pages")
)
POLL_SECONDS = float(os.environ.get("DOCPIPE_LOADTEST_POLL_SECONDS", "1"))
TIMEOUT_SECONDS = float(os.environ.get("DOCPIPE_LOADTEST_BATCH_TIMEOUT", "1800"))

_pages: list[tuple[str, bytes]] = []


def pages() -> list[tuple[str, bytes]]:
    """The batch's documents: generated once, cached on disk, read once per process."""
    if not _pages:
        _pages.extend((p.name, p.read_bytes()) for p, _ in cached_pages(BATCH_SIZE, PAGES_DIR))
    return _pages


@events.init.add_listener
def _make_pages(environment: Any, **_: Any) -> None:
    pages()


@events.test_stop.add_listener
def _let_the_csv_catch_up(environment: Any, **_: Any) -> None:
    """Wait for one more of Locust's CSV writes before it exits.

    Locust rewrites its CSV once a second and not again when it exits, so the batch that
    ended last, as the users stopped, was in the printed summary but not in the CSV.
    """
    gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.5)


class TenantUser(HttpUser):
    abstract = True
    wait_time = between(1, 2)
    tier = ""

    @property
    def tenant(self) -> str:
        return os.environ[f"DOCPIPE_LOADTEST_{self.tier.upper()}_TENANT"]

    @property
    def api_key(self) -> str:
        return os.environ[f"DOCPIPE_LOADTEST_{self.tier.upper()}_KEY"]

    @task
    def batch(self) -> None:
        """Upload a batch, poll until it completes, report its completion time."""
        headers = {"X-API-Key": self.api_key}
        started = time.perf_counter()
        files = [("files", (name, data, "image/png")) for name, data in pages()]
        with self.client.post(
            f"/api/documents/bulk-upload?tenantId={self.tenant}",
            headers=headers,
            files=files,
            name=f"/api/documents/bulk-upload [{self.tier}]",
            catch_response=True,
        ) as response:
            if response.status_code != 202:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            batch_id = response.json()["batchId"]
        body: dict[str, Any] = {}
        while time.perf_counter() - started < TIMEOUT_SECONDS:
            time.sleep(POLL_SECONDS)
            polled = self.client.get(
                f"/api/batches/{batch_id}", headers=headers, name="/api/batches/[id]"
            )
            body = polled.json() if polled.ok else {}
            if body.get("status") in ("Completed", "Failed", "Cancelled"):
                break
        elapsed_ms = (time.perf_counter() - started) * 1000
        completed = body.get("status") == "Completed"
        # The whole batch as a request of its own, beside the upload and the polls.
        events.request.fire(
            request_type="BATCH",
            name=f"batch complete [{self.tier}]",
            response_time=elapsed_ms,
            response_length=body.get("successCount", 0),
            exception=None if completed else RuntimeError(f"batch ended {body.get('status')}"),
            context={"batchId": batch_id},
        )


class VipTenant(TenantUser):
    tier = "vip"


class StandardTenant(TenantUser):
    tier = "standard"
