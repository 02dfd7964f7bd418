"""docpipe.ocr against the real Tesseract, on pages with known text, through both engines."""

from __future__ import annotations

import contextlib
import shutil
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from docpipe import ocr
from docpipe.errors import OcrFailed, UnknownLanguage
from docpipe.ocr import PAGE_SEPARATOR, check_languages, ocr_document, tesseract_version
from tests import documents
from tests.helpers import is_tesseract

pytestmark = pytest.mark.e2e

OPTIONS: dict[str, Any] = {"language": "eng", "dpi": 300, "page_timeout": 60.0}


@pytest.fixture(params=["api", "cli"])
def engine(request: pytest.FixtureRequest) -> str:
    """Tesseract's library in a child process (tesserocr), and its program (pytesseract)."""
    return str(request.param)


@pytest.mark.parametrize("kind", ["pdf", "png", "jpeg", "tiff"])
def test_reads_the_words_drawn_on_the_page(kind: str, engine: str) -> None:
    text = documents.phrase(7)
    data = documents.document(text, kind, seed=7)
    result = ocr_document(data, kind=kind, engine=engine, pdf=True, **OPTIONS)
    assert result.page_count == 1
    assert documents.words(text) <= documents.words(result.text)


def test_the_version_named_at_start_is_the_one_that_reads(engine: str) -> None:
    """`docpipe up` names the Tesseract of its engine: the in-process library and Debian's
    program are different releases, and the hOCR a tenant downloads names the one that read."""
    result = ocr_document(
        documents.document("Version", "png"), kind="png", engine=engine, **OPTIONS
    )

    named = tesseract_version(engine).split()[0]
    assert f"content='tesseract {named}'" in result.pages[0].hocr


def test_pdf_pages_come_back_in_order_separated(engine: str) -> None:
    texts = [documents.phrase(i) for i in range(3)]
    result = ocr_document(documents.multipage_pdf(texts), kind="pdf", engine=engine, **OPTIONS)
    assert result.page_count == 3
    pages = result.text.split(PAGE_SEPARATOR)
    assert len(pages) == 3
    for expected, got in zip(texts, pages, strict=True):
        assert documents.words(expected) <= documents.words(got)


def test_a_page_that_takes_too_long_fails_with_a_reason_and_the_next_one_reads(
    engine: str,
) -> None:
    data = documents.document(documents.phrase(1), "png")
    # The reader and the engine started and warm: only Tesseract's read is cut short below.
    ocr_document(data, kind="png", engine=engine, **OPTIONS)
    lines = [documents.phrase(i, words=6) for i in range(30)]
    dense = documents.encode(documents.page_image(lines, width=2480, dpi=300), "png")
    with pytest.raises(OcrFailed, match="Tesseract took longer than 0.3 s on a page"):
        ocr_document(dense, kind="png", language="eng", dpi=300, page_timeout=0.3, engine=engine)
    # The engine that hung was replaced: the next page reads as if nothing happened.
    result = ocr_document(data, kind="png", engine=engine, **OPTIONS)
    assert documents.words(documents.phrase(1)) <= documents.words(result.text)


@pytest.mark.parametrize("seconds", [0.05, 0.5], ids=["mid-page", "between-pages"])
def test_a_document_over_its_time_in_all_fails_with_that_reason(
    engine: str, seconds: float
) -> None:
    """Pages each well inside the page timeout, but too many of them: the document's own
    bound stops it, whether it runs out during a page or between two."""
    data = documents.multipage_pdf([documents.phrase(80 + i) for i in range(12)])
    with pytest.raises(OcrFailed, match=r"over [\d.]+ s of OCR in all; that is the limit for one"):
        ocr_document(data, kind="pdf", engine=engine, document_timeout=seconds, **OPTIONS)


def test_an_unknown_language_fails_with_tesseracts_reason(engine: str) -> None:
    data = documents.document(documents.phrase(1), "png")
    with pytest.raises(OcrFailed, match="Tesseract failed"):
        ocr_document(data, kind="png", language="xxx", dpi=300, page_timeout=60, engine=engine)


