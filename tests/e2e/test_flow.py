"""The process-batch flow run in this process against the real Prefect server and Tesseract."""

from __future__ import annotations

import io
from typing import Any

import pytest

from docpipe import batches, pipeline
from docpipe.config import get_settings
from docpipe.models import BatchStatus, DocumentStatus
from docpipe.tenants import get_tenant
from docpipe.uploads import stage_files
from tests import documents
from tests.helpers import make_tenant, settings_with

pytestmark = pytest.mark.e2e


def new_batch(tenant_id: str, files: list[tuple[str, bytes]]) -> str:
    """A stored batch that nobody submitted, for the test to run by hand."""
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    with stage_files([(n, io.BytesIO(d)) for n, d in files], get_settings()) as staged:
        return batches.create_batch(tenant, staged).batch_id


def statuses(tenant_id: str, batch_id: str) -> dict[str, Any]:
    batch = batches.find_batch(tenant_id, batch_id)
    return {d.file_name: d for d in batch.documents}


@pytest.fixture
def mixed_batch(database: str) -> tuple[str, str]:
    """Three good documents and a cut-off JPEG, stored in the database under test."""
    tenant_id, _ = make_tenant()
    files = [
        (f"{i}.{k}", documents.document(documents.phrase(i), k, seed=i))
        for i, k in enumerate(["png", "pdf", "tiff"])
    ]
    files.append(("cut.jpeg", documents.truncated(documents.document("X", "jpeg"))))
    return tenant_id, new_batch(tenant_id, files)


def test_rerun_skips_documents_already_ready(
    mixed_batch: tuple[str, str], prefect_api: None
) -> None:
    from flows.process_batch import process_batch

    tenant_id, batch_id = mixed_batch
    first = process_batch(batch_id)
    assert first == {
        "batchId": batch_id,
        "total": 4,
        "succeeded": 3,
        "failed": 1,
        "cancelled": 0,
        "headline": "3 of 4 succeeded",
        "outcome": "some-failed",
    }
    before = statuses(tenant_id, batch_id)
    # Run again as it is, its one failure a validation failure: nothing would change.
    again = process_batch(batch_id, return_state=True)
    assert (again.name, again.message) == (
        "Not run",
        f"Not run: batch {batch_id} is Completed with nothing left to redo: its failed "
        "documents failed validation (retry with includeInvalid=true to check them again)",
    )

    batches.prepare_retry(tenant_id, batch_id, include_invalid=True)
    second = process_batch(batch_id)

    assert second == first
    after = statuses(tenant_id, batch_id)
    for name in ("0.png", "1.pdf", "2.tiff"):
        assert after[name].status == DocumentStatus.READY
        assert after[name].processed_at == before[name].processed_at  # not OCR'd again
    assert after["cut.jpeg"].status == DocumentStatus.VALIDATION_FAILED
    assert after["cut.jpeg"].processed_at > before["cut.jpeg"].processed_at  # retried
    assert batches.find_batch(tenant_id, batch_id).status == BatchStatus.COMPLETED


