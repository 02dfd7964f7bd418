"""recover-batches: get accepted batches moving again after Prefect or a worker went away."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger

from docpipe import recovery
from docpipe.models import camel_keys


@flow(name="recover-batches", log_prints=False)
def recover_batches() -> dict[str, Any]:
    """Submit batches Prefect never received; resubmit ones whose flow run died."""
    report = recovery.run_recovery_pass()
    get_run_logger().info(
        "recovery: %d submitted, %d resubmitted, %d given up",
        len(report.submitted),
        len(report.resubmitted),
        len(report.failed),
    )
    return camel_keys(asdict(report))
