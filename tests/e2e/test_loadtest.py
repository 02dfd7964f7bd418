"""The benchmark and the Locust run work on a tiny input and produce well-formed output.

No timing is asserted here: the figures come from `make bench` and `make loadtest`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from loadtest.pages import cached_pages, character_error_rate, page_text

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def run_command(module: str, *args: str) -> str:
    """`python -m <module> args...` from the repository, as `make` runs it; what it
    printed, after checking it succeeded."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_pages_are_the_same_for_the_same_seed(tmp_path: Path) -> None:
    first = cached_pages(2, tmp_path / "a")
    second = cached_pages(2, tmp_path / "b")
    assert [p.read_bytes() for p, _ in first] == [p.read_bytes() for p, _ in second]
    assert first[1][1] == page_text(1) != page_text(0)


@pytest.mark.parametrize(
    ("reference", "hypothesis", "rate"),
    [("abcd", "abcd", 0.0), ("abcd", "abxd", 0.25), ("ab  cd", "ab cd", 0.0), ("ab", "", 1.0)],
)
def test_character_error_rate(reference: str, hypothesis: str, rate: float) -> None:
    assert character_error_rate(reference, hypothesis) == rate


@pytest.mark.slow
def test_bench_runs_on_two_pages(tmp_path: Path) -> None:
    stdout = run_command(
        "loadtest.bench", "--pages", "2", "--idle-seconds", "5", "--rounds", "2",
        "--out", str(tmp_path),
    )  # fmt: skip
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert figures["pages"] == 2 and figures["succeeded"] == 2 and figures["failed"] == 0
    names = ("floorSeconds", "cliFloorSeconds", "engineFloorSeconds", "pipelineSeconds")
    for name in (*names, "ratio", "speedupOverCli", "orchestrationCpuMsPerDocument"):
        assert figures[name] > 0, name
    # The ratio is to the floor of the engine docpipe used: its own, run bare.
    assert figures["engine"] == "api"
    assert figures["floorSeconds"] == figures["engineFloorSeconds"]
    assert figures["cerPipeline"] <= figures["cerFloor"] + 0.001
    assert figures["cerPipeline"] <= figures["cerCliFloor"] + 0.001
    assert figures["backgroundCpuSecondsPerMinute"] > 0
    # Floor and pipeline took turns; the figures are those of the median round.
    assert len(figures["allRounds"]) == 2
    # Each round carries its own outcome and quality, not only the reported one.
    for each in figures["allRounds"]:
        assert (each["succeeded"], each["failed"]) == (2, 0)
        assert each["cerPipeline"] <= each["cerFloor"] + 0.001
    assert figures["ratio"] in [r["ratio"] for r in figures["allRounds"]]
    assert "ratio to its engine's floor:" in stdout and "ms/document" in stdout
    assert "faster than the program:" in stdout
    # Against the program too (#15's figure), the median of its own rounds.
    by_cli = sorted(r["cliRatio"] for r in figures["allRounds"])
    assert figures["cliRatioMedian"] == by_cli[1] > 0
    assert re.search(rf"ratio to the program's floor: +{by_cli[1]:.3f} ", stdout)


@pytest.mark.slow
def test_bench_long_mode_runs_one_long_pdf_against_one_page_pdfs(tmp_path: Path) -> None:
    stdout = run_command(
        "loadtest.bench", "--long", "--pages", "3", "--idle-seconds", "1", "--rounds", "1",
        "--out", str(tmp_path),
    )  # fmt: skip
    figures = json.loads((tmp_path / "bench-long.json").read_text())
    assert figures["mode"] == "long" and figures["pages"] == 3
    assert figures["succeeded"] == {"separate": 3, "long": 1}
    assert figures["longSeconds"] > 0 and figures["separateSeconds"] > 0
    ratio = figures["longSeconds"] / figures["separateSeconds"]
    assert figures["longRatio"] == pytest.approx(ratio, abs=0.005)  # of unrounded seconds
    # Every page of the long PDF was read, in order: its text is as good as the pages'.
    assert figures["cerLong"] <= figures["cerSeparate"] + 0.001 < 0.05
    assert "long ÷ separate:" in stdout


