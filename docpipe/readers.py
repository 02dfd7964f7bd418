"""Every decoding of a tenant's file, done by a child process (docpipe.reader_server).

A PDF's deep check (pypdf), its pages drawn (PDFium), an image's frames decoded (Pillow,
over libpng, libjpeg and libtiff) and the searchable PDF made of either all run in the
reader: a long-lived child per thread, bounded in time (each request) and memory (its
address space). A file that crashes or hangs its reader fails its own document, with the
reason, and the next document gets a new reader: the flow run and the rest of the batch
never notice. The flow run itself only reads headers (docpipe.validation).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import tempfile
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docpipe.children import ChildDied, Children, ChildTimedOut
from docpipe.errors import InvalidDocument, OcrFailed, OcrInterrupted, fit_for_tenant

if TYPE_CHECKING:
    from docpipe.outputs import TextLayer

# The reader's address space: room for Python and PDFium, and for the largest page the
# limits let through, a few times over: a 16-bit grey page is scaled to 8 bits in
# float64 arrays, 8 bytes a pixel, up to three at once. A PDF's page needs far less (it
# is drawn in 8-bit grey), so the reader holds itself to less while it reads a PDF: a
# PDF drawing more than its page (an image far larger than the page) fails sooner.
BASE_MEMORY_BYTES = 2 * 1024**3
BYTES_PER_PAGE_PIXEL = 32
BYTES_PER_PDF_PAGE_PIXEL = 8


def _memory_limits() -> list[str]:
    from docpipe.config import get_settings

    pixels = get_settings().max_image_pixels
    return [
        str(BASE_MEMORY_BYTES + BYTES_PER_PAGE_PIXEL * pixels),
        str(BASE_MEMORY_BYTES + BYTES_PER_PDF_PAGE_PIXEL * pixels),
    ]


_readers = Children(
    "docpipe.reader_server",
    _memory_limits,
    # A maths library's thread per core would spend the address space it is capped at.
    env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    cwd=tempfile.gettempdir,  # the run's page folder, once docpipe.ocr has chosen it
)


def inspect_pdf(
    data: bytes,
    *,
    max_pages: int,
    max_pixels: int,
    budget: int,
    dpi: int,
    max_content: int,
    timeout: float,
) -> int:
    """pypdf's deep check of the PDF (docpipe.validation.inspect_pdf); its page count."""
    request = {"do": "inspect", "max_pages": max_pages, "max_pixels": max_pixels,
               "budget": budget, "dpi": dpi, "max_content": max_content}  # fmt: skip
    return _deep_check(data, ".pdf", request, timeout=timeout)


def inspect_image(
    data: bytes, *, kind: str, max_pages: int, max_pixels: int, budget: int, timeout: float
) -> int:
    """The deep check of an image (docpipe.validation.inspect_image); its page count."""
    request = {"do": "inspect_image", "kind": kind, "max_pages": max_pages,
               "max_pixels": max_pixels, "budget": budget}  # fmt: skip
    return _deep_check(data, ".image", request, timeout=timeout)


def _deep_check(data: bytes, suffix: str, request: dict[str, Any], *, timeout: float) -> int:
    """The reader's deep check of the file; its page count. A failure is the file's."""
    with _on_disk(data, suffix) as path:
        reply = _ask(
            {**request, "path": path},
            timeout=timeout,
            doing="checking it",
            failure=InvalidDocument,
        )
    return _count(reply, "pages")


def render_pdf(
    data: bytes,
    *,
    dpi: int,
    timeout: float,
    check: Callable[[list[tuple[float, float]]], None],
) -> Generator[Path, None, None]:
    """Each page drawn in grey at `dpi`, as a BMP file the caller removes once read.

    PDFium's own page sizes (points) go to `check` before any page is drawn: one PDF can
    read differently to pypdf and to PDFium.
    """
    with _on_disk(data) as path, _let_go_if_stopped():
        sizes = _ask({"do": "sizes", "path": path}, timeout=timeout, doing="opening it")["sizes"]
        check([(float(width), float(height)) for width, height in sizes])
        for index in range(len(sizes)):
            request = {"do": "render", "path": path, "index": index, "dpi": dpi}
            page, _ = _page_file(request, doing=f"drawing page {index + 1}", timeout=timeout)
            yield page


