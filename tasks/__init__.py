"""Prefect tasks: thin wrappers that run docpipe's domain steps and report to Prefect."""

from tasks.documents import ocr_document, validate_document
from tasks.summary import summarize_batch

__all__ = ["ocr_document", "summarize_batch", "validate_document"]
