"""Every case of the hostile corpus gets its answer: refused at upload, ValidationFailed
with the reason before any work is spent on it, or read by Tesseract."""

from __future__ import annotations

import re
from typing import Any

import pytest

from docpipe.errors import InvalidDocument
from docpipe.ocr import ocr_document
from docpipe.validation import SNIFF_BYTES, check_upload, inspect_document
from tests import documents
from tests.hostile import CORPUS, LIMITS, Case

pytestmark = pytest.mark.e2e

ADDRESS = re.compile(r"\b0x[0-9a-f]{6,}|object at", re.IGNORECASE)


def test_the_corpus_has_at_least_50_cases_with_distinct_names() -> None:
    assert len(CORPUS) >= 50
    assert len({case.id for case in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CORPUS])
def test_each_hostile_document_gets_its_answer(case: Case) -> None:
    data = case.make()
    kind, reason = check_upload(size=len(data), head=data[:SNIFF_BYTES], max_bytes=10**8)
    if case.answer == "upload":
        assert kind is None and reason is not None and case.expect in reason
        return
    assert reason is None, reason
    if case.answer == "invalid":
        # ValidationFailed: by the deep check, or by the decoding that starts OCR.
        with pytest.raises(InvalidDocument) as raised:
            inspect_document(data, kind=case.kind, dpi=300, **LIMITS)
            ocr_document(data, kind=case.kind, language="eng", dpi=300, page_timeout=60)
        assert case.expect in str(raised.value)
        assert not ADDRESS.search(str(raised.value)), "a reason must not show internals"
        return
    inspection = inspect_document(data, kind=case.kind, dpi=300, **LIMITS)
    result = ocr_document(
        data,
        kind=case.kind,
        language="eng",
        dpi=300,
        page_timeout=60,
        max_page_pixels=LIMITS["max_pixels"],
    )
    assert result.page_count == inspection.page_count
    assert documents.words(case.expect) <= documents.words(result.text)


def test_a_page_too_large_is_refused_before_pdfium_renders_it() -> None:
    """The deep check's bound is held again where the memory would be spent."""
    from tests.hostile import blank_pdf

    with pytest.raises(InvalidDocument, match="pixels at 300 dpi"):
        ocr_document(
            blank_pdf((14_400, 14_400)),
            kind="pdf",
            language="eng",
            dpi=300,
            page_timeout=60,
            max_page_pixels=100_000_000,
        )


def test_each_tiff_page_is_read_with_its_own_timeout() -> None:
    """Three pages, each well within a timeout that the three together would exceed."""
    import time

    from tests.hostile import multipage_tiff

    data = multipage_tiff([documents.phrase(i) for i in range(3)])
    started = time.perf_counter()
    one = ocr_document(
        multipage_tiff([documents.phrase(0)]),
        kind="tiff",
        language="eng",
        dpi=300,
        page_timeout=60,
    )
    per_page = (time.perf_counter() - started) / one.page_count
    result = ocr_document(data, kind="tiff", language="eng", dpi=300, page_timeout=per_page * 2.5)
    assert result.page_count == 3
    for i, page in enumerate(result.text.split("\f")):
        assert documents.words(documents.phrase(i)) <= documents.words(page)


@pytest.mark.parametrize(
    ("pdf", "limits", "reason"),
    [
        pytest.param(
            lambda: documents.multipage_pdf(["A", "B", "C"]),
            {"max_pages": 2},
            "over 2 pages",
            id="pages",
        ),
        pytest.param(
            lambda: documents.multipage_pdf(["A", "B", "C"]),
            {"max_document_pixels": 5_000_000},
            "limit for one document",
            id="document-pixels",
        ),
    ],
)
def test_the_renderer_holds_the_limits_on_what_it_sees(
    pdf: Any, limits: dict[str, Any], reason: str
) -> None:
    """PDFium may see more in the same bytes than the deep check's reader did (a second
    header, a rebuilt cross-reference): its own count is held to the limits too."""
    with pytest.raises(InvalidDocument, match=reason):
        ocr_document(pdf(), kind="pdf", language="eng", dpi=300, page_timeout=60, **limits)


def test_pdfium_reads_the_pdf_from_the_header_the_deep_check_read() -> None:
    """A decoy `%PDF` before the real header: both readers start at the real one."""
    data = b"%PDFX decoy\n" + documents.document(documents.phrase(31), "pdf")
    assert inspect_document(data, kind="pdf", dpi=300, **LIMITS).page_count == 1
    result = ocr_document(data, kind="pdf", language="eng", dpi=300, page_timeout=60)
    assert result.page_count == 1
    assert documents.words(documents.phrase(31)) <= documents.words(result.text)
