"""A tenant's file is decoded (pypdf, PDFium, Pillow) by a child process of its own: a
file that crashes or hangs its reader fails that document only, with the reason.

The faults are injected into the real reader with signals: SIGSEGV is what a crash in
PDFium or libtiff is, SIGSTOP what a reader going round for ever looks like from outside.
"""

from __future__ import annotations

import contextlib
import io
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from docpipe import readers
from docpipe.errors import InvalidDocument, OcrFailed, OcrInterrupted
from docpipe.ocr import ocr_document
from docpipe.readers import BASE_MEMORY_BYTES, BYTES_PER_PAGE_PIXEL, BYTES_PER_PDF_PAGE_PIXEL
from docpipe.validation import inspect_document
from tests import documents
from tests.helpers import post_batch, wait_for_batch
from tests.hostile import png_chunk

pytestmark = pytest.mark.e2e

OPTIONS: dict[str, Any] = {"language": "eng", "dpi": 300, "page_timeout": 60.0}
LIMITS: dict[str, Any] = {"max_pages": 100, "max_pixels": 100_000_000}


def _readers(under: Path | None = None) -> set[int]:
    """The readers running: this process's own, or any working under `under`."""
    found = set()
    candidates = psutil.process_iter() if under else psutil.Process().children(recursive=True)
    for proc in candidates:
        try:
            if "docpipe.reader_server" not in " ".join(proc.cmdline()):
                continue
            if under is None or Path(proc.cwd()).is_relative_to(under):
                found.add(proc.pid)
        except psutil.Error:
            continue
    return found


def _when_a_reader_starts(
    crash: Any, *, under: Path | None = None, holding: str = "", timeout: float = 120
) -> None:
    """Call `crash(reader)` in the background as soon as a new reader is running (and has
    a file ending in `holding` open)."""
    before = _readers(under)

    def holds(pid: int) -> bool:
        with contextlib.suppress(psutil.Error):
            return any(f.path.endswith(holding) for f in psutil.Process(pid).open_files())
        return False

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if new := [pid for pid in _readers(under) - before if not holding or holds(pid)]:
                with contextlib.suppress(psutil.Error):
                    crash(psutil.Process(new[0]))
                return
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()


def _this_threads_reader() -> psutil.Process:
    child = readers._readers._local.child
    assert child is not None and child.poll() is None
    return psutil.Process(child.pid)


def _crash_then_read(data: bytes, kind: str, texts: list[str], fails_as: type[Exception]) -> None:
    """The reader crashes on the document: it fails as `fails_as`, saying so; read again
    by a new reader, every page comes back."""
    readers._readers.close()  # the crash is for a reader started by this test
    _when_a_reader_starts(lambda reader: reader.send_signal(signal.SIGSEGV))
    with pytest.raises(fails_as, match=r"the file's reader died .*killed by signal 11"):
        ocr_document(data, kind=kind, engine="api", **OPTIONS)
    result = ocr_document(data, kind=kind, engine="api", **OPTIONS)
    assert result.page_count == len(texts)
    for expected, page in zip(texts, result.pages, strict=True):
        assert documents.words(expected) <= documents.words(page.text)


def test_a_reader_that_crashes_fails_its_pdf_only_and_the_next_pdf_reads() -> None:
    texts = [documents.phrase(40 + i) for i in range(6)]
    _crash_then_read(documents.multipage_pdf(texts), "pdf", texts, OcrFailed)


def test_a_reader_that_crashes_on_an_image_fails_it_as_not_decoding_and_the_next_reads() -> None:
    """libtiff and friends run in the reader too: a crash there is the image's failure."""
    texts = [documents.phrase(80 + i) for i in range(4)]
    frames = [documents.page_image([text]) for text in texts]
    tiff = io.BytesIO()
    frames[0].save(tiff, "TIFF", save_all=True, append_images=frames[1:], compression="tiff_lzw")
    _crash_then_read(tiff.getvalue(), "tiff", texts, InvalidDocument)


@pytest.mark.parametrize("kind", ["pdf", "tiff"])
def test_a_reader_stopped_from_outside_is_not_the_files_failure(kind: str) -> None:
    """SIGTERM is a cancel or a shutdown, which no file can send: the document may be tried
    again (OcrInterrupted), not failed for it."""
    texts = [documents.phrase(90 + i) for i in range(3)]
    if kind == "pdf":
        data = documents.multipage_pdf(texts)
    else:
        frames = [documents.page_image([text]) for text in texts]
        tiff = io.BytesIO()
        frames[0].save(tiff, "TIFF", save_all=True, append_images=frames[1:])
        data = tiff.getvalue()
    readers._readers.close()
    _when_a_reader_starts(lambda reader: reader.send_signal(signal.SIGTERM))
    with pytest.raises(OcrInterrupted, match=r"the file's reader was stopped .*signal 15"):
        ocr_document(data, kind=kind, engine="api", **OPTIONS)
    assert ocr_document(data, kind=kind, engine="api", **OPTIONS).page_count == len(texts)


@pytest.mark.parametrize("kind", ["pdf", "png", "tiff"])
def test_a_reader_that_hangs_is_killed_at_the_timeout_and_replaced(kind: str) -> None:
    """Every deep check, an image's too, is the reader's: its hang is the document's."""
    if kind == "pdf":
        data = documents.multipage_pdf([documents.phrase(50)])
    else:
        data = documents.encode(documents.page_image([documents.phrase(50)]), kind)
    inspect_document(data, kind=kind, dpi=300, timeout=60, **LIMITS)
    reader = _this_threads_reader()
    reader.suspend()  # from outside, a reader going round for ever
    started = time.monotonic()
    with pytest.raises(InvalidDocument, match=r"the file took longer than 2 s checking it"):
        inspect_document(data, kind=kind, dpi=300, timeout=2, **LIMITS)
    assert time.monotonic() - started < 30
    assert not reader.is_running() or reader.status() == psutil.STATUS_ZOMBIE
    assert inspect_document(data, kind=kind, dpi=300, timeout=60, **LIMITS).page_count == 1


