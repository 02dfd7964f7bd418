"""expire-history: delete finished batches, their files and Prefect runs once they are old."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger

from docpipe import retention
from docpipe.models import camel_keys


@flow(name="expire-history", log_prints=False)
def expire_history() -> dict[str, Any]:
    """Delete batches ended more than DOCPIPE_RETENTION_DAYS ago (rows, files, flow runs,
    artifacts), and docpipe's flow runs ended more than DOCPIPE_PREFECT_RETENTION_DAYS ago."""
    logger = get_run_logger()
    if retention.retention_off():
        logger.info(
            "retention is off (DOCPIPE_RETENTION_DAYS and DOCPIPE_PREFECT_RETENTION_DAYS "
            "are 0): nothing deleted"
        )
        return {}
    report = retention.run_retention_pass()
    logger.info(
        "retention: %d batches deleted (%d documents, %d files), %d flow runs, %d artifacts",
        report.batches,
        report.documents,
        report.files,
        report.flow_runs,
        report.artifacts,
    )
    if not report.prefect_reachable:
        logger.warning("Prefect refused or did not answer: what is left waits for the next pass")
    elif report.more_left:
        logger.info("more is left to delete: the next pass goes on")
    return camel_keys(asdict(report))