def test_a_crashing_ocr_fails_only_its_document(
    mixed_batch: tuple[str, str], prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.process_batch import process_batch

    real_ocr = pipeline.ocr_document

    def crash_on_tiff(data: bytes, **options: Any) -> Any:
        if options["kind"] == "tiff":
            raise RuntimeError("tesseract was killed by signal 11")
        return real_ocr(data, **options)

    monkeypatch.setattr(pipeline, "ocr_document", crash_on_tiff)
    tenant_id, batch_id = mixed_batch

    summary: Any = process_batch(batch_id)

    assert (summary["succeeded"], summary["failed"]) == (2, 2)
    docs = statuses(tenant_id, batch_id)
    assert docs["2.tiff"].status == DocumentStatus.OCR_FAILED
    assert "signal 11" in docs["2.tiff"].error
    assert docs["0.png"].status == docs["1.pdf"].status == DocumentStatus.READY
    assert documents.words(documents.phrase(0)) <= documents.words(
        pipeline.read_text(docs["0.png"])
    )


def test_a_broken_flow_marks_the_batch_failed(
    mixed_batch: tuple[str, str], prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.process_batch import process_batch

    def broken_summary(batch_id: str) -> Any:
        raise ConnectionError("database went away")

    monkeypatch.setattr(batches, "close_batch", broken_summary)
    tenant_id, batch_id = mixed_batch
    state = process_batch(batch_id, return_state=True)
    assert state.is_failed()
    batch = batches.find_batch(tenant_id, batch_id)
    assert batch.status == BatchStatus.FAILED
    assert batch.error is not None and "database went away" in batch.error


def test_ocr_retries_when_tesseract_dies_but_not_when_it_cannot_read(
    tenant: tuple[str, str], prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Tesseract killed by a signal is retried; an error that will recur is not."""
    from PIL import Image

    from docpipe import ocr
    from docpipe.errors import OcrFailed, OcrInterrupted
    from flows.process_batch import process_batch

    calls: dict[str, int] = {}

    def flaky(real: Any) -> Any:
        def run(engine: Any, page: ocr.PagePass, *, timeout: float) -> None:
            # Tesseract is handed decoded pages: the two documents differ in width.
            with Image.open(page.input) as decoded:
                name = {1240: "page.png", 1000: "page.tiff"}.get(decoded.size[0], "page.jpeg")
            calls[name] = calls.get(name, 0) + 1
            if name == "page.png" and calls[name] == 1:
                raise OcrInterrupted("Tesseract was killed by signal 9")  # the first try dies
            if name == "page.jpeg":
                raise OcrInterrupted("Tesseract was killed by signal 9")  # every try dies
            if name == "page.tiff":
                raise OcrFailed("Tesseract failed: Error during processing.")  # always fails
            real(engine, page, timeout=timeout)

        return run

    for engine in (ocr.ApiEngine, ocr.CliEngine):  # whichever the settings choose
        monkeypatch.setattr(engine, "run", flaky(engine.run))
    tenant_id, _ = tenant
    narrow = documents.encode(documents.page_image([documents.phrase(1)], width=1000), "tiff")
    narrower = documents.encode(documents.page_image([documents.phrase(2)], width=900), "jpeg")
    batch_id = new_batch(
        tenant_id,
        [
            ("png.png", documents.document(documents.phrase(0), "png")),
            ("tiff.tiff", narrow),
            ("jpeg.jpeg", narrower),
        ],
    )

    summary: Any = process_batch(batch_id)

    assert (summary["succeeded"], summary["failed"]) == (1, 2)
    docs = statuses(tenant_id, batch_id)
    assert docs["png.png"].status == DocumentStatus.READY
    assert calls["page.png"] == 2
    assert docs["tiff.tiff"].status == DocumentStatus.OCR_FAILED
    # The reason as docpipe gave it, not wrapped in Prefect's words for a failed task.
    assert docs["tiff.tiff"].error == "Tesseract failed: Error during processing."
    assert calls["page.tiff"] == 1
    assert docs["jpeg.jpeg"].status == DocumentStatus.OCR_FAILED
    assert docs["jpeg.jpeg"].error == "Tesseract was killed by signal 9"
    assert calls["page.jpeg"] == 3  # the first try and both retries


def test_a_document_over_its_time_in_all_fails_alone_with_the_reason(
    tenant: tuple[str, str], prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DOCPIPE_OCR_DOCUMENT_TIMEOUT_SECONDS bounds a document's pages together: a long
    PDF over it ends OcrFailed saying so, and a short document beside it reads."""
    from flows.process_batch import process_batch

    settings_with(monkeypatch, ocr_document_timeout_seconds=1.0)
    tenant_id, _ = tenant
    long_pdf = documents.multipage_pdf([documents.phrase(90 + i) for i in range(20)])
    batch_id = new_batch(
        tenant_id,
        [("long.pdf", long_pdf), ("short.png", documents.document(documents.phrase(3), "png"))],
    )

    summary: Any = process_batch(batch_id)

    assert (summary["succeeded"], summary["failed"]) == (1, 1)
    docs = statuses(tenant_id, batch_id)
    assert docs["short.png"].status == DocumentStatus.READY
    assert docs["long.pdf"].status == DocumentStatus.OCR_FAILED
    assert docs["long.pdf"].error.startswith("the document's pages took over 1 s of OCR in all")


@pytest.mark.parametrize("case", ["unknown", "cancelled", "all-ready"])
def test_a_run_for_a_batch_it_may_not_process_changes_nothing(
    tenant: tuple[str, str], prefect_api: None, case: str
) -> None:
    """Whatever batch id a run is started with, it touches only a batch waiting to run."""
    from flows.process_batch import process_batch

    tenant_id, _ = tenant
    batch_id = new_batch(tenant_id, [("a.png", documents.document("refused run", "png"))])
    if case == "unknown":
        batch_id = "00000000-0000-0000-0000-000000000000"
    elif case == "cancelled":
        batches.mark_cancelled(tenant_id, batch_id)
    else:
        process_batch(batch_id)
    before = None if case == "unknown" else statuses(tenant_id, batch_id)["a.png"]

    state = process_batch(batch_id, return_state=True)

    assert (state.type.value, state.name) == ("COMPLETED", "Not run")
    assert state.message is not None and state.message.startswith("Not run: ")
    assert "Traceback" not in state.message
    if before is not None:
        after = batches.find_batch(tenant_id, batch_id)
        assert after.status == (
            BatchStatus.CANCELLED if case == "cancelled" else BatchStatus.COMPLETED
        )
        assert after.documents[0].status == before.status
        assert after.documents[0].processed_at == before.processed_at


def test_the_next_document_is_ready_before_a_slot_frees(database: str, prefect_api: None) -> None:
    """A run holds one document more than its OCR slots: while the slots read, the next is
    checked and decoded, so a slot that frees never waits for its page (make bench)."""
    import threading

    from sqlalchemy import func, select

    from docpipe.db import session_scope
    from docpipe.models import Document
    from flows.process_batch import process_batch

    slots = get_settings().ocr_concurrency
    tenant_id, _ = make_tenant()
    files = [
        (f"{i}.png", documents.document(documents.phrase(i), "png", seed=i))
        for i in range(slots + 4)
    ]
    batch_id = new_batch(tenant_id, files)
    most_open, done = 0, threading.Event()

    def watch() -> None:
        nonlocal most_open
        while not done.is_set():
            with session_scope() as session:
                now_open = session.scalar(
                    select(func.count()).where(
                        Document.batch_id == batch_id,
                        Document.status.in_([DocumentStatus.VALIDATING, DocumentStatus.PROCESSING]),
                    )
                )
            most_open = max(most_open, now_open or 0)
            done.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary: Any = process_batch(batch_id)
    finally:
        done.set()
        watcher.join()

    assert summary["succeeded"] == slots + 4
    assert most_open == slots + 1


@pytest.mark.parametrize("said", ["OcrFailed", "InvalidDocument"])
def test_a_document_of_a_cancelled_batch_ends_cancelled_whatever_stopping_said(
    mixed_batch: tuple[str, str], prefect_api: None, monkeypatch: pytest.MonkeyPatch, said: str
) -> None:
    """A cancel stops a document's reader or Tesseract mid-way, which may answer with an
    error rather than die (seen in CI: "could not load the data of language eng"): the
    task ends Cancelled, not Failed with an error in the run's log."""
    from docpipe import errors
    from docpipe.models import Tier
    from tasks import process_document

    tenant_id, batch_id = mixed_batch
    document = next(iter(statuses(tenant_id, batch_id).values()))
    batches.mark_cancelled(tenant_id, batch_id)

    def stopped(document_id: str, **_: Any) -> int:
        raise getattr(errors, said)("Tesseract failed: could not load the data of language eng")

    monkeypatch.setattr(pipeline, "check_and_ocr", stopped)

    state = process_document(document.id, "x", Tier.STANDARD, return_state=True)

    assert state.is_cancelled(), state