def test_both_engines_read_the_same_words_into_the_same_outputs() -> None:
    data = documents.multipage_pdf([documents.phrase(20), documents.phrase(21)])
    reads = {
        engine: ocr_document(data, kind="pdf", engine=engine, pdf=True, **OPTIONS)
        for engine in ("api", "cli")
    }
    assert documents.words(reads["api"].text) == documents.words(reads["cli"].text)
    for page_api, page_cli in zip(reads["api"].pages, reads["cli"].pages, strict=True):
        assert (page_api.width, page_api.height) == (page_cli.width, page_cli.height)
        assert page_api.pdf is not None and page_api.pdf.startswith(b"%PDF")
        assert page_api.pdf.rstrip().endswith(b"%%EOF")  # a whole document, not a fragment
        assert "ocrx_word" in page_api.hocr


def test_an_engine_that_dies_mid_page_fails_that_page_only() -> None:
    """The in-process engine's child is killed while it reads (a crash): that page fails
    as interrupted (which Prefect retries), and a new child reads the next one."""
    import signal
    import threading
    import time

    import psutil

    from docpipe.errors import OcrInterrupted
    from loadtest.pages import page_png, page_text

    data = page_png(2)  # a full A4 page: half a second of reading, to die in the middle of
    ocr_document(documents.document("X", "png"), kind="png", engine="api", **OPTIONS)
    children = [
        p for p in psutil.Process().children() if "docpipe.ocr_server" in " ".join(p.cmdline())
    ]
    assert children

    def crash() -> None:
        time.sleep(0.15)
        for child in children:
            child.send_signal(signal.SIGSEGV)

    threading.Thread(target=crash).start()
    with pytest.raises(OcrInterrupted, match="engine died"):
        ocr_document(data, kind="png", engine="api", **OPTIONS)
    result = ocr_document(data, kind="png", engine="api", **OPTIONS)
    assert documents.words(page_text(2)) <= documents.words(result.text)


def test_lower_priority_reaches_the_process_its_autogroup_and_tesseract() -> None:
    """Standard-tier OCR yields the CPU to VIP runs, even across sessions (autogroup)."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import os, subprocess\n"
        "from pathlib import Path\n"
        "from docpipe.ocr import lower_process_priority\n"
        "before = os.getpriority(os.PRIO_PROCESS, 0)\n"
        "lower_process_priority(7)\n"
        "child = subprocess.run(['sh', '-c', 'cut -d\" \" -f19 /proc/self/stat'],\n"
        "                       capture_output=True, text=True).stdout.strip()\n"
        "group = Path('/proc/self/autogroup')\n"
        "print(before, os.getpriority(os.PRIO_PROCESS, 0), child,\n"
        "      group.read_text().split()[-1] if group.exists() else 'none')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,  # a session of its own, as a worker's flow run has
    )
    before, own, child, group = result.stdout.split()
    expected = str(max(7, int(before)))  # it lowers priority, never raises it
    assert own == expected and child == expected
    if Path("/proc/self/autogroup").exists():
        assert group == "7"


def test_lower_priority_leaves_a_session_it_shares_as_it_was() -> None:
    """A run that shares its session (a worker's, a terminal's) lowers itself only: the
    session's autogroup, which its other processes and later runs share, stays."""
    import subprocess
    import sys
    from pathlib import Path

    if not Path("/proc/self/autogroup").exists():
        pytest.skip("this kernel has no autogroups")
    run = "from docpipe.ocr import lower_process_priority; lower_process_priority(7)"
    # The "worker": a session of its own, starting a "run" inside that session.
    worker = (
        "import os, subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {run!r}], check=True)\n"
        "print(open('/proc/self/autogroup').read().split()[-1])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", worker],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
    )
    assert result.stdout.split() == ["0"]


