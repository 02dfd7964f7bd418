"""Folder ingestion: settled files in inbox/<tenant>/ become batches, through the upload path."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import stat as stat_module
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock, Timeout
from sqlalchemy import select

from docpipe.batches import check_tenant_limits, create_batch
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.dispatch import dispatch
from docpipe.errors import Forbidden, OverLimit
from docpipe.models import Batch, Document, DocumentStatus, Outcomes, Output, Tenant
from docpipe.storage import OUTPUT_SUFFIXES, get_storage, output_key
from docpipe.tenants import TENANT_ID, get_tenant
from docpipe.uploads import stage_files
from docpipe.validation import SNIFF_BYTES, check_upload

log = logging.getLogger(__name__)
REJECTED = "rejected"
# Written into an inbox folder no tenant has, so that whoever drops files there sees why
# nothing happens; removed again once the folder's tenant exists.
NOTICE = "README-docpipe.txt"


@dataclass
class IngestReport:
    batches: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    unknown_tenants: list[str] = field(default_factory=list)
    # Originals of documents still being processed, and of ones now Ready (removed).
    in_progress: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed_folders: list[str] = field(default_factory=list)

    def merge(self, other: IngestReport) -> None:
        self.batches += other.batches
        self.rejected.update(other.rejected)
        self.duplicates += other.duplicates
        self.waiting += other.waiting
        self.unknown_tenants += other.unknown_tenants
        self.in_progress += other.in_progress
        self.done += other.done
        self.failed_folders += other.failed_folders


def scan_inbox(inbox: Path | None = None) -> IngestReport:
    """Ingest every tenant folder of the inbox; folders of unknown tenants are left alone.

    A tenant folder that is a symbolic link is never entered: it could lead anywhere.
    """
    if inbox is None and get_settings().inbox_url:
        from docpipe.inbox_store import scan_store_inbox  # which imports this module

        return scan_store_inbox()
    inbox = inbox or get_settings().inbox
    report = IngestReport()
    if not inbox.is_dir():
        return report
    for folder in sorted(p for p in inbox.iterdir() if p.is_dir() and not p.is_symlink()):
        # A name no tenant id can have is not looked up at all (it may not even be UTF-8).
        tenant = get_tenant(folder.name) if TENANT_ID.fullmatch(folder.name) else None
        if tenant is None:
            log.warning("inbox folder %s has no tenant of that name; left alone", safe_name(folder))
            report.unknown_tenants.append(safe_name(folder.name))
            _leave_notice(folder)
            continue
        try:
            report.merge(ingest_tenant_folder(folder, tenant))
        except Exception:  # one tenant's folder never stops the others' scans
            log.exception("the scan of inbox folder %s failed", safe_name(folder.name))
            report.failed_folders.append(folder.name)
    return report


def scan_tenant(tenant: Tenant, folder: str | None = None) -> IngestReport:
    """One tenant's inbox folder, or one inside it, wherever the inbox is; Forbidden for
    a folder outside the tenant's own."""
    if get_settings().inbox_url:
        from docpipe.inbox_store import ingest_store_folder, store_tenant_folder

        return ingest_store_folder(store_tenant_folder(tenant.id, folder), tenant)
    path = tenant_folder(tenant.id, folder)
    # tenant_folder has refused a link anywhere on the way.
    return ingest_tenant_folder(path, tenant) if path.is_dir() else IngestReport()


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


