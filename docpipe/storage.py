"""Document storage behind fsspec: local disk by default, any fsspec URL (s3://...) by setting."""

from __future__ import annotations

import uuid
from functools import lru_cache
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from docpipe.config import get_settings


class Storage:
    """Blobs by key. Keys are built by docpipe from ids, never from user input."""

    def __init__(self, url: str) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(url)
        if isinstance(self.fs, LocalFileSystem):
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}"

    def _atomically(self, key: str, write_to: str) -> None:
        self.fs.mv(write_to, self._path(key))

    def put_file(self, local_path: Path, key: str) -> None:
        """Store a local file under key; readers see all of it or nothing."""
        partial = self._path(f"{key}.partial-{uuid.uuid4().hex}")
        self._ensure_parent(partial)
        self.fs.put_file(str(local_path), partial)
        self._atomically(key, partial)

    def put_bytes(self, data: bytes, key: str) -> None:
        partial = self._path(f"{key}.partial-{uuid.uuid4().hex}")
        self._ensure_parent(partial)
        self.fs.pipe_file(partial, data)
        self._atomically(key, partial)

    def read_bytes(self, key: str) -> bytes:
        data: bytes = self.fs.cat_file(self._path(key))
        return data

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def modified(self, key: str) -> float:
        """When the blob was last written, in seconds since the epoch."""
        return float(self.fs.modified(self._path(key)).timestamp())

    def delete(self, key: str) -> None:
        if self.fs.exists(self._path(key)):
            self.fs.rm_file(self._path(key))

    def delete_folder(self, prefix: str) -> int:
        """Remove every blob under prefix (a batch's folder); returns how many there were."""
        if not prefix.strip("/"):
            raise ValueError("refusing to delete all of storage")
        found = self.keys(prefix)
        if found:
            self.fs.rm(self._path(prefix), recursive=True)
        return len(found)

    def keys(self, prefix: str = "") -> list[str]:
        """Every stored key under prefix."""
        base = self._path(prefix).rstrip("/")
        if not self.fs.exists(base):
            return []
        root = self.root.rstrip("/") + "/"
        return sorted(p.removeprefix(root) for p in self.fs.find(base))

    def _ensure_parent(self, path: str) -> None:
        if isinstance(self.fs, LocalFileSystem):
            Path(path).parent.mkdir(parents=True, exist_ok=True)


@lru_cache
def storage_for(url: str) -> Storage:
    return Storage(url)


def get_storage() -> Storage:
    return storage_for(get_settings().storage_url)


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
