"""The load test's report on small synthetic runs: its HTTP table holds HTTP requests only,
whole batches have a table of their own, and every plot marks the run's phases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from loadtest import report
from loadtest.monitor import COLUMNS

PHASES = [
    {"name": "standard load: Locust, VIP + standard", "start": 0.0, "end": 4.0},
    {"name": "standard, then VIP arrives", "start": 4.0, "end": 7.0},
    {"name": "memory: warm-up", "start": 7.0, "end": 9.0},
]
# Locust's columns, with a polled status request, an upload, and (as before whole batches
# had a file of their own) two minute-long batches that Locust counted as requests.
STATS_COLUMNS = [
    "Type", "Name", "Request Count", "Failure Count", "Median Response Time",
    "Average Response Time", "Min Response Time", "Max Response Time", "95%",
]  # fmt: skip
HTTP_ROWS = [
    ["GET", "/api/batches/[id]", 300, 0, 4, 5, 2, 40, 9],
    ["POST", "/api/documents/bulk-upload [vip]", 2, 0, 800, 820, 700, 950, 950],
]
BATCH_ROWS = [
    ["BATCH", "batch complete [standard]", 1, 0, 95_000, 95_000, 95_000, 95_000, 95_000],
    ["BATCH", "batch complete [vip]", 1, 0, 61_000, 61_000, 61_000, 61_000, 61_000],
]


def locust_stats(rows: list[list[Any]], aggregated: list[Any]) -> pd.DataFrame:
    return pd.DataFrame([*rows, ["", "Aggregated", *aggregated]], columns=STATS_COLUMNS)


def a_run(out: Path) -> None:
    """What `make loadtest` leaves in its results folder, for nine seconds of a run."""
    monitor = pd.DataFrame(
        [{column: 1.0 for column in COLUMNS} | {"t": float(t)} for t in range(10)]
    )
    monitor.to_csv(out / "monitor.csv", index=False)
    origin = datetime(2026, 1, 1, tzinfo=UTC)
    (out / "phases.json").write_text(json.dumps({"origin": origin.isoformat(), "phases": PHASES}))
    # What Locust now writes: HTTP only, its Aggregated row theirs alone.
    locust_stats(HTTP_ROWS, [302, 0, 4, 10, 2, 950, 800]).to_csv(
        out / "locust_stats.csv", index=False
    )
    pd.DataFrame(
        [
            ["vip", "b1", "Completed", 61.0, 100],
            ["standard", "b2", "Completed", 95.0, 100],
            ["standard", "b3", "Failed", 12.0, 0],
        ],
        columns=["tier", "batchId", "status", "seconds", "succeeded"],
    ).to_csv(out / "locust_batches.csv", index=False)


def test_the_http_table_leaves_whole_batches_out_of_the_aggregate() -> None:
    # A CSV from before: Locust's own Aggregated row averaged batches in, max 95 s.
    old = locust_stats([*HTTP_ROWS, *BATCH_ROWS], [304, 0, 4, 520, 2, 95_000, 800])

    table = report.http_table(old)

    assert list(table.index) == [
        "/api/batches/[id]",
        "/api/documents/bulk-upload [vip]",
        "Aggregated",
    ]
    assert table.loc["Aggregated", "requests"] == 302
    assert table.loc["Aggregated", "max ms"] == 950  # the slowest HTTP request, not a batch
    # Locust's own aggregate stands when it holds HTTP requests only.
    new = locust_stats(HTTP_ROWS, [302, 0, 4, 10, 2, 950, 800])
    assert report.http_table(new).loc["Aggregated", "p95 ms"] == 800


def test_whole_batches_have_a_table_of_their_own(tmp_path: Path, home: Path) -> None:
    from docpipe.config import get_settings

    a_run(tmp_path)

    text = report.write_report(tmp_path, get_settings().database_url, [])

    batches = text.split("## Whole batches")[1].split("##")[0]
    assert "| standard | 2 | 1 | 53.5 |" in batches  # two batches, one did not complete
    assert "| vip | 1 | 0 | 61.0 |" in batches
    http = text.split("## HTTP requests")[1].split("##")[0]
    assert "| Aggregated | 302 | 0 | 4 | 800 | 950 |" in http
    assert "batch complete" not in http


def test_every_plot_marks_the_phases_of_the_run(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docpipe.config import get_settings
    from docpipe.db import session_scope
    from docpipe.models import Batch, Document, DocumentStatus, Tier
    from tests.helpers import make_tenant

    a_run(tmp_path)
    tenant_id, _ = make_tenant()
    origin = datetime(2026, 1, 1, tzinfo=UTC)
    with session_scope() as session:
        batch = Batch(tenant_id=tenant_id, tier=Tier.STANDARD, created_at=origin)
        session.add(batch)
        session.flush()
        for i in range(3):
            session.add(
                Document(
                    batch_id=batch.id, tenant_id=tenant_id, position=i, file_name=f"{i}.png",
                    kind="png", size_bytes=1, sha256="0" * 64, storage_key=f"k{i}",
                    status=DocumentStatus.READY, page_count=1, ocr_seconds=1.0,
                    processed_at=origin + timedelta(seconds=2 + i),
                )
            )  # fmt: skip
    drawn: dict[str, Any] = {}

    def phase_figure(title: str, ylabel: str, series: Any, phases: Any) -> Any:
        figure = real(title, ylabel, series, phases)
        drawn[title] = figure.axes[0]
        return figure

    real = report.phase_figure
    monkeypatch.setattr(report, "phase_figure", phase_figure)

    report.write_report(tmp_path, get_settings().database_url, [tenant_id])

    assert set(drawn) == {
        "Documents finished over time",
        "Queue depth",
        "CPU use (cores)",
        "Resident memory",
    }
    for title, axes in drawn.items():
        labels = [t.get_text().strip() for t in axes.texts]
        assert labels == [p["name"] for p in PHASES], title
        # A dashed line where each phase starts, on the plot's own time axis.
        starts = [line.get_xdata()[0] for line in axes.lines if line.get_linestyle() == "--"]
        assert starts == [p["start"] for p in PHASES], title
    # The documents finished at 2, 3 and 4 s of the monitor's clock, inside the first phase.
    documents = drawn["Documents finished over time"]
    [finished] = [line for line in documents.lines if line.get_linestyle() != "--"]
    assert list(finished.get_xdata()) == [2.0, 3.0, 4.0]
    for name in ("documents.png", "queues.png", "cpu.png", "memory.png"):
        assert (tmp_path / name).stat().st_size > 1000