def run_locust(stack: Any, out: Path, run_time: str, vip: Any, standard: Any) -> str:
    """Locust headless, as `make loadtest` runs it, on 2-page batches, writing its CSVs to
    `out`; returns what it printed, after checking it succeeded."""
    from loadtest.run import locust_command, locust_env

    result = subprocess.run(
        locust_command(stack.settings.api_url, out / "locust", run_time, stop_timeout=120),
        env=locust_env(vip, standard, 2, out / "pages", DOCPIPE_LOADTEST_POLL_SECONDS="0.5"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_locust_reports_whole_batches_per_tier(
    tmp_path: Path, stack: Any, docpipe_home: Path
) -> None:
    from sqlalchemy import func, select

    from docpipe.config import get_settings
    from docpipe.db import session_scope
    from docpipe.models import Document, Tier, utcnow
    from loadtest.monitor import Monitor
    from loadtest.report import write_report
    from loadtest.run import make_tenant

    vip, standard = make_tenant(Tier.VIP), make_tenant(Tier.STANDARD)
    since = utcnow()
    monitor = Monitor(get_settings(), tmp_path / "monitor.csv", interval=0.5)
    run_locust(stack, tmp_path, "40s", vip, standard)
    monitor.stop()
    stats = pd.read_csv(tmp_path / "locust_stats.csv")
    batches = pd.read_csv(tmp_path / "locust_batches.csv")
    for tier in ("vip", "standard"):
        ended = batches[batches["tier"] == tier]
        assert len(ended) >= 1 and (ended["status"] == "Completed").all()
    assert stats[stats["Name"] == "/api/batches/[id]"]["Request Count"].sum() > 0
    # Locust's statistics, its Aggregated row too, are HTTP requests only.
    requests = stats[stats["Name"] != "Aggregated"]
    assert set(requests["Type"]) == {"GET", "POST"}
    aggregated = stats[stats["Name"] == "Aggregated"].iloc[0]
    assert aggregated["Request Count"] == requests["Request Count"].sum()

    report = write_report(tmp_path, get_settings().database_url, [vip.id, standard.id])
    with session_scope() as session:
        finished = session.scalar(
            select(func.count())
            .select_from(Document)
            .where(
                Document.tenant_id.in_([vip.id, standard.id]), Document.processed_at.is_not(None)
            )
        )
    # This run's documents only: not those of earlier runs on the same home.
    assert f"- documents finished: {finished} (" in report

    for heading in (
        "## Throughput",
        "## Whole batches",
        "## HTTP requests",
        "## Prefect API under load",
    ):
        assert heading in report
    for plot in ("documents.png", "queues.png", "cpu.png", "memory.png"):
        assert (tmp_path / plot).stat().st_size > 1000
    monitored = pd.read_csv(tmp_path / "monitor.csv")
    assert monitored["rss_api_mb"].min() > 0 and monitored["ui_query_ms"].max() > 0
    # The CPU plot's Tesseract line holds its processes' CPU: up to the documents' own OCR
    # time (single-threaded Tesseract spends at most its wall time), and above nothing.
    # Not much above: an engine process of these 2-page batches lives about a second and
    # dies with its flow run, and what it spent after the last sample is never seen.
    with session_scope() as session:
        ocr_seconds = session.scalar(
            select(func.sum(Document.ocr_seconds)).where(Document.processed_at >= since)
        )
    assert ocr_seconds
    assert 0.05 * ocr_seconds <= monitored["cpu_tesseract"].sum() <= 1.2 * ocr_seconds + 1


@pytest.mark.slow
def test_a_batch_that_ends_as_locust_stops_is_in_its_csv(
    tmp_path: Path, stack: Any, docpipe_home: Path
) -> None:
    """Both users' first batches end after the run time, while Locust waits for them."""
    from docpipe.models import Tier
    from loadtest.run import make_tenant

    vip, standard = make_tenant(Tier.VIP), make_tenant(Tier.STANDARD)
    printed = run_locust(stack, tmp_path, "1s", vip, standard)
    batches = pd.read_csv(tmp_path / "locust_batches.csv")
    assert sorted(batches["tier"]) == ["standard", "vip"]
    summary = printed.split("Whole batches (kept out of the request statistics):")[1]
    for tier in ("vip", "standard"):
        assert tier in summary


def test_the_queue_depth_counts_runs_that_are_due_not_those_scheduled_for_later(
    stack: Any,
) -> None:
    """A schedule makes runs days ahead: they are not waiting, and the plot left them out."""
    from datetime import UTC, datetime, timedelta

    from loadtest.monitor import due_runs
    from tests.helpers import prefect_http, unique

    pool, queue = stack.settings.work_pool, unique("probe-")
    now = datetime.now(UTC)
    with prefect_http(stack.settings) as prefect:
        # Paused, so no worker starts what is due on it.
        prefect.post(
            f"/work_pools/{pool}/queues", json={"name": queue, "is_paused": True}
        ).raise_for_status()
        deployment = prefect.get("/deployments/name/process-batch/process-batch").json()
        runs = []
        for start in (
            now - timedelta(seconds=5),
            now + timedelta(hours=1),
            now + timedelta(days=2),
        ):
            created = prefect.post(
                f"/deployments/{deployment['id']}/create_flow_run",
                json={
                    "parameters": {"batch_id": "not-a-batch"},
                    "work_queue_name": queue,
                    "state": {
                        "type": "SCHEDULED",
                        "state_details": {"scheduled_time": start.isoformat()},
                    },
                },
            )
            created.raise_for_status()
            runs.append(created.json()["id"])
        try:
            assert due_runs(prefect, queue, now) == 1
            assert due_runs(prefect, queue, now + timedelta(days=3)) == 3
        finally:
            for run in runs:
                prefect.delete(f"/flow_runs/{run}")
            prefect.delete(f"/work_pools/{pool}/queues/{queue}")


@pytest.mark.slow
def test_the_loadtest_quotes_its_throughput_against_bare_tesseract(
    tmp_path: Path, stack: Any, docpipe_home: Path
) -> None:
    import psutil

    from docpipe.config import get_settings
    from loadtest.monitor import find_services
    from loadtest.report import _against_floor
    from loadtest.run import floor_throughput

    pages = [p for p, _ in cached_pages(2, tmp_path / "pages")]
    bare = floor_throughput(pages, get_settings())
    assert bare["pages"] == 2 and bare["pagesPerSecond"] > 0
    services = find_services(get_settings())
    assert {"server", "worker", "api"} <= set(services)
    # docpipe was stopped for the floor, and runs again.
    assert all(p.status() != psutil.STATUS_STOPPED for p in services.values())
    assert httpx.get(f"{stack.settings.api_url}/health", timeout=10).is_success
    [line] = _against_floor(bare["pagesPerSecond"] / 2, bare)
    assert "this run's throughput is **0.50x** of it" in line


@pytest.mark.slow
def test_history_measures_a_fresh_home_then_the_same_home_with_history(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    from loadtest.history import FIGURES

    home = tmp_path / "home"
    stdout = run_command(
        "loadtest.history", "--batches", "2", "--documents", "6", "--pages", "2",
        "--requests", "5", "--rounds", "1", "--out", str(tmp_path), "--home", str(home),
    )  # fmt: skip
    figures = json.loads((tmp_path / "history.json").read_text())
    assert figures["history"]["batches"] == 2 and figures["history"]["documents"] == 6
    for phase in ("fresh", "withHistory"):
        measured = figures[phase]
        assert measured["orchestrationCpuMsPerDocument"] > 0
        for name in ("statusMs", "listMs", "uiFlowRunQueryMs"):
            assert 0 < measured[name]["p50"] <= measured[name]["p95"] <= measured[name]["max"]
        assert measured["prefectDatabase"]["tables"]["flow_run"] > 0
        assert set(measured["residentMb"]) == {"prefect-server", "warm-starter", "worker", "api"}
    for name, get in FIGURES.items():
        ratio = get(figures["withHistory"]) / get(figures["fresh"])
        assert figures["ratios"][name] == pytest.approx(ratio, abs=0.006)
        assert figures["met"][name] == (figures["ratios"][name] <= figures["goal"])
    before, after = (figures[p]["prefectDatabase"]["bytes"] for p in ("fresh", "withHistory"))
    assert figures["prefectDatabaseGrowthBytes"] == after - before
    assert "goal <= 1.2" in stdout and "Prefect's database:" in stdout
    # The history went through the API and the flows, as the tenant's own batches: a
    # warm-up, a measured batch per phase, and the two batches of history between them.
    with create_engine(f"sqlite:///{home / 'docpipe.db'}").connect() as connection:
        batches = connection.execute(
            text("SELECT status, count(*) FROM batches WHERE tenant_id = 'bench' GROUP BY 1")
        ).all()
        ready = connection.scalar(text("SELECT count(*) FROM documents WHERE status = 'Ready'"))
    assert batches == [("Completed", 5)] and ready == 1 + 2 + 6 + 2
