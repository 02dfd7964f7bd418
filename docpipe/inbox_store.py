"""Folder ingestion on an object store (`s3://.../inbox/`) that every machine shares.

The local inbox's rules (docpipe/inbox.py) with the store's own means: a file is taken
once it is unchanged across two scans and settle seconds old; bad ones and failed ones
go to `<tenant>/rejected/` with a reason; results go to the outbox URL. What one scan
leaves the next is kept on the store itself (`<inbox>/.docpipe/`), and one scan at a
time per folder holds a lock in the shared database, so a scan on any worker sees the
same files and takes each one once. An object appears whole when its upload completes,
so no file is seen half-written, and a store has no links to follow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import posixpath
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, BinaryIO

from filelock import FileLock, Timeout
from sqlalchemy import text

from docpipe.batches import check_tenant_limits, create_batch
from docpipe.config import get_settings
from docpipe.db import engine_for, session_scope
from docpipe.dispatch import dispatch
from docpipe.errors import Forbidden, InvalidUpload, OverLimit
from docpipe.inbox import (
    REJECTED,
    FolderState,
    IngestReport,
    _earlier_copy,
    _fingerprint,
    batch_results,
    safe_name,
)
from docpipe.models import Document, DocumentStatus, Output, Tenant
from docpipe.storage import answering, open_store
from docpipe.tenants import TENANT_ID, get_tenant
from docpipe.uploads import stage_files
from docpipe.validation import check_upload

log = logging.getLogger(__name__)
STATE = ".docpipe"


class Store:
    """A folder tree on fsspec: the inbox or the outbox, by the URL in the settings."""

    def __init__(self, url: str) -> None:
        self.fs, root = open_store(url, get_settings().store_options(url))
        self.root = root.rstrip("/")

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def files(self, folder: str) -> dict[str, dict[str, Any]]:
        """The objects directly in folder (not in folders below it), by name, fresh."""
        with answering("listing the inbox"):
            self.fs.invalidate_cache(self.path(folder))
            try:
                entries = self.fs.ls(self.path(folder), detail=True, refresh=True)
            except FileNotFoundError:
                return {}
        return {
            posixpath.basename(e["name"].rstrip("/")): e for e in entries if e["type"] == "file"
        }

    def folders(self) -> list[str]:
        with answering("listing the inbox"):
            self.fs.invalidate_cache(self.root)
            try:
                entries = self.fs.ls(self.root, detail=True, refresh=True)
            except FileNotFoundError:
                return []
        return sorted(
            posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory"
        )

    def open(self, folder: str, name: str) -> BinaryIO:
        stream: BinaryIO = self.fs.open(self.path(folder, name), "rb")
        return stream

    def read(self, key: str) -> bytes | None:
        with answering("reading the inbox"):
            try:
                data: bytes = self.fs.cat_file(self.path(key))
            except FileNotFoundError:
                return None
        return data

    def write(self, key: str, data: bytes) -> None:
        with answering("writing to the inbox"):
            self.fs.pipe_file(self.path(key), data)

    def remove(self, folder: str, name: str) -> None:
        with answering("removing from the inbox"), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(folder, name))

    def reject(self, folder: str, name: str, reason: str) -> None:
        """Set the file aside in rejected/ with a note of why beside it."""
        with answering("setting a file aside"):
            self.fs.mv(self.path(folder, name), self.path(folder, "rejected", name))
        self.write(f"{folder}/rejected/{name}.reason.txt", (reason + "\n").encode())


def identity(entry: dict[str, Any]) -> tuple[int, int, int, int]:
    """An object's identity between scans, in the local inbox's shape: (0, its ETag's hash,
    size, modification time in ns). A rewrite changes the ETag even within one second."""
    etag = str(entry.get("ETag") or entry.get("etag") or "")
    tag = int(hashlib.sha256(etag.encode()).hexdigest()[:12], 16)
    modified: Any = entry.get("LastModified") or entry.get("mtime") or 0
    moment = modified.timestamp() if isinstance(modified, datetime) else float(modified)
    return (0, tag, int(entry.get("size") or 0), int(moment * 1e9))


def inbox_store() -> Store:
    return Store(get_settings().inbox_url)


def store_tenant_folder(tenant_id: str, folder: str | None = None) -> str:
    """The folder (relative to the inbox) a scan for this tenant may read: its own, or one
    inside it; never another's."""
    path = posixpath.normpath(f"{tenant_id}/{folder}") if folder else tenant_id
    if path != tenant_id and not path.startswith(f"{tenant_id}/"):
        raise Forbidden("folder must be inside the tenant's inbox folder")
    return path


