"""Turn a load run's CSVs into report.md and PNG plots (pandas + matplotlib)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sqlalchemy import bindparam, create_engine, text  # noqa: E402

# Locust's columns in the report's HTTP table, and what the table calls them.
HTTP_COLUMNS = {
    "Request Count": "requests",
    "Failure Count": "failures",
    "Median Response Time": "median ms",
    "95%": "p95 ms",
    "Max Response Time": "max ms",
}


def documents_frame(database_url: str, tenants: list[str]) -> pd.DataFrame:
    """The documents of these tenants (one load run's), with their tiers and timings."""
    engine = create_engine(database_url)
    query = text(
        "SELECT d.id, d.status, d.page_count, d.ocr_seconds, d.started_at, d.processed_at,"
        " b.tier, b.id AS batch_id, b.created_at AS batch_created"
        " FROM documents d JOIN batches b ON b.id = d.batch_id"
        " WHERE b.tenant_id IN :tenants"
    ).bindparams(bindparam("tenants", expanding=True))
    with engine.connect() as connection:
        frame = pd.read_sql(query, connection, params={"tenants": tenants})
    engine.dispose()
    for column in ("started_at", "processed_at", "batch_created"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="mixed")
    return frame


def phase_figure(
    title: str, ylabel: str, series: dict[str, pd.Series], phases: list[dict[str, Any]]
) -> Figure:
    """A time plot with the run's phases (warm-up, VIP arrival...) as labelled spans, so
    what a line does can be read against what the load test was doing then."""
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, phase in enumerate(phases):
        ax.axvspan(phase["start"], phase["end"], color=f"C{i % 10}", alpha=0.08, lw=0)
        ax.axvline(phase["start"], color="grey", lw=0.6, ls="--")
        ax.text(
            phase["start"], 1.0, f" {phase['name']}", transform=ax.get_xaxis_transform(),
            rotation=90, va="top", ha="left", fontsize=7, color="dimgrey",
        )  # fmt: skip
    for label, values in series.items():
        ax.plot(values.index, values.to_numpy(), label=label)
    ax.set_title(title)
    ax.set_xlabel("seconds")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def _plot(
    path: Path,
    title: str,
    ylabel: str,
    series: dict[str, pd.Series],
    phases: list[dict[str, Any]],
) -> None:
    fig = phase_figure(title, ylabel, series, phases)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def batch_table(batches: pd.DataFrame) -> pd.DataFrame:
    """Whole batches per tier: how many, how many did not complete, and their seconds."""
    seconds = batches.groupby("tier")["seconds"]
    return pd.DataFrame(
        {
            "batches": seconds.count(),
            "not completed": (batches["status"] != "Completed").groupby(batches["tier"]).sum(),
            "mean s": seconds.mean().round(1),
            "p95 s": seconds.quantile(0.95).round(1),
            "max s": seconds.max().round(1),
        }
    )


def http_table(stats: pd.DataFrame) -> pd.DataFrame:
    """Locust's HTTP rows and their Aggregated row. A CSV from before whole batches had a
    file of their own holds them as request type BATCH: left out, and the aggregate
    recomputed from the HTTP rows alone."""
    if "Type" in stats and (stats["Type"] == "BATCH").any():
        http = stats[(stats["Type"] != "BATCH") & (stats["Name"] != "Aggregated")]
        weights = http["Request Count"]
        total = {
            "Type": "", "Name": "Aggregated",
            "Request Count": weights.sum(), "Failure Count": http["Failure Count"].sum(),
            # Medians and percentiles do not add up: the slowest request's is an upper bound.
            "Median Response Time": http["Median Response Time"].max(),
            "95%": http["95%"].max(),
            "Max Response Time": http["Max Response Time"].max(),
        }  # fmt: skip
        stats = pd.concat([http, pd.DataFrame([total])], ignore_index=True)
    table = stats.set_index("Name")[list(HTTP_COLUMNS)].rename(columns=HTTP_COLUMNS)
    return table.astype(int)


def _markdown(table: pd.DataFrame, index: str) -> list[str]:
    header = [index, *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, *values in table.astype(object).itertuples():  # each cell keeps its type
        lines.append("| " + " | ".join(str(v) for v in [name, *values]) + " |")
    return lines


def _against_floor(pages_per_second: float, floor: dict[str, Any] | None) -> list[str]:
    """The run's throughput as a share of bare Tesseract's, measured in the same run."""
    if not floor:
        return []
    return [
        f"- bare Tesseract on this machine, measured at the start of this run: "
        f"{floor['pagesPerSecond']:.2f} pages/s ({floor['pages']} pages, {floor['cores']} at "
        f"a time, docpipe stopped meanwhile); this run's throughput is "
        f"**{pages_per_second / floor['pagesPerSecond']:.2f}x** of it"
    ]


def write_report(out: Path, database_url: str, tenants: list[str]) -> str:
    """report.md and the plots for one load run: its tenants' documents only, so a home
    that has seen earlier runs does not stretch this one's figures."""
    docs = documents_frame(database_url, tenants)
    monitor = pd.read_csv(out / "monitor.csv") if (out / "monitor.csv").exists() else None
    stats_path = out / "locust_stats.csv"
    stats = pd.read_csv(stats_path) if stats_path.exists() else pd.DataFrame()
    batches_path = out / "locust_batches.csv"
    batches = pd.read_csv(batches_path) if batches_path.exists() else pd.DataFrame()
    timeline: dict[str, Any] = (
        json.loads((out / "phases.json").read_text()) if (out / "phases.json").exists() else {}
    )
    phases: list[dict[str, Any]] = timeline.get("phases", [])
    scenarios: dict[str, Any] = (
        json.loads((out / "scenarios.json").read_text())
        if (out / "scenarios.json").exists()
        else {}
    )
    lines = [f"# docpipe load test, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", ""]

    done = docs.dropna(subset=["processed_at"])
    if not done.empty:
        # On the monitor's clock when there is one, so the phases line up on every plot.
        t0 = pd.Timestamp(timeline["origin"]) if "origin" in timeline else None
        if t0 is None:
            t0 = done["batch_created"].min()
        done = done.assign(t=(done["processed_at"] - t0).dt.total_seconds())
        series = {
            tier: g.sort_values("t").assign(n=range(1, len(g) + 1)).set_index("t")["n"]
            for tier, g in done.groupby("tier")
        }
        _plot(out / "documents.png", "Documents finished over time", "documents", series, phases)
        span = (done["processed_at"].max() - done["batch_created"].min()).total_seconds()
        pages = int(done["page_count"].fillna(1).sum())
        per_doc = (done["processed_at"] - done["batch_created"]).dt.total_seconds()
        lines += [
            "## Throughput",
            "",
            f"- documents finished: {len(done)} ({pages} pages) in {span:.0f} s: "
            f"**{pages / span:.2f} pages/s**",
            *_against_floor(pages / span, scenarios.get("floor")),
            f"- OCR time per document: mean {done['ocr_seconds'].mean():.2f} s, "
            f"p95 {done['ocr_seconds'].quantile(0.95):.2f} s",
            f"- time from upload to finished, per document: mean {per_doc.mean():.1f} s, "
            f"p95 {per_doc.quantile(0.95):.1f} s",
            "",
            "![documents](documents.png)",
            "",
        ]
    if len(batches):
        lines += [
            "## Whole batches (Locust users: upload, then poll until the batch ends)",
            "",
            *_markdown(batch_table(batches), "tier"),
            "",
        ]
    if len(stats):
        lines += [
            "## HTTP requests (Locust; Aggregated is these requests only)",
            "",
            *_markdown(http_table(stats), "request"),
            "",
        ]
    if monitor is not None and len(monitor):
        m = monitor.set_index("t")
        _plot(
            out / "queues.png",
            "Queue depth",
            "count",
            {
                "flow runs due, not started (critical)": m["queued_critical"],
                "flow runs due, not started (batch)": m["queued_batch"],
                "documents not finished": m["documents_open"],
            },
            phases,
        )
        interval = m.index.to_series().diff().fillna(1.0).clip(lower=0.1)
        _plot(
            out / "cpu.png",
            "CPU use (cores)",
            "cores",
            {
                "tesseract": m["cpu_tesseract"] / interval,
                "worker + flow runs": (m["cpu_worker"] + m["cpu_flow_runs"]) / interval,
                "prefect server": m["cpu_server"] / interval,
                "api": m["cpu_api"] / interval,
            },
            phases,
        )
        _plot(
            out / "memory.png",
            "Resident memory",
            "MiB",
            {
                "api": m["rss_api_mb"],
                "worker": m["rss_worker_mb"],
                "prefect server": m["rss_server_mb"],
                "flow runs": m["rss_flow_runs_mb"],
            },
            phases,
        )
        lines += [
            "## Prefect API under load",
            "",
            f"- the UI's flow-run query (`POST /api/flow_runs/filter`, 50 newest): "
            f"p95 **{m['ui_query_ms'].quantile(0.95):.0f} ms**, "
            f"max {m['ui_query_ms'].max():.0f} ms over {len(m)} samples",
            "",
            "![queues](queues.png)",
            "",
            "![cpu](cpu.png)",
            "",
            "![memory](memory.png)",
            "",
        ]
    if "priority" in scenarios:
        p = scenarios["priority"]
        lines += [
            "## VIP versus standard",
            "",
            f"- a standard {p['batchSize']}-document batch, then a VIP one "
            f"{p['vipSubmittedAfterSeconds']} s later: standard took {p['standardSeconds']} s, "
            f"VIP {p['vipSeconds']} s; VIP finished first: **{p['vipFinishedFirst']}**",
            f"- a {p['smallVipBatch']}-document VIP batch: {p['smallVipIdleSeconds']} s on an idle "
            f"machine, {p['smallVipBusySeconds']} s while a standard batch runs: "
            f"**{p['smallVipSlowdown']}x**",
            "",
        ]
    if "memory" in scenarios:
        lines += [
            "## Memory from batch to batch",
            "",
            "| process | after warm-up MiB | after more batches MiB | growth |",
            "| --- | --- | --- | --- |",
        ]
        for role, m_ in scenarios["memory"].items():
            lines.append(
                f"| {role} | {m_['beforeMb']} | {m_['afterMb']} | {m_['growth'] * 100:.1f}% |"
            )
        lines.append("")
    report = "\n".join(lines)
    (out / "report.md").write_text(report)
    return report
