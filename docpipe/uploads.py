"""Stage uploaded files on disk and run the cheap checks on all of them before keeping any."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import TracebackType
from typing import BinaryIO

from docpipe.config import Settings
from docpipe.errors import InvalidUpload
from docpipe.validation import SNIFF_BYTES, check_upload

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StagedFile:
    file_name: str
    path: Path
    size: int
    sha256: str
    kind: str


@dataclass
class StagedBatch:
    """Files waiting on disk to become a batch; removed on exit whatever happens."""

    directory: Path
    files: list[StagedFile] = field(default_factory=list)

    def __enter__(self) -> StagedBatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def clean_file_name(raw: str | None, position: int) -> str:
    """The name to show for an upload: its last path component, never a path."""
    name = PureWindowsPath(PurePosixPath(raw or "").name).name.strip()
    if name in (".", ".."):
        name = ""
    return name[:255] or f"document-{position + 1}"


def stage_files(uploads: Iterable[tuple[str | None, BinaryIO]], settings: Settings) -> StagedBatch:
    """Copy each upload to a staging file, hashing as it goes; reject the lot if any is bad."""
    uploads = list(uploads)
    if not uploads:
        raise InvalidUpload(
            "no files in the request (send one or more parts named 'files')", [], too_large=False
        )
    if len(uploads) > settings.max_batch_documents:
        raise InvalidUpload(
            f"{len(uploads)} files in one batch; the limit is {settings.max_batch_documents}",
            [],
            too_large=False,
        )
    settings.staging_dir.mkdir(parents=True, exist_ok=True)
    staged = StagedBatch(Path(tempfile.mkdtemp(prefix="batch-", dir=settings.staging_dir)))
    invalid: list[tuple[str, str]] = []
    too_large = False
    try:
        for position, (raw_name, stream) in enumerate(uploads):
            name = clean_file_name(raw_name, position)
            path = staged.directory / f"{position:04d}"
            size, digest, head = _copy_limited(stream, path, settings.max_file_bytes)
            kind, reason = check_upload(size=size, head=head, max_bytes=settings.max_file_bytes)
            if reason is not None or kind is None:
                invalid.append((name, reason or "invalid"))
                too_large = too_large or size > settings.max_file_bytes
                path.unlink(missing_ok=True)
                continue
            staged.files.append(StagedFile(name, path, size, digest, kind))
    except BaseException:
        staged.__exit__(None, None, None)
        raise
    if invalid:
        staged.__exit__(None, None, None)
        noun = "file" if len(invalid) == 1 else "files"
        raise InvalidUpload(
            f"{len(invalid)} invalid {noun}; nothing was stored", invalid, too_large=too_large
        )
    return staged


def _copy_limited(stream: BinaryIO, path: Path, max_bytes: int) -> tuple[int, str, bytes]:
    """Copy in chunks; past max_bytes keep counting but stop writing."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    with path.open("wb") as out:
        while chunk := stream.read(CHUNK):
            if len(head) < SNIFF_BYTES:
                head = (head + chunk)[:SNIFF_BYTES]
            size += len(chunk)
            if size <= max_bytes:
                out.write(chunk)
                digest.update(chunk)
    return size, digest.hexdigest(), head
