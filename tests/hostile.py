"""Hostile documents, made by the tests: each with the answer docpipe must give it.

The corpus grows with every class of attack found; `tests/e2e/test_hostile.py` runs each
case through the cheap upload checks, the deep checks and, where it must pass them,
Tesseract.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import pypdf
from pypdf.generic import FloatObject, NameObject

from tests import documents


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], bytes]
    # "upload": refused by the cheap checks; "invalid": ValidationFailed; "ok": OCR'd.
    answer: str
    # A part of the reason given, or for "ok" the words OCR must find.
    expect: str
    kind: str = ""  # what the upload's bytes are taken for (for "invalid" and "ok")


def blank_pdf(*sizes: tuple[float, float], user_unit: float | None = None) -> bytes:
    writer = pypdf.PdfWriter()
    for width, height in sizes:
        page = writer.add_blank_page(width=width, height=height)
        if user_unit is not None:
            page[NameObject("/UserUnit")] = FloatObject(user_unit)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, rows: bytes, *, mode: int = 0) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )


def png_bomb() -> bytes:
    """A 100,000 x 100,000 pixel PNG in a few hundred bytes: 10 GB once decoded."""
    return png(100_000, 100_000, zlib.compress(b"\0" * 100_001 * 4, 9))


def png_bad_deflate_valid_crc() -> bytes:
    """Every chunk's CRC is right; the compressed pixels inside are not."""
    good = zlib.compress(b"\0" + b"\x80" * 64, 9)
    return png(64, 1, good[:4] + bytes(b ^ 0x5A for b in good[4:]))


def jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(documents.document("X", "jpeg"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def jpeg_damaged_mid_stream() -> bytes:
    data = bytearray(documents.document(documents.phrase(11), "jpeg", seed=11))
    start = data.find(b"\xff\xda") + 20
    for i in range(start, start + 400, 7):
        data[i] = 0xFF if data[i] != 0xFF else 0x00
    return bytes(data)


def tiff_ifd(next_offset: Callable[[int], int], *, width: int = 1, height: int = 1) -> bytes:
    """A one-pixel TIFF whose directory points on to `next_offset(own offset)`."""
    entries = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 0),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, width * height),
    ]
    data_offset = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_offset if tag == 273 else value
        ifd += (
            struct.pack("<HHIHH", tag, kind, 1, value, 0)
            if kind == 3
            else struct.pack("<HHII", tag, kind, 1, value)
        )
    ifd += struct.pack("<I", next_offset(8))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x80" * (width * height)


def multipage_tiff(texts: list[str]) -> bytes:
    pages = [documents.page_image([t], seed=i) for i, t in enumerate(texts)]
    out = io.BytesIO()
    pages[0].save(out, "TIFF", save_all=True, append_images=pages[1:], dpi=(150, 150))
    return out.getvalue()


def prefixed(prefix: bytes, text: str) -> bytes:
    return prefix + documents.document(text, "pdf")


def zip_file() -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


P = documents.phrase
LIMITS = {"max_pages": 10, "max_pixels": 50_000_000, "max_document_pixels": 120_000_000}