def decode_image(
    data: bytes, *, dpi: int, timeout: float
) -> Generator[tuple[Path, int], None, None]:
    """Each frame of an image decoded, in a mode Tesseract reads, as a BMP file the caller
    removes once read; with its resolution (its own if a scan could have it, else `dpi`).
    A frame that does not decode raises InvalidDocument, as the deep check would."""
    with _on_disk(data, ".image") as path, _let_go_if_stopped():
        reply = _ask(
            {"do": "frames", "path": path},
            timeout=timeout,
            doing="opening it",
            failure=InvalidDocument,
        )
        frames = _count(reply, "frames")
        for index in range(frames):
            request = {"do": "decode", "path": path, "index": index, "dpi": dpi}
            yield _page_file(
                request,
                doing=f"decoding page {index + 1}",
                timeout=timeout,
                failure=InvalidDocument,
                field="dpi",
            )


@contextlib.contextmanager
def _let_go_if_stopped() -> Iterator[None]:
    """A document stopped before its last page (it failed here, or the caller stopped
    reading it): the reader lets it go now, not when the next document comes."""
    try:
        yield
    except BaseException:
        if _readers.running():  # one that failed a request has gone, and its document too
            with contextlib.suppress(Exception):
                _readers.ask({"do": "forget"}, timeout=5)
        raise


def searchable(original: bytes, *, kind: str, pages: Sequence[TextLayer], timeout: float) -> bytes:
    """The searchable PDF of the document (docpipe.outputs.searchable_pdf, in the reader):
    a PDF's own pages, or pages holding an image's frames, each with its text over it."""
    layers = [
        {"pdf": base64.b64encode(page.pdf or b"").decode(), "dpi": page.dpi,
         "rotation": page.rotation, "skew": page.skew}
        for page in pages
    ]  # fmt: skip
    with _on_disk(original, f".{kind}") as path:
        out = Path(_new_file(".pdf"))
        try:
            _ask(
                {"do": "searchable", "path": path, "kind": kind, "out": str(out), "layers": layers},
                timeout=timeout,
                doing="making its searchable PDF",
            )
            return out.read_bytes()
        finally:
            out.unlink(missing_ok=True)


def _page_file(
    request: dict[str, Any],
    *,
    doing: str,
    timeout: float,
    failure: type[Exception] = OcrFailed,
    field: str | None = None,
) -> tuple[Path, int]:
    """A page the reader writes to a new file of ours (removed if it fails), and the whole
    number it answers in `field` with it (0 without one)."""
    out = _new_file(".bmp")
    try:
        reply = _ask({**request, "out": out}, timeout=timeout, doing=doing, failure=failure)
        return Path(out), _count(reply, field) if field else 0
    except BaseException:
        Path(out).unlink(missing_ok=True)
        raise


def _ask(
    request: dict[str, Any],
    *,
    timeout: float,
    doing: str,
    failure: type[Exception] = OcrFailed,
) -> dict[str, Any]:
    """The reader's answer; its refusal, its death or its silence as the document's failure."""
    try:
        reply = _readers.ask(request, timeout=timeout)
    except ChildTimedOut as e:
        raise failure(f"the file took longer than {timeout:g} s {doing}") from e
    except ChildDied as e:
        if e.status == -signal.SIGTERM:
            # Stopped from outside (a cancel, a shutdown: no file sends it that), so not
            # the document's failure: the task may try it again, or end as the run does.
            raise OcrInterrupted(f"the file's reader was stopped {doing} ({e})") from e
        raise failure(f"the file's reader died {doing} ({e})") from e
    if "invalid" in reply:
        raise InvalidDocument(_clean(reply["invalid"]))
    if "failed" in reply:
        raise OcrFailed(_clean(reply["failed"]))
    if "error" in reply:
        raise failure(f"the file's reader failed {doing}: {_clean(reply['error'])}")
    return reply


def _count(reply: dict[str, Any], field: str) -> int:
    """A whole number the reader answered; a reader that answers otherwise has failed."""
    value = reply.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OcrFailed(f"the file's reader answered no {field}")
    return value


def _clean(said: object) -> str:
    """A reader's reason as a tenant may see it: short, and naming no folder of ours."""
    return fit_for_tenant(str(said).replace(tempfile.gettempdir(), "")) or "no reason given"


@contextlib.contextmanager
def _on_disk(data: bytes, suffix: str = ".pdf") -> Iterator[str]:
    """The bytes as a file in the run's page folder (the reader's working folder)."""
    path = _new_file(suffix)
    try:
        Path(path).write_bytes(data)
        yield path
    finally:
        Path(path).unlink(missing_ok=True)


def _new_file(suffix: str) -> str:
    """A new empty file of ours for the reader to write: made here, so no one else's."""
    handle, path = tempfile.mkstemp(suffix=suffix)
    os.close(handle)
    return path
