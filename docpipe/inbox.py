"""Folder ingestion: settled files in inbox/<tenant>/ become batches, through the upload path."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from docpipe.batches import create_batch
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.models import Batch, Document, Tenant
from docpipe.submit import submit_batch
from docpipe.tenants import get_tenant
from docpipe.uploads import stage_files
from docpipe.validation import SNIFF_BYTES, check_upload

log = logging.getLogger(__name__)
REJECTED = "rejected"
LOCK_FILE = ".docpipe-scan.lock"


@dataclass
class IngestReport:
    batches: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    unknown_tenants: list[str] = field(default_factory=list)

    def merge(self, other: IngestReport) -> None:
        self.batches += other.batches
        self.rejected.update(other.rejected)
        self.duplicates += other.duplicates
        self.waiting += other.waiting
        self.unknown_tenants += other.unknown_tenants


def scan_inbox(inbox: Path | None = None) -> IngestReport:
    """Ingest every tenant folder of the inbox; folders of unknown tenants are left alone."""
    inbox = inbox or get_settings().inbox
    report = IngestReport()
    if not inbox.is_dir():
        return report
    for folder in sorted(p for p in inbox.iterdir() if p.is_dir()):
        tenant = get_tenant(folder.name)
        if tenant is None:
            log.warning("inbox folder %s has no tenant of that name; left alone", folder)
            report.unknown_tenants.append(folder.name)
            continue
        report.merge(ingest_folder(folder, tenant))
    return report


def ingest_folder(
    folder: Path, tenant: Tenant, *, max_batch: int | None = None, settle: float | None = None
) -> IngestReport:
    """Turn the folder's settled files into batches of at most max_batch documents each.

    One scan at a time per folder: a scan that finds another one at work skips the folder.
    """
    with _scan_lock(folder) as locked:
        if not locked:
            log.info("another scan is at work in %s; skipped", folder)
            return IngestReport()
        return _ingest(folder, tenant, max_batch=max_batch, settle=settle)


@contextlib.contextmanager
def _scan_lock(folder: Path) -> Iterator[bool]:
    with (folder / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ingest(
    folder: Path, tenant: Tenant, *, max_batch: int | None, settle: float | None
) -> IngestReport:
    settings = get_settings()
    max_batch = max_batch or settings.max_batch_documents
    settle = settings.inbox_settle_seconds if settle is None else settle
    report = IngestReport()
    now = time.time()
    accepted: list[Path] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        stat = path.stat()
        if now - stat.st_mtime < settle:
            report.waiting.append(path.name)  # maybe still being written
            continue
        digest, head = _fingerprint(path)
        kind, reason = check_upload(size=stat.st_size, head=head, max_bytes=settings.max_file_bytes)
        if reason is not None or kind is None:
            _reject(path, reason or "invalid")
            report.rejected[path.name] = reason or "invalid"
        elif _already_ingested(tenant.id, digest):
            # Its batch was committed, but the file outlived a crash: it is done.
            path.unlink(missing_ok=True)
            report.duplicates.append(path.name)
        else:
            accepted.append(path)
    for start in range(0, len(accepted), max_batch):
        chunk = accepted[start : start + max_batch]
        with contextlib.ExitStack() as files:
            uploads = [(p.name, files.enter_context(p.open("rb"))) for p in chunk]
            with stage_files(uploads, settings) as staged:
                created = create_batch(tenant, staged, source="inbox")
        # Only now, with the batch committed, do the files leave the inbox. A crash
        # before this line leaves them to the next scan, which sees them as duplicates.
        _remove(chunk)
        submit_batch(created.batch_id)
        report.batches.append(created.batch_id)
    return report


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _fingerprint(path: Path) -> tuple[str, bytes]:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        head = stream.read(SNIFF_BYTES)
        digest.update(head)
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest(), head


def _already_ingested(tenant_id: str, sha256: str) -> bool:
    with session_scope() as session:
        return (
            session.scalar(
                select(Document.id)
                .join(Batch, Batch.id == Document.batch_id)
                .where(
                    Document.tenant_id == tenant_id,
                    Document.sha256 == sha256,
                    Batch.source == "inbox",
                )
                .limit(1)
            )
            is not None
        )


def _reject(path: Path, reason: str) -> None:
    rejected = path.parent / REJECTED
    rejected.mkdir(exist_ok=True)
    (rejected / f"{path.name}.reason.txt").write_text(reason + "\n")
    path.replace(rejected / path.name)
