"""Folder ingestion: settled files in inbox/<tenant>/ become batches, through the upload path."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import stat as stat_module
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select

from docpipe.batches import check_tenant_limits, create_batch
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.errors import Forbidden, OverLimit
from docpipe.models import Batch, Document, Tenant
from docpipe.submit import submit_batch
from docpipe.tenants import get_tenant
from docpipe.uploads import stage_files
from docpipe.validation import SNIFF_BYTES, check_upload

log = logging.getLogger(__name__)
REJECTED = "rejected"


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
    """Ingest every tenant folder of the inbox; folders of unknown tenants are left alone.

    A tenant folder that is a symbolic link is never entered: it could lead anywhere.
    """
    inbox = inbox or get_settings().inbox
    report = IngestReport()
    if not inbox.is_dir():
        return report
    for folder in sorted(p for p in inbox.iterdir() if p.is_dir() and not p.is_symlink()):
        tenant = get_tenant(folder.name)
        if tenant is None:
            log.warning("inbox folder %s has no tenant of that name; left alone", safe_name(folder))
            report.unknown_tenants.append(folder.name)
            continue
        report.merge(ingest_folder(folder, tenant))
    return report


def tenant_folder(tenant_id: str, folder: str | None = None) -> Path:
    """The folder a scan for this tenant may read: its inbox folder, or one inside it.

    Flow-run parameters come from whoever may start a run; a scan never reads outside the
    tenant's own folder, and never through a link.
    """
    root = get_settings().inbox / tenant_id
    path = Path(os.path.normpath(root / folder)) if folder else root
    if not path.is_relative_to(root):
        raise Forbidden(f"folder must be inside the tenant's inbox folder {root}")
    for step in (path, *path.parents):
        if step == root.parent:
            break
        if step.is_symlink():
            raise Forbidden("the folder (or one above it in the inbox) is a symbolic link")
    return path


def ingest_folder(
    folder: Path, tenant: Tenant, *, max_batch: int | None = None, settle: float | None = None
) -> IngestReport:
    """Turn the folder's settled files into batches of at most max_batch documents each.

    One scan at a time per folder: a scan that finds another one at work skips the folder.
    """
    with _scan_lock(folder) as locked:
        if not locked:
            log.info("another scan is at work in %s; skipped", safe_name(folder))
            return IngestReport()
        return _ingest(folder, tenant, max_batch=max_batch, settle=settle)


@contextlib.contextmanager
def _scan_lock(folder: Path) -> Iterator[bool]:
    # The lock lives in docpipe's home, not in the tenant's folder, where a link in its
    # place would make docpipe write wherever it points.
    digest = hashlib.sha256(str(folder.absolute()).encode()).hexdigest()[:24]
    path = get_settings().home / "run" / f"inbox-{digest}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
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
    accepted: list[tuple[str, tuple[int, int]]] = []
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for entry in sorted(os.scandir(folder_fd), key=lambda e: e.name):
            if entry.name.startswith(".") or entry.name == REJECTED:
                continue
            if entry.is_symlink():
                # Left where it is: moving it is as much a write as following it.
                report.rejected[entry.name] = LINK_REASON
                log.warning("%s in %s: %s", safe_name(entry.name), safe_name(folder), LINK_REASON)
                continue
            stream = _open_regular(folder_fd, entry.name) if entry.is_file() else None
            if stream is None:
                continue
            with stream:
                stat = os.fstat(stream.fileno())
                if now - stat.st_mtime < settle:
                    report.waiting.append(entry.name)  # maybe still being written
                    continue
                digest, head = _fingerprint(stream)
            kind, reason = check_upload(
                size=stat.st_size, head=head, max_bytes=settings.max_file_bytes
            )
            if reason is not None or kind is None:
                _reject(folder_fd, entry.name, reason or "invalid")
                report.rejected[entry.name] = reason or "invalid"
            elif _already_ingested(tenant.id, digest):
                # Its batch was committed, but the file outlived a crash: it is done.
                _remove(folder_fd, [entry.name])
                report.duplicates.append(entry.name)
            else:
                accepted.append((entry.name, (stat.st_dev, stat.st_ino)))
        for start in range(0, len(accepted), max_batch):
            try:
                check_tenant_limits(tenant.id)
            except OverLimit as e:  # the files wait in the folder for a later scan
                log.info("%s: %s; %d files wait", tenant.id, e, len(accepted) - start)
                report.waiting += [name for name, _ in accepted[start:]]
                break
            with contextlib.ExitStack() as files:
                chunk = []
                for name, identity in accepted[start : start + max_batch]:
                    # Opened again, never through a link, and only if it is the same file.
                    stream = _open_regular(folder_fd, name)
                    if stream is not None:
                        files.enter_context(stream)
                        found = os.fstat(stream.fileno())
                        if (found.st_dev, found.st_ino) == identity:
                            chunk.append((name, stream))
                if not chunk:
                    continue
                with stage_files(chunk, settings) as staged:
                    created = create_batch(tenant, staged, source="inbox")
            # Only now, with the batch committed, do the files leave the inbox. A crash
            # before this line leaves them to the next scan, which sees them as duplicates.
            _remove(folder_fd, [name for name, _ in chunk])
            submit_batch(created.batch_id)
            report.batches.append(created.batch_id)
    finally:
        os.close(folder_fd)
    return report


LINK_REASON = "a symbolic link: docpipe never follows links in the inbox; left in place"


def _open_regular(folder_fd: int, name: str) -> BinaryIO | None:
    """The file opened for reading if it is a regular file, never through a link."""
    try:
        # O_NONBLOCK: a FIFO swapped in after the listing does not hang the scan.
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder_fd)
    except OSError:
        return None
    stream = os.fdopen(fd, "rb")
    if not stat_module.S_ISREG(os.fstat(fd).st_mode):
        stream.close()
        return None
    return stream


def safe_name(name: object) -> str:
    """A file name fit for a log line: control characters (newlines too) escaped."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(name)
    )


def _remove(folder_fd: int, names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=folder_fd)


def _fingerprint(stream: BinaryIO) -> tuple[str, bytes]:
    digest = hashlib.sha256()
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


def _reject(folder_fd: int, name: str, reason: str) -> None:
    """Move the file to rejected/ with a note of why; through no link, over no link."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(REJECTED, 0o755, dir_fd=folder_fd)
    try:
        rejected_fd = os.open(
            REJECTED, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder_fd
        )
    except OSError:
        log.warning(
            "rejected/ in the inbox is not a plain folder; %s left in place", safe_name(name)
        )
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{name}.reason.txt", dir_fd=rejected_fd)  # a link there goes, unfollowed
        note = os.open(
            f"{name}.reason.txt",
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
            0o644,
            dir_fd=rejected_fd,
        )
        with os.fdopen(note, "w") as out:
            out.write(reason + "\n")
        # A rename replaces whatever has the name there, a link too; it writes through none.
        os.rename(name, name, src_dir_fd=folder_fd, dst_dir_fd=rejected_fd)
    except OSError as e:
        log.warning("could not set %s aside: %s", safe_name(name), e.strerror)
    finally:
        os.close(rejected_fd)
