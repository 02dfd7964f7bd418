"""Document storage behind fsspec: local disk by default, any fsspec URL (s3://...) by setting."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from docpipe.config import get_settings
from docpipe.errors import DocpipeError, StorageUnavailable

log = logging.getLogger(__name__)
UNAVAILABLE = "document storage is unavailable; try again shortly"


@contextlib.contextmanager
def answering(action: str) -> Iterator[None]:
    """A store that does not answer, refuses the credentials or lacks its backend raises
    StorageUnavailable; a key that is not there stays FileNotFoundError."""
    try:
        yield
    except (FileNotFoundError, DocpipeError):
        raise
    except Exception as e:
        # The backend's own words go to the log only (they hold no credentials).
        log.warning("storage: %s failed: %s: %s", action, type(e).__name__, e)
        raise StorageUnavailable(UNAVAILABLE) from e


def open_store(url: str, options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec file system and root path of a store's URL."""
    with answering("opening the store"):
        fs, root = fsspec.core.url_to_fs(url, **options)
    return fs, str(root)


class Storage:
    """Blobs by key. Keys are built by docpipe from ids, never from user input."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.fs, self.root = open_store(url, options or {})
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def check(self) -> None:
        """Raise StorageUnavailable unless the store answers (for /health)."""
        if self.local:
            if not (Path(self.root).is_dir() and os.access(self.root, os.W_OK | os.X_OK)):
                raise StorageUnavailable(UNAVAILABLE)
            return
        bucket = self.root.split("/", 1)[0]
        with answering("a health check"):
            try:
                self.fs.invalidate_cache(bucket)
                self.fs.info(bucket)
            except FileNotFoundError as e:  # no such bucket
                raise StorageUnavailable(UNAVAILABLE) from e

    def _path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}"

    def _atomically(self, key: str, write_to: str) -> None:
        self.fs.mv(write_to, self._path(key))

    def put_file(self, local_path: Path, key: str) -> None:
        """Store a local file under key; readers see all of it or nothing."""
        partial = self._path(f"{key}.partial-{uuid.uuid4().hex}")
        with answering("storing a file"):
            self._ensure_parent(partial)
            self.fs.put_file(str(local_path), partial)
            self._atomically(key, partial)

    def put_bytes(self, data: bytes, key: str) -> None:
        partial = self._path(f"{key}.partial-{uuid.uuid4().hex}")
        with answering("storing a file"):
            self._ensure_parent(partial)
            self.fs.pipe_file(partial, data)
            self._atomically(key, partial)

    def read_bytes(self, key: str) -> bytes:
        with answering("reading a file"):
            data: bytes = self.fs.cat_file(self._path(key))
        return data

    def exists(self, key: str) -> bool:
        with answering("looking for a file"):
            return bool(self.fs.exists(self._path(key)))

    def modified(self, key: str) -> float:
        """When the blob was last written, in seconds since the epoch."""
        with answering("reading a file's time"):
            return float(self.fs.modified(self._path(key)).timestamp())

    def delete(self, key: str) -> None:
        with answering("deleting a file"):
            if self.fs.exists(self._path(key)):
                self.fs.rm_file(self._path(key))

    def delete_folder(self, prefix: str) -> int:
        """Remove every blob under prefix (a batch's folder); returns how many there were."""
        if not prefix.strip("/"):
            raise ValueError("refusing to delete all of storage")
        found = self.keys(prefix)
        if found:
            with answering("deleting a folder"):
                self.fs.rm(self._path(prefix), recursive=True)
        return len(found)

    def keys(self, prefix: str = "") -> list[str]:
        """Every stored key under prefix."""
        base = self._path(prefix).rstrip("/")
        with answering("listing files"):
            # Another machine may have written since this process last listed.
            self.fs.invalidate_cache(base)
            if not self.fs.exists(base):
                return []
            found = self.fs.find(base)
        root = self.root.rstrip("/") + "/"
        return sorted(p.removeprefix(root) for p in found)

    def _ensure_parent(self, path: str) -> None:
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)


@lru_cache
def storage_for(url: str, options: str = "{}") -> Storage:
    """One Storage per URL and options (as JSON: hashable, for the cache)."""
    return Storage(url, json.loads(options))


def get_storage() -> Storage:
    settings = get_settings()
    options = settings.store_options(settings.storage_url)
    return storage_for(settings.storage_url, json.dumps(options, sort_keys=True))


def batch_folder(tenant_id: str, batch_id: str) -> str:
    """Where a batch's originals and their outputs are kept, and nothing else."""
    return f"{tenant_id}/{batch_id}"


def document_key(tenant_id: str, batch_id: str, document_id: str, kind: str) -> str:
    return f"{batch_folder(tenant_id, batch_id)}/{document_id}.{kind}"


# A document's outputs live beside the original: `<original>.txt`, `.ocr.pdf` and so on.
OUTPUT_SUFFIXES = {"text": ".txt", "pdf": ".ocr.pdf", "hocr": ".hocr", "words": ".words.json"}


def output_key(storage_key: str, output: str) -> str:
    return f"{storage_key}{OUTPUT_SUFFIXES[output]}"


def text_key(storage_key: str) -> str:
    """The OCR text lives beside the original."""
    return output_key(storage_key, "text")