def test_a_png_of_millions_of_empty_chunks_is_stopped_at_the_timeout() -> None:
    """Reading every chunk of a PNG crafted to hold millions takes seconds: the check's
    timeout, not the flow run's patience, bounds it."""
    good = documents.encode(documents.page_image([documents.phrase(51)]), "png")
    end = good.rindex(b"IEND") - 4
    flood = png_chunk(b"laZy", b"") * 3_000_000  # 36 MB of chunks saying nothing: 7 s here
    with pytest.raises(InvalidDocument, match=r"the file took longer than 1 s checking it"):
        inspect_document(good[:end] + flood + good[end:], kind="png", dpi=300, timeout=1, **LIMITS)


def test_the_reader_caps_its_memory_leaves_no_core_and_holds_no_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from docpipe.config import get_settings

    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "admin:secret")
    readers._readers.close()  # a reader started with that in the flow run's environment
    inspect_document(documents.multipage_pdf(["x"]), kind="pdf", dpi=300, timeout=60, **LIMITS)
    reader = _this_threads_reader()
    soft, hard = reader.rlimit(psutil.RLIMIT_AS)
    pixels = get_settings().max_image_pixels
    assert hard == BASE_MEMORY_BYTES + BYTES_PER_PAGE_PIXEL * pixels
    assert soft == BASE_MEMORY_BYTES + BYTES_PER_PDF_PAGE_PIXEL * pixels  # a PDF's, less
    inspect_document(documents.document("x", "png"), kind="png", timeout=60, **LIMITS)
    assert reader.rlimit(psutil.RLIMIT_AS) == (hard, hard)  # an image's, the most
    # A crash leaves no core file: it would hold pages of tenants' documents.
    assert reader.rlimit(psutil.RLIMIT_CORE) == (0, 0)
    assert not [name for name in reader.environ() if name.startswith(("PREFECT_", "DOCPIPE_"))]


def test_in_a_batch_a_pdf_that_crashes_its_reader_fails_alone(
    stack: Any, api: httpx.Client, tenant: tuple[str, str]
) -> None:
    """The crash costs the reader, not the flow run: the PDF fails with the reason, every
    other document of the batch is Ready, and the batch Completes."""
    tenant_id, key = tenant
    pdf = documents.multipage_pdf([documents.phrase(60 + i) for i in range(12)])
    images = [(f"page-{i}.png", documents.document(documents.phrase(i), "png")) for i in range(4)]
    home = stack.settings.home
    # The reader of the PDF, once PDFium holds it open: the images' readers start too.
    _when_a_reader_starts(lambda r: r.send_signal(signal.SIGSEGV), under=home, holding=".pdf")
    batch_id = post_batch(api, tenant_id, key, [("hostile.pdf", pdf), *images])
    batch = wait_for_batch(api, key, batch_id)
    assert batch["status"] == "Completed"
    by_name = {d["fileName"]: d for d in batch["documents"]}
    # Dead while checking it (ValidationFailed) or drawing it (OcrFailed): where it lands.
    assert by_name["hostile.pdf"]["status"] in ("ValidationFailed", "OcrFailed")
    assert "the file's reader died" in by_name["hostile.pdf"]["error"]
    assert str(home) not in by_name["hostile.pdf"]["error"]
    assert all(by_name[name]["status"] == "Ready" for name, _ in images)
    assert (batch["successCount"], batch["failureCount"]) == (4, 1)


def test_a_reason_names_no_file_of_ours() -> None:
    """Pillow names the file it could not open; the reader hands it a copy in the run's
    page folder, whose name is nobody's business."""
    damaged = b"II*\x00" + b"\x08\x00\x00\x00" + b"\xff" * 64
    with pytest.raises(InvalidDocument) as raised:
        list(readers.decode_image(damaged, dpi=300, timeout=60))
    reason = str(raised.value)
    assert reason.startswith("image does not decode")
    assert not re.search(r"tmp|/|\.image\b", reason), reason


def _holds(reader: psutil.Process, suffix: str) -> list[str]:
    """The files of ours the reader has open, removed ones too (psutil leaves those out)."""
    fds = Path(f"/proc/{reader.pid}/fd")
    held = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            held.append(str(fd.readlink()).removesuffix(" (deleted)"))
    return [path for path in held if path.endswith(suffix)]


def test_a_document_stopped_before_its_end_is_let_go_at_once() -> None:
    """A PDF refused after its sizes were read (over a limit), or a document whose OCR
    stopped at its first page, is closed in the reader then: it no longer holds the
    deleted file's disk space and the decoder's memory until another document comes."""
    data = documents.multipage_pdf([documents.phrase(70 + i) for i in range(3)])

    def refuse(sizes: list[tuple[float, float]]) -> None:
        raise InvalidDocument("over a limit")

    with pytest.raises(InvalidDocument):
        list(readers.render_pdf(data, dpi=100, timeout=60, check=refuse))
    assert not _holds(_this_threads_reader(), ".pdf")

    pages = readers.render_pdf(data, dpi=100, timeout=60, check=lambda sizes: None)
    next(pages).unlink()
    assert _holds(_this_threads_reader(), ".pdf")  # open while its pages are read
    pages.close()  # the caller stops: its first page failed
    assert not _holds(_this_threads_reader(), ".pdf")