def ingest_tenant_folder(
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


def _state_path(folder: Path, suffix: str) -> Path:
    """A file of docpipe's about this folder: in docpipe's home, never in the tenant's
    folder, where a link in its place would make docpipe write wherever it points."""
    digest = hashlib.sha256(str(folder.absolute()).encode()).hexdigest()[:24]
    path = get_settings().home / "run" / f"inbox-{digest}.{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _scan_lock(folder: Path) -> Iterator[bool]:
    """Whether this scan holds the folder's lock; another scan at work means no."""
    lock = FileLock(_state_path(folder, "lock"))
    try:
        lock.acquire(blocking=False)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


# A file's identity between scans: device, inode, size and modification time (ns).
Identity = tuple[int, int, int, int]


@dataclass
class FolderState:
    """What one scan leaves the next about a folder (kept in docpipe's home).

    `seen`: files and their identity at the last scan; a file is taken only once it is
    unchanged across two scans. `taken`: files ingested, by name, with their identity
    and document id: the original stays in the folder until that document has a final
    outcome, and is then removed (Ready) or set aside in rejected/ with the reason.
    """

    seen: dict[str, Identity] = field(default_factory=dict)
    taken: dict[str, tuple[Identity, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> FolderState:
        try:
            raw = json.loads(path.read_text())
            return cls(
                seen={k: tuple(v) for k, v in raw["seen"].items()},  # type: ignore[misc]
                taken={k: (tuple(i), d) for k, (i, d) in raw["taken"].items()},  # type: ignore[misc]
            )
        except (OSError, ValueError, KeyError, TypeError):
            return cls()

    def save(self, path: Path) -> None:
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps({"seen": self.seen, "taken": self.taken}))
        partial.replace(path)


def _ingest(
    folder: Path, tenant: Tenant, *, max_batch: int | None, settle: float | None
) -> IngestReport:
    settings = get_settings()
    max_batch = max_batch or settings.max_batch_documents
    settle = settings.inbox_settle_seconds if settle is None else settle
    report = IngestReport()
    now = time.time()
    state_path = _state_path(folder, "state.json")
    previous = FolderState.load(state_path)
    state = FolderState()
    candidates: list[tuple[str, Identity]] = []
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        entries = {}
        for entry in os.scandir(folder_fd):
            if entry.name.startswith(".") or entry.name == REJECTED:
                continue
            if entry.name == NOTICE and entry.is_file(follow_symlinks=False):
                _remove(folder_fd, [NOTICE])  # docpipe's note from before the tenant existed
                continue
            if entry.is_symlink():
                # Set aside like any refused file: a rename moves the link, not what it names.
                report.rejected[entry.name] = LINK_REASON
                log.warning("%s in %s: %s", safe_name(entry.name), safe_name(folder), LINK_REASON)
                _reject(folder_fd, entry.name, LINK_REASON)
            elif not entry.name.isprintable() and _not_utf8(entry.name):
                report.rejected[safe_name(entry.name)] = BAD_NAME_REASON
            elif entry.is_file(follow_symlinks=False):
                stat = entry.stat(follow_symlinks=False)
                entries[entry.name] = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        being_written = _open_for_writing({(i[0], i[1]) for i in entries.values()})
        for name in sorted(entries):
            identity = entries[name]
            if name in previous.taken and previous.taken[name][0] == identity:
                _settle_taken(folder_fd, name, previous.taken[name][1], state, report)
                continue
            state.seen[name] = identity
            if (
                previous.seen.get(name) != identity  # new or changed since the last scan
                or now - identity[3] / 1e9 < settle
                or (identity[0], identity[1]) in being_written
            ):
                report.waiting.append(name)
            else:
                candidates.append((name, identity))
        accepted = _screen(folder_fd, candidates, tenant, settings.max_file_bytes, state, report)
        for start in range(0, len(accepted), max_batch):
            try:
                check_tenant_limits(tenant.id)  # before staging; the batch's commit checks again
                taken = _take(folder_fd, accepted[start : start + max_batch], tenant, settings)
            except OverLimit as e:  # the files wait in the folder for a later scan
                log.info("%s: %s; %d files wait", tenant.id, e, len(accepted) - start)
                report.waiting += [name for name, _ in accepted[start:]]
                break
            if taken is None:
                continue
            batch_id, documents = taken
            for name, identity, document_id in documents:
                state.taken[name] = (identity, document_id)
                state.seen.pop(name, None)
            # Committed: from here on the originals are the batch's, kept until it ends.
            state.save(state_path)
            dispatch()
            report.batches.append(batch_id)
    finally:
        os.close(folder_fd)
        state.save(state_path)
    return report


def _screen(
    folder_fd: int,
    candidates: list[tuple[str, Identity]],
    tenant: Tenant,
    max_bytes: int,
    state: FolderState,
    report: IngestReport,
) -> list[tuple[str, Identity]]:
    """The cheap checks and duplicates: which settled files become documents."""
    accepted = []
    for name, identity in candidates:
        stream = _open_regular(folder_fd, name)
        if stream is None:
            continue
        with stream:
            digest, head = _fingerprint(stream)
        kind, reason = check_upload(size=identity[2], head=head, max_bytes=max_bytes)
        earlier = _earlier_copy(tenant.id, digest)
        if reason is not None or kind is None:
            report.rejected[name] = reason or "invalid"
            if _reject(folder_fd, name, reason or "invalid"):
                state.seen.pop(name, None)
        elif earlier is not None and earlier[1] == DocumentStatus.READY:
            # Read already: this copy is done (the earlier one outlived a crash, or the
            # same file was dropped again).
            _remove(folder_fd, [name])
            report.duplicates.append(name)
            state.seen.pop(name, None)
        elif earlier is not None and not earlier[1].is_final:
            # Its batch was committed but the scan that took it did not live to say so.
            state.taken[name] = (identity, earlier[0])
            state.seen.pop(name, None)
            report.waiting.append(name)
        else:  # new, or its earlier copy failed or was cancelled: read it (again)
            accepted.append((name, identity))
    return accepted


def _take(
    folder_fd: int, chunk: list[tuple[str, Identity]], tenant: Tenant, settings: Any
) -> tuple[str, list[tuple[str, Identity, str]]] | None:
    """Stage the files and commit them as one batch; returns its id and documents."""
    with contextlib.ExitStack() as files:
        opened = []
        for name, identity in chunk:
            # Opened again, never through a link, and only if it is the same file.
            stream = _open_regular(folder_fd, name)
            if stream is None:
                continue
            files.enter_context(stream)
            found = os.fstat(stream.fileno())
            if (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns) == identity:
                opened.append((name, identity, stream))
        if not opened:
            return None
        with stage_files([(n, s) for n, _, s in opened], settings) as staged:
            created = create_batch(tenant, staged, source="inbox")
    documents = [
        (name, identity, document_id)
        for (name, identity, _), document_id in zip(opened, created.document_ids, strict=True)
    ]
    return created.batch_id, documents


def _settle_taken(
    folder_fd: int, name: str, document_id: str, state: FolderState, report: IngestReport
) -> None:
    """An ingested original: removed once its document is Ready, set aside with the reason
    once it failed or was cancelled, kept while it is still in progress."""
    with session_scope() as session:
        document = session.get(Document, document_id)
        status, error = (document.status, document.error) if document else (None, None)
    if status == DocumentStatus.READY:
        _remove(folder_fd, [name])
        report.done.append(name)
    elif status is None or status.is_final:
        reason = f"{status.value}: {error}" if status else "its batch no longer exists"
        report.rejected[name] = reason
        if not _reject(folder_fd, name, reason) and (identity := _identity_of(folder_fd, name)):
            # Still here (rejected/ is unusable): still taken, never read again as new.
            state.taken[name] = (identity, document_id)
    else:
        if (identity := _identity_of(folder_fd, name)) is not None:
            state.taken[name] = (identity, document_id)
        report.in_progress.append(name)


def _identity_of(folder_fd: int, name: str) -> Identity | None:
    try:
        stat = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _open_for_writing(files: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which of these files (device, inode) some process holds open for writing.

    Read from /proc: every process this user may inspect (all of them, as root). A file
    still being copied in is held open by its writer, whatever pauses it makes.
    """
    writing: set[tuple[int, int]] = set()
    if not files:
        return writing
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            descriptors = list((process / "fd").iterdir())
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                stat = descriptor.stat()
                if (stat.st_dev, stat.st_ino) not in files:
                    continue
                info = (process / "fdinfo" / descriptor.name).read_text()
                flags = next(
                    int(line.split()[1], 8)
                    for line in info.splitlines()
                    if line.startswith("flags:")
                )
            except (OSError, StopIteration, ValueError):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                writing.add((stat.st_dev, stat.st_ino))
    return writing


LINK_REASON = "a symbolic link: docpipe never follows links in the inbox"
BAD_NAME_REASON = "the file name is not valid UTF-8; left in place (rename it to have it read)"


def _not_utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:  # bytes the file system gave that are not UTF-8
        return True
    return False


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


def _earlier_copy(tenant_id: str, sha256: str) -> tuple[str, DocumentStatus] | None:
    """The newest document the inbox made of these same bytes for this tenant, if any."""
    with session_scope() as session:
        row = session.execute(
            select(Document.id, Document.status)
            .join(Batch, Batch.id == Document.batch_id)
            .where(
                Document.tenant_id == tenant_id,
                Document.sha256 == sha256,
                Batch.source == "inbox",
            )
            .order_by(Document.created_at.desc())
            .limit(1)
        ).first()
    return (row[0], DocumentStatus(row[1])) if row else None


def _leave_notice(folder: Path) -> None:
    """Tell whoever drops files in a folder no tenant has why nothing happens (once)."""
    text = (
        f"docpipe reads nothing in this folder: no tenant is named {safe_name(folder.name)!r}."
        "\n"
        "Files here stay as they are. Put them in your own tenant's folder, or ask the\n"
        "operator to create this tenant (docpipe tenant create <id>).\n"
    )
    try:
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        if _identity_of(folder_fd, NOTICE) is None:
            _put_file(folder_fd, NOTICE, text.encode())
    except OSError as e:
        log.warning("no notice in inbox folder %s: %s", safe_name(folder.name), e.strerror)
    finally:
        os.close(folder_fd)


def _subfolder(parent_fd: int, name: str) -> int:
    """A folder inside this one, made if missing, opened through no link."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)


def _put_file(folder_fd: int, name: str, data: bytes) -> None:
    """Write a file whole under this name: to a new file first, then renamed over whatever
    had the name (a link too, which is replaced, never written through)."""
    partial = f".docpipe-{os.getpid()}-{secrets.token_hex(4)}.partial"  # fits any name's room
    fd = os.open(
        partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=folder_fd
    )
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.rename(partial, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial, dir_fd=folder_fd)
        raise


def _reject(folder_fd: int, name: str, reason: str) -> bool:
    """Move the file to rejected/ with a note of why, through no link, over no link;
    whether it was moved."""
    try:
        rejected_fd = _subfolder(folder_fd, REJECTED)
    except OSError:
        log.warning(
            "rejected/ in the inbox is not a plain folder; %s left in place", safe_name(name)
        )
        return False
    try:
        # A rename replaces whatever has the name there, a link too; it writes through none.
        os.rename(name, name, src_dir_fd=folder_fd, dst_dir_fd=rejected_fd)
    except OSError as e:
        log.warning("could not set %s aside: %s", safe_name(name), e.strerror)
        os.close(rejected_fd)
        return False
    try:
        _put_file(rejected_fd, f"{name}.reason.txt", (reason + "\n").encode())
    except OSError as e:  # a name too long for a note beside it: the file is aside all the same
        log.warning("no reason note for %s: %s", safe_name(name), e.strerror)
    finally:
        os.close(rejected_fd)
    return True


# A folder batch's results, named as they are stored: `scan.png.txt`, `scan.png.ocr.pdf`.
OUTBOX_OUTPUTS = {Output.TEXT, Output.PDF}


def write_results(batch_id: str) -> list[str]:
    """A finished folder batch's results, for the folder's user: each Ready document's text
    as `<outbox>/<tenant>/<original name>.txt` and its searchable PDF as `<name>.ocr.pdf`
    (when the tenant's outputs have it), and `batch-<id>.json` summing the batch up.

    Returns the names written. The outbox, like the inbox, is the tenants' side: nothing
    is written through a link there.
    """
    settings = get_settings()
    if settings.outbox_url:
        from docpipe.inbox_store import write_store_results

        return write_store_results(batch_id)
    if (batch := batch_results(batch_id)) is None:
        return []
    settings.outbox.mkdir(parents=True, exist_ok=True)
    outbox_fd = os.open(settings.outbox, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            folder_fd = _subfolder(outbox_fd, batch.tenant_id)
        except OSError as e:  # a link or a file in its place: written nowhere, said so
            log.warning(
                "the outbox folder of %s is not a plain folder: %s", batch.tenant_id, e.strerror
            )
            return []
        try:
            # A name too long for its suffix is left out, and said so in the summary.
            return batch.write(lambda name, data: _put_file(folder_fd, name, data), OSError)
        finally:
            os.close(folder_fd)
    finally:
        os.close(outbox_fd)


@dataclass
class BatchResults:
    """What a finished folder batch hands back: its documents' outputs and a summary."""

    tenant_id: str
    documents: list[Document]
    summary: dict[str, Any]

    def write(
        self, put: Callable[[str, bytes], None], skipped: type[Exception] | tuple[()] = ()
    ) -> list[str]:
        """Each Ready document's text and searchable PDF, then `batch-<id>.json`, through
        `put(name, data)`; the names written. A document's file whose `put` raises
        `skipped` is logged and shows as null in the summary."""
        storage = get_storage()
        written: list[str] = []
        rows = []
        for document in self.documents:
            names: dict[str, str | None] = {"text": None, "pdf": None}
            if document.status == DocumentStatus.READY:
                for output in sorted(set(document.made_outputs()) & OUTBOX_OUTPUTS):
                    name = f"{document.file_name}{OUTPUT_SUFFIXES[output]}"
                    data = storage.read_bytes(output_key(document.storage_key, output))
                    try:
                        put(name, data)
                    except skipped as e:
                        reason = getattr(e, "strerror", None) or e
                        log.warning("no result file for %s: %s", safe_name(name), reason)
                        continue
                    written.append(name)
                    names[output.value] = name
            rows.append(
                {
                    "fileName": document.file_name,
                    "status": document.status.value,
                    "error": document.error,
                    "pages": document.page_count,
                    **names,
                }
            )
        outcomes = Outcomes.of(d.status for d in self.documents)
        summary = self.summary | {
            "total": outcomes.total,
            "succeeded": outcomes.succeeded,
            "failed": outcomes.failed,
            "cancelled": outcomes.cancelled,
            "documents": rows,
        }
        name = f"batch-{summary['batchId']}.json"
        put(name, json.dumps(summary, indent=2).encode())
        written.append(name)
        return written


def batch_results(batch_id: str) -> BatchResults | None:
    """A batch's documents and the head of its summary; None if it is gone."""
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            return None
        return BatchResults(
            batch.tenant_id,
            list(batch.documents),
            {
                "batchId": batch.id,
                "tenantId": batch.tenant_id,
                "status": batch.status.value,
                "createdAt": batch.created_at.isoformat(),
                "completedAt": batch.completed_at.isoformat() if batch.completed_at else None,
            },
        )