CORPUS: list[Case] = [
    # Not a document at all: refused at upload, judged by content, never by name.
    Case("empty", lambda: b"", "upload", "file is empty"),
    Case("plain-text", lambda: b"hello, this is text", "upload", "not a PDF"),
    Case("gif", lambda: b"GIF89a" + b"\0" * 40, "upload", "not a PDF"),
    Case("html", lambda: b"<html><script>alert(1)</script></html>", "upload", "not a PDF"),
    Case("svg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg"/>', "upload", "not a PDF"),
    Case("elf-binary", lambda: b"\x7fELF\x02\x01\x01" + b"\0" * 60, "upload", "not a PDF"),
    Case("zip-docx", zip_file, "upload", "not a PDF"),
    Case("shell-script", lambda: b"#!/bin/sh\nrm -rf /\n", "upload", "not a PDF"),
    Case("bmp", lambda: b"BM" + b"\0" * 60, "upload", "not a PDF"),
    Case("webp", lambda: b"RIFF\0\0\0\0WEBPVP8 ", "upload", "not a PDF"),
    Case("bigtiff", lambda: b"II+\x00\x08\x00\x00\x00" + b"\0" * 32, "upload", "not a PDF"),
    Case("pdf-header-after-1024", lambda: prefixed(b" " * 1100, "X"), "upload", "not a PDF"),
    Case("nul-bytes", lambda: b"\0" * 4096, "upload", "not a PDF"),
    # PDFs that readers accept: so does docpipe, and reads them.
    Case("pdf-after-bom", lambda: prefixed(b"\xef\xbb\xbf", P(21)), "ok", P(21), "pdf"),
    Case("pdf-after-stray-line", lambda: prefixed(b"From: gw\r\n", P(22)), "ok", P(22), "pdf"),
    Case("pdf-after-1000-bytes", lambda: prefixed(b"x" * 1000, P(23)), "ok", P(23), "pdf"),
    # Broken or costly PDFs: ValidationFailed with the reason, before any rendering.
    Case(
        "pdf-truncated",
        lambda: documents.truncated(documents.document("X", "pdf")),
        "invalid",
        "PDF does not open",
        "pdf",
    ),
    Case("pdf-no-pages", lambda: blank_pdf(), "invalid", "no pages", "pdf"),
    Case(
        "pdf-too-many-pages",
        lambda: blank_pdf(*[(612, 792)] * 11),
        "invalid",
        "11 pages; the limit is 10",
        "pdf",
    ),
    Case("pdf-14400pt-page", lambda: blank_pdf((14_400, 14_400)), "invalid", "pt,", "pdf"),
    Case("pdf-20000pt-page", lambda: blank_pdf((20_000, 20_000)), "invalid", "pt,", "pdf"),
    Case("pdf-wide-strip", lambda: blank_pdf((200_000, 100)), "invalid", "pt,", "pdf"),
    Case(
        "pdf-user-unit-75000",
        lambda: blank_pdf((100, 100), user_unit=75_000),
        "invalid",
        "pt,",
        "pdf",
    ),
    Case(
        "pdf-ten-5000pt-pages",
        lambda: blank_pdf(*[(5_000, 5_000)] * 10),
        "invalid",
        "pt,",
        "pdf",
    ),
    Case(
        "pdf-pages-over-document-budget",
        lambda: blank_pdf(*[(1_000, 1_000)] * 10),
        "invalid",
        "limit for one document",
        "pdf",
    ),
    Case("pdf-header-only", lambda: b"%PDF-1.7\n%%EOF\n", "invalid", "PDF does not open", "pdf"),
    Case(
        "pdf-garbage-body",
        lambda: b"%PDF-1.4\n" + bytes(range(256)) * 8,
        "invalid",
        "PDF does not open",
        "pdf",
    ),
    Case(
        "pdf-is-a-png",
        lambda: documents.document("X", "png"),
        "invalid",
        "content is not PDF",
        "pdf",
    ),
    # PNG
    Case("png-bomb-100k-square", png_bomb, "invalid", "pixels; the limit", "png"),
    Case("png-zero-size", lambda: png(0, 0, zlib.compress(b"")), "invalid", "decode", "png"),
    Case(
        "png-truncated",
        lambda: documents.truncated(documents.document("X", "png")),
        "invalid",
        "does not decode",
        "png",
    ),
    Case("png-bad-deflate-valid-crc", png_bad_deflate_valid_crc, "invalid", "decode", "png"),
    Case(
        "png-signature-only",
        lambda: b"\x89PNG\r\n\x1a\n",
        "invalid",
        "does not decode",
        "png",
    ),
    Case(
        "png-is-a-jpeg",
        lambda: documents.document("X", "jpeg"),
        "invalid",
        "content is not PNG",
        "png",
    ),
    Case("png-good", lambda: documents.document(P(24), "png", seed=24), "ok", P(24), "png"),
    # JPEG
    Case("jpeg-65000-square", lambda: jpeg_with_size(65_000, 65_000), "invalid", "pixels", "jpeg"),
    Case("jpeg-wide-strip", lambda: jpeg_with_size(65_000, 1_000), "invalid", "pixels", "jpeg"),
    Case(
        "jpeg-truncated",
        lambda: documents.truncated(documents.document("X", "jpeg")),
        "invalid",
        "does not decode",
        "jpeg",
    ),
    Case("jpeg-soi-only", lambda: b"\xff\xd8\xff\xe0", "invalid", "does not decode", "jpeg"),
    # Damaged mid-stream: found by the deep check's decoding, not left to Tesseract.
    Case("jpeg-damaged-mid-stream", jpeg_damaged_mid_stream, "invalid", "does not decode", "jpeg"),
    Case("jpeg-good", lambda: documents.document(P(25), "jpeg", seed=25), "ok", P(25), "jpeg"),
    # TIFF
    Case(
        "tiff-directory-loops-to-itself",
        lambda: tiff_ifd(lambda own: own),
        "invalid",
        "loop back",
        "tiff",
    ),
    Case(
        "tiff-directory-outside-file",
        lambda: tiff_ifd(lambda own: 10**9),
        "invalid",
        "outside the file",
        "tiff",
    ),
    Case(
        "tiff-first-directory-outside-file",
        lambda: b"II*\x00" + struct.pack("<I", 10**9),
        "invalid",
        "outside the file",
        "tiff",
    ),
    Case("tiff-no-directory", lambda: b"II*\x00" + b"\0" * 4, "invalid", "no pages", "tiff"),
    Case("tiff-header-only", lambda: b"II*\x00", "invalid", "cut off", "tiff"),
    Case(
        "tiff-huge-frame",
        lambda: tiff_ifd(lambda own: 0, width=60_000, height=60_000)[:400],
        "invalid",
        "pixels",
        "tiff",
    ),
    Case(
        "tiff-too-many-frames",
        lambda: multipage_tiff([str(i) for i in range(11)]),
        "invalid",
        "limit is 10",
        "tiff",
    ),
    Case(
        "tiff-truncated",
        lambda: documents.truncated(documents.document("X", "tiff")),
        "invalid",
        "does not decode",
        "tiff",
    ),
    Case(
        "tiff-three-pages",
        lambda: multipage_tiff([P(26), P(27), P(28)]),
        "ok",
        f"{P(26)} {P(27)} {P(28)}",
        "tiff",
    ),
    Case(
        "tiff-big-endian",
        lambda: b"MM\x00*" + b"\0" * 4,
        "invalid",
        "no pages",
        "tiff",
    ),
]
