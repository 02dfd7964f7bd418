"""ingest-folder: settled files in the inbox become batches, on a schedule or by hand."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from prefect import State, flow, get_run_logger, runtime

from docpipe import inbox, orchestrator
from docpipe.errors import Forbidden
from docpipe.models import camel_keys
from docpipe.tenants import get_tenant


def _scan_name() -> str:
    """ingest-<tenant or all>-<UTC time>: which scan it was, at a glance in the run list."""
    tenant_id = runtime.flow_run.parameters.get("tenant_id")
    whose = inbox.safe_name(tenant_id)[:63] if tenant_id else "all"
    return f"ingest-{whose}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


@flow(name="ingest-folder", flow_run_name=_scan_name, log_prints=False)
def ingest_folder(
    tenant_id: str | None = None, folder: str | None = None
) -> dict[str, Any] | State:
    """Turn files unchanged since the last scan into batches on the tenant tier's queue.

    Args:
        tenant_id: Only this tenant's folder; empty scans every tenant folder of the inbox.
        folder: Scan only this folder inside inbox/<tenant_id>/ (needs tenant_id); a
            folder outside the tenant's own is refused.
    """
    logger = get_run_logger()
    if folder and not tenant_id:
        return orchestrator.not_run("refused: folder needs tenant_id: whose documents are they?")
    if tenant_id:
        tenant = get_tenant(tenant_id)
        if tenant is None:
            logger.warning("no tenant %r; nothing ingested", tenant_id)
            return camel_keys(asdict(inbox.IngestReport(unknown_tenants=[tenant_id])))
        try:
            report = inbox.scan_tenant(tenant, folder)
        except Forbidden as e:
            logger.warning("refused: %s", e)
            return orchestrator.not_run(f"refused: {e}")
    else:
        report = inbox.scan_inbox()
    for name in report.unknown_tenants:
        logger.warning("inbox folder %r has no tenant of that name; left alone", name)
    for name, reason in report.rejected.items():
        logger.warning("rejected %s: %s", inbox.safe_name(name), reason)
    logger.info(
        "ingested %d batches; %d rejected, %d duplicates removed, %d waiting, %d originals "
        "still being processed, %d removed once Ready",
        len(report.batches),
        len(report.rejected),
        len(report.duplicates),
        len(report.waiting),
        len(report.in_progress),
        len(report.done),
    )
    return camel_keys(asdict(report))