def scan_store_inbox() -> IngestReport:
    """Ingest every tenant folder of the inbox on the store; others are left alone."""
    store = inbox_store()
    report = IngestReport()
    for name in store.folders():
        if name == STATE:
            continue
        tenant = get_tenant(name) if TENANT_ID.fullmatch(name) else None
        if tenant is None:
            log.warning("inbox folder %s has no tenant of that name; left alone", safe_name(name))
            report.unknown_tenants.append(safe_name(name))
            continue
        try:
            report.merge(ingest_store_folder(name, tenant, store=store))
        except Exception:  # one tenant's folder never stops the others' scans
            log.exception("the scan of inbox folder %s failed", safe_name(name))
            report.failed_folders.append(name)
    return report


def ingest_store_folder(
    folder: str,
    tenant: Tenant,
    *,
    store: Store | None = None,
    max_batch: int | None = None,
    settle: float | None = None,
) -> IngestReport:
    """Turn the folder's settled files into batches; one scan at a time per folder, on
    every machine."""
    store = store or inbox_store()
    with _scan_lock(f"{get_settings().inbox_url}|{folder}") as locked:
        if not locked:
            log.info("another scan is at work in %s; skipped", safe_name(folder))
            return IngestReport()
        return _ingest(store, folder, tenant, max_batch=max_batch, settle=settle)


@contextlib.contextmanager
def _scan_lock(name: str) -> Iterator[bool]:
    """Whether this scan holds the folder's lock. On PostgreSQL, a session advisory lock,
    which every machine sees; on SQLite (one machine) a file lock in docpipe's home."""
    settings = get_settings()
    digest = hashlib.sha256(name.encode()).digest()
    if settings.database_url.startswith("sqlite"):
        path = settings.home / "run" / f"inbox-{digest.hex()[:24]}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
        return
    key = int.from_bytes(digest[:8], "big", signed=True)
    with engine_for(settings.database_url).connect() as connection:
        locked = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}))
        connection.commit()
        try:
            yield locked
        finally:
            if locked:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()


def _load_state(store: Store, key: str) -> FolderState:
    raw = store.read(key)
    try:
        data = json.loads(raw or b"")
        return FolderState(
            seen={k: tuple(v) for k, v in data["seen"].items()},
            taken={k: (tuple(i), d) for k, (i, d) in data["taken"].items()},
        )
    except (ValueError, KeyError, TypeError):
        return FolderState()


def _save_state(store: Store, key: str, state: FolderState) -> None:
    store.write(key, json.dumps({"seen": state.seen, "taken": state.taken}).encode())


