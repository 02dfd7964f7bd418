"""Locust users for a VIP and a standard tenant: each uploads a batch and waits for it.

Locust's own statistics (and its Aggregated row) hold HTTP requests only; each whole batch,
upload to end, is a row of <csv prefix>_batches.csv, summed up per tier as Locust stops.

Configuration (environment):
  DOCPIPE_LOADTEST_VIP_TENANT / _VIP_KEY            the VIP tenant and its API key
  DOCPIPE_LOADTEST_STANDARD_TENANT / _STANDARD_KEY  the standard tenant and its API key
  DOCPIPE_LOADTEST_BATCH_SIZE                       documents per batch (default 100)
  DOCPIPE_LOADTEST_PAGES                            where generated pages are cached
"""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path
from typing import Any

import gevent
import pandas as pd
from locust import HttpUser, between, events, task
from locust.stats import CSV_STATS_INTERVAL_SEC

from loadtest.pages import cached_pages
from loadtest.report import batch_table

BATCH_SIZE = int(os.environ.get("DOCPIPE_LOADTEST_BATCH_SIZE", "100"))
PAGES_DIR = Path(
    os.environ.get("DOCPIPE_LOADTEST_PAGES", Path(__file__).resolve().parent / ".pages")
)
POLL_SECONDS = float(os.environ.get("DOCPIPE_LOADTEST_POLL_SECONDS", "1"))
TIMEOUT_SECONDS = float(os.environ.get("DOCPIPE_LOADTEST_BATCH_TIMEOUT", "1800"))

_pages: list[tuple[str, bytes]] = []
BATCH_COLUMNS = ["tier", "batchId", "status", "seconds", "succeeded"]
log = logging.getLogger(__name__)


class BatchLog:
    """Whole batches, one CSV row each as it ends: kept out of Locust's request statistics,
    whose Aggregated row would otherwise average minutes-long batches with HTTP calls."""

    path: Path | None = None

    @classmethod
    def open(cls, csv_prefix: str | None) -> None:
        if csv_prefix:
            cls.path = Path(f"{csv_prefix}_batches.csv")
            with cls.path.open("w", newline="") as f:
                csv.writer(f).writerow(BATCH_COLUMNS)

    @classmethod
    def add(cls, row: dict[str, Any]) -> None:
        if cls.path is not None:
            with cls.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=BATCH_COLUMNS).writerow(row)

    @classmethod
    def summary(cls) -> str:
        if cls.path is None:
            return ""
        return batch_table(pd.read_csv(cls.path)).to_string()


def pages() -> list[tuple[str, bytes]]:
    """The batch's documents: generated once, cached on disk, read once per process."""
    if not _pages:
        _pages.extend((p.name, p.read_bytes()) for p, _ in cached_pages(BATCH_SIZE, PAGES_DIR))
    return _pages


@events.init.add_listener
def _make_pages(environment: Any, **_: Any) -> None:
    pages()
    options = environment.parsed_options
    BatchLog.open(getattr(options, "csv_prefix", None) if options else None)


@events.test_stop.add_listener
def _let_the_csv_catch_up(environment: Any, **_: Any) -> None:
    """Wait for one more of Locust's CSV writes before it exits, then sum the batches up.

    Locust rewrites its CSV once a second and not again when it exits, so the last polls,
    as the users stopped, were in the printed summary but not in the CSV.
    """
    gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.5)
    log.info("Whole batches (kept out of the request statistics):\n%s", BatchLog.summary())


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
        BatchLog.add(
            {
                "tier": self.tier,
                "batchId": batch_id,
                "status": body.get("status", "TimedOut"),
                "seconds": round(time.perf_counter() - started, 2),
                "succeeded": body.get("successCount", 0),
            }
        )


class VipTenant(TenantUser):
    tier = "vip"


class StandardTenant(TenantUser):
    tier = "standard"
