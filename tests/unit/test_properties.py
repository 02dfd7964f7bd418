"""Property-based tests: the upload checks and the deep checks over random and mutated
bytes answer with a kind or a reason, never another exception, and never hang."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docpipe.errors import InvalidDocument
from docpipe.uploads import clean_file_name
from docpipe.validation import SIGNATURES, SNIFF_BYTES, check_upload, inspect_document
from tests import documents

LIMITS = {"max_pages": 10, "max_pixels": 50_000_000, "max_document_pixels": 100_000_000}
SAMPLES = {kind: documents.document("PROPERTY", kind, seed=3) for kind in SIGNATURES}
CHECKS = settings(
    max_examples=200,
    deadline=timedelta(seconds=5),  # a hang shows up as a failure, not a stuck suite
    suppress_health_check=[HealthCheck.too_slow],
)


@CHECKS
@given(data=st.binary(max_size=4096), max_bytes=st.integers(min_value=1, max_value=10**6))
def test_the_cheap_checks_give_a_kind_or_a_reason(data: bytes, max_bytes: int) -> None:
    kind, reason = check_upload(size=len(data), head=data[:SNIFF_BYTES], max_bytes=max_bytes)
    assert (kind is None) != (reason is None)
    if kind is not None:
        assert 0 < len(data) <= max_bytes


@CHECKS
@given(kind=st.sampled_from(sorted(SIGNATURES)), tail=st.binary(max_size=4096))
def test_the_deep_checks_refuse_garbage_behind_a_valid_signature(kind: str, tail: bytes) -> None:
    data = SIGNATURES[kind][0] + tail
    try:
        inspect_document(data, kind=kind, **LIMITS)
    except InvalidDocument as e:
        assert str(e) and "0x7f" not in str(e)


@CHECKS
@given(
    kind=st.sampled_from(sorted(SIGNATURES)),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
)
def test_the_deep_checks_on_damaged_real_documents_answer_or_refuse(
    kind: str, flips: list[tuple[int, int]], cut: int | None
) -> None:
    """A real document with bytes changed or cut off: accepted with its pages counted, or
    refused as InvalidDocument; nothing else escapes."""
    data = bytearray(SAMPLES[kind])
    for position, mask in flips:
        data[position % len(data)] ^= mask
    damaged = bytes(data[: cut % len(data)] if cut is not None else data)
    try:
        inspection = inspect_document(damaged, kind=kind, **LIMITS)
    except InvalidDocument:
        return
    assert 1 <= inspection.page_count <= LIMITS["max_pages"]


@given(raw=st.one_of(st.none(), st.text(max_size=1000)), position=st.integers(0, 99))
def test_a_file_name_shown_is_never_a_path(raw: str | None, position: int) -> None:
    name = clean_file_name(raw, position)
    assert name and len(name) <= 255
    assert "/" not in name and "\\" not in name
    assert name not in (".", "..")


@pytest.mark.parametrize("kind", sorted(SIGNATURES))
def test_the_samples_pass_untouched(kind: str) -> None:
    assert inspect_document(SAMPLES[kind], kind=kind, **LIMITS).page_count == 1
