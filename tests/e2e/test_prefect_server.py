"""The embedded Prefect server: no event history or automations unless they are asked for;
the UI's run list read from an index."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import documents
from tests.e2e.test_warm import one_page_batch
from tests.helpers import cli, files_part, prefect_http, started_stack, wait_for_batch

pytestmark = pytest.mark.e2e

# The server's event persister writes what it holds at least every 5 s.
PERSISTER_FLUSH_SECONDS = 5


def stored_events(
    stack: Any, flow_run_id: str, *, wait: float, until: str | None = None
) -> list[str]:
    """The names of the events Prefect stored about a flow run (the UI's Events page):
    as soon as there are any (or one named `until`), or all there are after `wait` s."""
    deadline = time.monotonic() + wait
    with prefect_http(stack.settings) as prefect:
        while True:
            response = prefect.post(
                "/events/filter",
                json={"filter": {"any_resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}}},
            )
            response.raise_for_status()
            names = [event["event"] for event in response.json()["events"]]
            if (until in names if until else names) or time.monotonic() > deadline:
                return names
            time.sleep(0.5)


@pytest.fixture
def stack_with_automations(tmp_path: Path) -> Iterator[Any]:
    with started_stack(tmp_path, prefect_automations=True) as stack:
        yield stack


def test_prefect_keeps_no_event_history_by_default(
    stack: Any, api: httpx.Client, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    response = api.post(
        f"/api/documents/bulk-upload?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files=files_part([("a.png", documents.document(documents.phrase(3), "png"))]),
    )
    assert response.status_code == 202, response.text

    batch = wait_for_batch(api, key, response.json()["batchId"])

    assert batch["status"] == "Completed"
    assert stored_events(stack, batch["flowRunId"], wait=2 * PERSISTER_FLUSH_SECONDS) == []


def test_automations_on_keep_the_event_history(stack_with_automations: Any) -> None:
    stack = stack_with_automations
    key = json.loads(cli(stack, "tenant", "create", "acme", "--tier", "vip", "--json"))["apiKey"]

    batch = one_page_batch(stack, key, seed=4)

    running = "prefect.flow-run.Running"
    names = stored_events(
        stack, batch["flowRunId"], wait=6 * PERSISTER_FLUSH_SECONDS, until=running
    )
    assert running in names


def test_the_uis_run_list_is_read_in_order_from_an_index_not_sorted_whole(stack: Any) -> None:
    """Newest first or oldest first, as the UI lists runs: without the index, each look read
    and sorted every flow run the server ever had."""
    import sqlite3

    import sqlalchemy as sa
    from prefect.server.database import orm_models
    from prefect.server.schemas.sorting import FlowRunSort
    from sqlalchemy.dialects import sqlite

    database = stack.settings.prefect_home / "prefect.db"
    for sort in (FlowRunSort.START_TIME_DESC, FlowRunSort.START_TIME_ASC):
        query = sa.select(orm_models.FlowRun).order_by(*sort.as_sql_sort()).limit(50)
        sql = query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}")]
        assert not [step for step in plan if "TEMP B-TREE" in step], (sort, plan)
