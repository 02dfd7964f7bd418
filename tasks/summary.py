"""The batch's closing step: count outcomes, publish them, close the batch."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from docpipe import batches, orchestrator


@task(name="summarize_batch", cache_policy=NO_CACHE, task_run_name="summarize-{batch_id}")
def summarize_batch(batch_id: str) -> dict[str, Any]:
    """Record success and failure counts on the batch and publish a table of outcomes."""
    summary = batches.close_batch(batch_id)
    orchestrator.publish_table(f"batch-{batch_id}-summary", summary.rows(), summary.message)
    get_run_logger().info(summary.message)
    return summary.counts()
