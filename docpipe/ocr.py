"""The only module that calls Tesseract (through pytesseract) and rasterises PDFs."""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import shutil
import signal
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pypdfium2 as pdfium
import pytesseract
from PIL import Image

from docpipe.errors import InvalidDocument, OcrFailed, OcrInterrupted
from docpipe.validation import describe_error, page_pixels, pdf_header_offset

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
    max_page_pixels: int | None = None,
    max_pages: int | None = None,
    max_document_pixels: int | None = None,
    scratch: Path | None = None,
) -> OcrResult:
    """OCR every page of a PDF or image; raise OcrFailed if Tesseract cannot.

    Tesseract is only ever given pages docpipe decoded itself (PDF pages rendered by
    PDFium, image frames decoded by Pillow), one at a time and each with its own
    timeout: never the uploaded file, whose format quirks (a TIFF whose pages loop, a
    damaged JPEG) its own readers would meet. A page that does not decode raises
    InvalidDocument. Its temporary files go under `scratch`.
    """
    started = time.perf_counter()
    if scratch is not None:
        use_scratch(scratch)
    _run_at_niceness(niceness)
    # Tesseract's OpenMP threads fight each other when several pages run at once;
    # one thread per process and one process per core is measurably faster.
    os.environ["OMP_THREAD_LIMIT"] = "1"
    limits = PageLimits(max_page_pixels, max_pages, max_document_pixels)
    texts = [
        _ocr_page(page, language=language, timeout=page_timeout)
        for page in _pages(data, kind=kind, dpi=dpi, limits=limits)
    ]
    return OcrResult(PAGE_SEPARATOR.join(texts), len(texts), time.perf_counter() - started)


def tesseract_version() -> str:
    try:
        return str(pytesseract.get_tesseract_version())
    except pytesseract.TesseractNotFoundError as e:
        raise OcrFailed("tesseract is not installed or not on PATH") from e


@dataclass(frozen=True)
class PageLimits:
    """The deep check's bounds, held again where the work is done: a reader other than
    the one that checked may see a different document in the same bytes."""

    page_pixels: int | None = None
    pages: int | None = None
    document_pixels: int | None = None

    def check(self, number: int, pixels: int, total: int, dpi: int) -> None:
        if self.pages is not None and number > self.pages:
            raise InvalidDocument(f"over {self.pages} pages; the limit is {self.pages}")
        if self.page_pixels is not None and pixels > self.page_pixels:
            raise InvalidDocument(
                f"page {number} is {pixels} pixels at {dpi} dpi; the limit is {self.page_pixels}"
            )
        if self.document_pixels is not None and total > self.document_pixels:
            raise InvalidDocument(
                f"the pages come to over {self.document_pixels} pixels at {dpi} dpi; that is "
                "the limit for one document"
            )


def _pages(data: bytes, *, kind: str, dpi: int, limits: PageLimits) -> Iterator[Image.Image]:
    if kind == "pdf":
        yield from _render_pdf(data, dpi=dpi, limits=limits)
    else:
        yield from _decode_frames(data)


def _decode_frames(data: bytes) -> Iterator[Image.Image]:
    """Each frame of an image, decoded, in a mode Tesseract reads from an uncompressed file."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            for index in range(getattr(image, "n_frames", 1)):
                image.seek(index)
                frame = image if image.mode in ("1", "L", "RGB") else image.convert("RGB")
                frame.load()
                page = frame.copy()
                page.format = "PPM"  # no PNG encoding that Tesseract would only undo
                yield page
    except (OSError, ValueError, SyntaxError, struct.error) as e:
        raise InvalidDocument(f"image does not decode: {describe_error(e)}") from e


def _render_pdf(data: bytes, *, dpi: int, limits: PageLimits) -> Iterator[Image.Image]:
    # From the header on, as the deep check (pypdf) read it.
    data = data[pdf_header_offset(data) or 0 :]
    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
            count = len(pdf)
        except pdfium.PdfiumError as e:
            raise OcrFailed(f"PDF does not render: {e}") from e
    try:
        # PDFium's idea of the pages is the one that costs: checked before any is drawn.
        with _PDFIUM_LOCK:
            sizes = [pdf.get_page_size(index) for index in range(count)]
        total = 0
        for number, (width, height) in enumerate(sizes, start=1):
            pixels = page_pixels(width, height, dpi)
            total += pixels
            limits.check(number, pixels, total, dpi)
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


_scratch_lock = threading.Lock()
_scratch: Path | None = None


def use_scratch(root: Path) -> Path:
    """Make root/<this process> the folder of this process's temporary files; once.

    A run killed outright (SIGKILL, a crash) cannot remove its temporary files, which
    are whole uncompressed pages; the next process to start here removes the folders of
    processes that are gone.
    """
    global _scratch
    with _scratch_lock:
        if _scratch is None:
            root.mkdir(parents=True, exist_ok=True)
            for folder in root.glob("run-*"):
                if not _is_alive(folder.name):
                    shutil.rmtree(folder, ignore_errors=True)
            me = psutil.Process()
            _scratch = root / f"run-{me.pid}-{int(me.create_time() * 1000)}"
            _scratch.mkdir(exist_ok=True)
            tempfile.tempdir = str(_scratch)
        return _scratch


def _is_alive(name: str) -> bool:
    """Whether the process a scratch folder is named after still runs (pids are reused)."""
    try:
        _, pid, created = name.split("-")
        return int(psutil.Process(int(pid)).create_time() * 1000) == int(created)
    except (ValueError, psutil.Error):
        return False


def _die_with_parent() -> None:
    """In a Tesseract child, before exec: die when the flow run that started it dies."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
_prctl: Any
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved now, not in the child
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _subprocess_args(include_stdout: bool = True) -> dict[str, Any]:
    args: dict[str, Any] = _pytesseract_subprocess_args(include_stdout)
    if _prctl is not None:
        args["preexec_fn"] = _die_with_parent
    return args


# pytesseract starts Tesseract with these arguments: a run killed outright (SIGKILL, a
# crash) no longer leaves its Tesseract processes reading pages for their full timeout.
_pytesseract_subprocess_args = pytesseract.pytesseract.subprocess_args
pytesseract.pytesseract.subprocess_args = _subprocess_args


def _ocr_page(page: Image.Image, *, language: str, timeout: float) -> str:
    try:
        text: str = pytesseract.image_to_string(page, lang=language, timeout=timeout)
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
