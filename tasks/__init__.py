"""Prefect tasks: thin wrappers that run docpipe's domain steps and report to Prefect."""

from tasks.documents import process_document
from tasks.summary import deliver_results, send_webhook, summarize_batch

__all__ = ["deliver_results", "process_document", "send_webhook", "summarize_batch"]