def _ingest(
    store: Store, folder: str, tenant: Tenant, *, max_batch: int | None, settle: float | None
) -> IngestReport:
    settings = get_settings()
    max_batch = max_batch or settings.max_batch_documents
    settle = settings.inbox_settle_seconds if settle is None else settle
    report = IngestReport()
    now = time.time()
    state_key = f"{STATE}/{hashlib.sha256(folder.encode()).hexdigest()[:24]}.state.json"
    previous = _load_state(store, state_key)
    state = FolderState()
    entries = {
        name: identity(entry)
        for name, entry in store.files(folder).items()
        if not name.startswith(".") and name != REJECTED
    }
    try:
        candidates = []
        for name in sorted(entries):
            found = entries[name]
            if name in previous.taken and tuple(previous.taken[name][0]) == found:
                _settle_taken(store, folder, name, previous.taken[name][1], found, state, report)
                continue
            state.seen[name] = found
            if tuple(previous.seen.get(name, ())) != found or now - found[3] / 1e9 < settle:
                report.waiting.append(name)
            else:
                candidates.append((name, found))
        accepted = []
        for name, found in candidates:
            try:
                with answering("reading the inbox"), store.open(folder, name) as stream:
                    digest, head = _fingerprint(stream)
            except FileNotFoundError:  # removed since the listing
                state.seen.pop(name, None)
                continue
            kind, reason = check_upload(size=found[2], head=head, max_bytes=settings.max_file_bytes)
            earlier = _earlier_copy(tenant.id, digest)
            if reason is not None or kind is None:
                report.rejected[name] = reason or "invalid"
                store.reject(folder, name, reason or "invalid")
                state.seen.pop(name, None)
            elif earlier is not None and earlier[1] == DocumentStatus.READY:
                store.remove(folder, name)
                report.duplicates.append(name)
                state.seen.pop(name, None)
            elif earlier is not None and not earlier[1].is_final:
                state.taken[name] = (found, earlier[0])
                state.seen.pop(name, None)
                report.waiting.append(name)
            else:
                accepted.append((name, found, digest))
        for start in range(0, len(accepted), max_batch):
            chunk = accepted[start : start + max_batch]
            try:
                check_tenant_limits(tenant.id)  # before staging; the batch's commit checks again
                with contextlib.ExitStack() as files, answering("reading the inbox"):
                    streams = [(n, files.enter_context(store.open(folder, n))) for n, *_ in chunk]
                    with stage_files(streams, settings) as staged:
                        if [f.sha256 for f in staged.files] != [d for *_, d in chunk]:
                            raise InvalidUpload("rewritten since screened", [], too_large=False)
                        created = create_batch(tenant, staged, source="inbox")
            except OverLimit as e:  # the files wait in the folder for a later scan
                log.info("%s: %s; %d files wait", tenant.id, e, len(accepted) - start)
                report.waiting += [name for name, _, _ in accepted[start:]]
                break
            except (FileNotFoundError, InvalidUpload):
                # Changed or removed since it was screened: the next scans look again.
                for name, *_ in chunk:
                    state.seen.pop(name, None)
                report.waiting += [name for name, *_ in chunk]
                continue
            for (name, found, _), document_id in zip(chunk, created.document_ids, strict=True):
                state.taken[name] = (found, document_id)
                state.seen.pop(name, None)
            _save_state(store, state_key, state)  # committed: the originals are the batch's
            dispatch()
            report.batches.append(created.batch_id)
    finally:
        _save_state(store, state_key, state)
    return report


def _settle_taken(
    store: Store,
    folder: str,
    name: str,
    document_id: str,
    found: tuple[int, int, int, int],
    state: FolderState,
    report: IngestReport,
) -> None:
    """An ingested original: removed once Ready, set aside with the reason once it failed
    or was cancelled, kept while it is still in progress."""
    with session_scope() as session:
        document = session.get(Document, document_id)
        status, error = (document.status, document.error) if document else (None, None)
    if status == DocumentStatus.READY:
        store.remove(folder, name)
        report.done.append(name)
    elif status is None or status.is_final:
        reason = f"{status.value}: {error}" if status else "its batch no longer exists"
        report.rejected[name] = reason
        store.reject(folder, name, reason)
    else:
        state.taken[name] = (found, document_id)
        report.in_progress.append(name)


# A folder batch's results, named as they are stored: `scan.png.txt`, `scan.png.ocr.pdf`.
OUTBOX_OUTPUTS = {Output.TEXT, Output.PDF}


def write_store_results(batch_id: str) -> list[str]:
    """A finished folder batch's results on the outbox store: `<tenant>/<name>.txt`,
    `<name>.ocr.pdf` and `batch-<id>.json`, as the local outbox has them."""
    if (batch := batch_results(batch_id)) is None:
        return []
    outbox = Store(get_settings().outbox_url)
    return batch.write(lambda name, data: outbox.write(f"{batch.tenant_id}/{name}", data))
