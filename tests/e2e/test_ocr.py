"""docpipe.ocr against the real Tesseract, on pages with known text."""

from __future__ import annotations

from typing import Any

import pytest

from docpipe.errors import OcrFailed
from docpipe.ocr import PAGE_SEPARATOR, ocr_document
from tests import documents

pytestmark = pytest.mark.e2e

OPTIONS: dict[str, Any] = {"language": "eng", "dpi": 300, "page_timeout": 60.0}


@pytest.mark.parametrize("kind", ["pdf", "png", "jpeg", "tiff"])
def test_reads_the_words_drawn_on_the_page(kind: str) -> None:
    text = documents.phrase(7)
    result = ocr_document(documents.document(text, kind, seed=7), kind=kind, **OPTIONS)
    assert result.page_count == 1
    assert documents.words(text) <= documents.words(result.text)


def test_pdf_pages_come_back_in_order_separated() -> None:
    texts = [documents.phrase(i) for i in range(3)]
    result = ocr_document(documents.multipage_pdf(texts), kind="pdf", **OPTIONS)
    assert result.page_count == 3
    pages = result.text.split(PAGE_SEPARATOR)
    assert len(pages) == 3
    for expected, got in zip(texts, pages, strict=True):
        assert documents.words(expected) <= documents.words(got)


def test_a_page_that_takes_too_long_fails_with_a_reason() -> None:
    data = documents.document(documents.phrase(1), "png")
    with pytest.raises(OcrFailed, match="took longer than"):
        ocr_document(data, kind="png", language="eng", dpi=300, page_timeout=0.01)


def test_an_unknown_language_fails_with_tesseracts_reason() -> None:
    data = documents.document(documents.phrase(1), "png")
    with pytest.raises(OcrFailed, match="Tesseract failed"):
        ocr_document(data, kind="png", language="xxx", dpi=300, page_timeout=60)


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
