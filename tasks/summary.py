"""The batch's closing steps: count outcomes and publish them; hand a folder batch's results
back to its folder's side; send the batch's end to its webhook."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from docpipe import batches, inbox, orchestrator, webhooks


@task(name="summarize_batch", cache_policy=NO_CACHE, task_run_name="summarize-{batch_id}")
def summarize_batch(batch_id: str) -> dict[str, Any]:
    """Record success and failure counts on the batch and publish a table of outcomes."""
    summary = batches.close_batch(batch_id)
    orchestrator.publish_table(orchestrator.summary_key(batch_id), summary.rows(), summary.message)
    get_run_logger().info(summary.message)
    return summary.counts() | {"headline": summary.headline, "outcome": summary.outcome}


@task(
    name="deliver_results",
    cache_policy=NO_CACHE,
    task_run_name="results-{batch_id}",
    retries=2,
    retry_delay_seconds=2,
)
def deliver_results(batch_id: str) -> list[str]:
    """Write a folder batch's texts and its summary to the outbox."""
    written = inbox.write_results(batch_id)
    get_run_logger().info("wrote %d result files to the outbox", len(written))
    return written


@task(name="send_webhook", cache_policy=NO_CACHE, task_run_name="webhook-{batch_id}")
def send_webhook(batch_id: str) -> list[str]:
    """Make the first attempt at the batch's webhook now; later ones are the API's and
    recovery's (each attempt is claimed once, whoever makes it)."""
    return webhooks.send_due(batch_id)