def test_a_long_documents_pages_are_read_on_every_slot_and_come_back_in_order(
    engine: str,
) -> None:
    """The pages of one document are read on all the OCR slots at once, each slot with
    its own engine process, and the text keeps the pages' order."""
    slots = 3  # no other test uses 3: the api engine's processes for these slots are new

    def engine_processes() -> set[int]:
        found = set()
        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                proc.info = {"name": proc.name(), "cmdline": proc.cmdline()}
                if is_tesseract(proc):
                    found.add(proc.pid)
        return found

    texts = [documents.phrase(30 + i) for i in range(2 * slots)]
    before = engine_processes()
    busy_at_once = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal busy_at_once
        while not stop.wait(0.02):
            busy_at_once = max(busy_at_once, len(engine_processes() - before))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = ocr_document(
            documents.multipage_pdf(texts), kind="pdf", engine=engine, slots=slots, **OPTIONS
        )
    finally:
        stop.set()
        watcher.join()
    pages = result.text.split(PAGE_SEPARATOR)
    for expected, got in zip(texts, pages, strict=True):
        assert documents.words(expected) <= documents.words(got)
    assert busy_at_once == slots


def test_every_language_listed_can_be_asked_for_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tesseract lists names like `eng-best` and `script/Latin` (data in a subfolder):
    an upload may ask for each name `GET /api/languages` shows, and a name that is not one
    is refused naming those installed."""
    data = Path(ocr._tessdata())
    shutil.copytree(
        data, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.traineddata")
    )
    for name in ("eng", "eng-best", "script/Latin", "x" * 40):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(data / "eng.traineddata", tmp_path / f"{name}.traineddata")
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    monkeypatch.setattr(ocr, "_languages", None)  # asked again, and restored after
    assert ocr.installed_languages() == ["eng", "eng-best", "script/Latin"]
    assert check_languages("script/Latin eng-best", max_languages=3) == "script/Latin+eng-best"
    text = documents.phrase(3)
    page = documents.document(text, "png")
    options = {**OPTIONS, "language": "script/Latin"}
    result = ocr_document(page, kind="png", engine="cli", **options)
    assert documents.words(text) <= documents.words(result.text)
    too_long = "+".join(c * 30 for c in "abc")  # three names, longer than the columns
    for bad in ("../eng", "/eng", "script/../eng", "eng+", "x" * 40, too_long):
        with pytest.raises(UnknownLanguage, match="installed: eng, eng-best, script/Latin$"):
            check_languages(bad, max_languages=3)


def test_every_output_of_a_page_comes_from_one_pass(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text, hOCR (the words) and the PDF's text layer are written by the same Tesseract
    pass: an upright page is read once; only a page that must be turned is read again."""
    passes: list[tuple[str, ...]] = []
    kind = type(ocr.get_engine(engine))
    run = kind.run

    def counted(self: Any, page: ocr.PagePass, *, timeout: float) -> None:
        passes.append(page.renderers)
        run(self, page, timeout=timeout)  # the real engine reads it

    monkeypatch.setattr(kind, "run", counted)
    texts = [documents.phrase(60 + i) for i in range(3)]
    result = ocr_document(documents.multipage_pdf(texts), kind="pdf", engine=engine, pdf=True,
                          straighten=ocr.Straightening(), **OPTIONS)  # fmt: skip
    assert sorted(passes) == [("txt", "hocr", "pdf")] * 3
    for expected, page in zip(texts, result.pages, strict=True):
        assert documents.words(expected) <= documents.words(page.text)
        assert page.pdf and "ocrx_word" in page.hocr

    passes.clear()
    upside_down = documents.page_image([documents.phrase(63, 6)] * 3).rotate(180)
    result = ocr_document(documents.encode(upside_down, "png"), kind="png", engine=engine,
                          pdf=True, straighten=ocr.Straightening(), **OPTIONS)  # fmt: skip
    assert len(passes) == 2 and result.pages[0].rotation == 180
