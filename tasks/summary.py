"""The batch's closing step: count outcomes, publish them, close the batch."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from docpipe import batches


@task(name="summarize_batch", cache_policy=NO_CACHE, task_run_name="summarize-{batch_id}")
def summarize_batch(batch_id: str) -> dict[str, Any]:
    """Record success and failure counts on the batch and publish a table of outcomes."""
    summary = batches.summarize_batch(batch_id)
    create_table_artifact(
        key=f"batch-{batch_id}-summary",
        table=summary.table.astype(object).where(summary.table.notna(), None).to_dict("records"),
        description=summary.message,
    )
    get_run_logger().info(summary.message)
    return {
        "batchId": batch_id,
        "total": summary.total,
        "succeeded": summary.succeeded,
        "failed": summary.failed,
        "cancelled": summary.cancelled,
    }
