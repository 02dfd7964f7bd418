"""The only module that calls Tesseract (through pytesseract) and rasterises PDFs."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
import pytesseract
from PIL import Image

from docpipe.errors import OcrFailed, OcrInterrupted

# PDFium is not thread-safe; rendering is quick next to OCR, so one lock is enough.
_PDFIUM_LOCK = threading.Lock()
PAGE_SEPARATOR = "\f"


@dataclass(frozen=True)
class OcrResult:
    text: str
    pages: int
    seconds: float


def ocr_document(
    data: bytes,
    *,
    kind: str,
    language: str,
    dpi: int,
    page_timeout: float,
    niceness: int = 0,
) -> OcrResult:
    """OCR every page of a PDF or image; raise OcrFailed if Tesseract cannot."""
    started = time.perf_counter()
    _run_at_niceness(niceness)
    # Tesseract's OpenMP threads fight each other when several pages run at once;
    # one thread per process and one process per core is measurably faster.
    os.environ["OMP_THREAD_LIMIT"] = "1"
    texts = [
        _ocr_page(page, language=language, timeout=page_timeout)
        for page in _pages(data, kind=kind, dpi=dpi)
    ]
    return OcrResult(PAGE_SEPARATOR.join(texts), len(texts), time.perf_counter() - started)


def tesseract_version() -> str:
    try:
        return str(pytesseract.get_tesseract_version())
    except pytesseract.TesseractNotFoundError as e:
        raise OcrFailed("tesseract is not installed or not on PATH") from e


def _pages(data: bytes, *, kind: str, dpi: int) -> Iterator[Image.Image | Path]:
    if kind == "pdf":
        yield from _render_pdf(data, dpi=dpi)
        return
    # Images go to Tesseract as they are: no decode and re-encode on our side.
    with tempfile.TemporaryDirectory(prefix="docpipe-ocr-") as tmp:
        path = Path(tmp) / f"page.{kind}"
        path.write_bytes(data)
        yield path


def _render_pdf(data: bytes, *, dpi: int) -> Iterator[Image.Image]:
    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
            count = len(pdf)
        except pdfium.PdfiumError as e:
            raise OcrFailed(f"PDF does not render: {e}") from e
    try:
        for index in range(count):
            with _PDFIUM_LOCK:
                try:
                    page = pdf[index]
                    image = page.render(scale=dpi / 72, grayscale=True).to_pil()
                    page.close()
                except pdfium.PdfiumError as e:
                    raise OcrFailed(f"page {index + 1} does not render: {e}") from e
            # Hand Tesseract an uncompressed file: PNG encoding costs more than it saves.
            image.format = "PPM"
            yield image
    finally:
        with _PDFIUM_LOCK:
            pdf.close()


def _ocr_page(page: Image.Image | Path, *, language: str, timeout: float) -> str:
    source = str(page) if isinstance(page, Path) else page
    try:
        text: str = pytesseract.image_to_string(source, lang=language, timeout=timeout)
    except pytesseract.TesseractNotFoundError as e:
        raise OcrFailed("tesseract is not installed or not on PATH") from e
    except pytesseract.TesseractError as e:  # a RuntimeError too: it must come first
        if isinstance(e.status, int) and e.status < 0:  # killed by a signal
            raise OcrInterrupted(f"Tesseract was killed by signal {-e.status}") from e
        raise OcrFailed(f"Tesseract failed: {str(e.message).strip() or e.status}") from e
    except RuntimeError as e:  # pytesseract's timeout
        if "timeout" in str(e).lower():
            raise OcrFailed(f"Tesseract took longer than {timeout:g} s on a page") from e
        raise OcrFailed(f"Tesseract failed: {e}") from e
    return text.strip()


def lower_process_priority(niceness: int) -> None:
    """Run this process, and the Tesseract processes it starts, at a lower CPU priority.

    Linux's autogroup scheduler shares the CPU fairly between sessions whatever their
    processes' nice values, and every flow run is a session of its own: so the
    session's autogroup gets the niceness too, or a VIP run would not get ahead.
    """
    if niceness <= 0:
        return
    with contextlib.suppress(OSError):
        if os.getpriority(os.PRIO_PROCESS, 0) < niceness:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
    autogroup = Path("/proc/self/autogroup")
    with contextlib.suppress(OSError):
        if autogroup.exists():
            autogroup.write_text(str(niceness))


def _run_at_niceness(niceness: int) -> None:
    """Set this thread's niceness; Tesseract processes it starts inherit it."""
    if niceness <= 0:
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):
        current = os.getpriority(os.PRIO_PROCESS, thread)
        if current < niceness:
            os.setpriority(os.PRIO_PROCESS, thread, niceness)
