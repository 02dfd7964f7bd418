"""Document checks: cheap ones on upload, deep ones before OCR. Pure functions."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pypdf
from PIL import Image, UnidentifiedImageError

from docpipe.errors import InvalidDocument

# The bytes each allowed type starts with; the file name is never trusted for this.
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "pdf": (b"%PDF-",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "tiff": (b"II*\x00", b"MM\x00*"),
}
SNIFF_BYTES = 8
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF"}


def sniff_kind(head: bytes) -> str | None:
    """The document type the leading bytes announce, or None if not an allowed one."""
    for kind, signatures in SIGNATURES.items():
        if head.startswith(signatures):
            return kind
    return None


def check_upload(*, size: int, head: bytes, max_bytes: int) -> tuple[str | None, str | None]:
    """The cheap checks: returns (kind, None) if acceptable, else (None, reason)."""
    if size == 0:
        return None, "file is empty"
    if size > max_bytes:
        return None, f"file is {size} bytes; the limit is {max_bytes}"
    kind = sniff_kind(head)
    if kind is None:
        return None, "not a PDF, PNG, JPEG or TIFF (judged by the file's content)"
    return kind, None


@dataclass(frozen=True)
class Inspection:
    kind: str
    page_count: int


def inspect_document(data: bytes, *, kind: str, max_pages: int, max_pixels: int) -> Inspection:
    """The deep checks: the whole document decodes and is within limits."""
    if sniff_kind(data[:SNIFF_BYTES]) != kind:
        raise InvalidDocument(f"content is not {kind.upper()}")
    if kind == "pdf":
        return Inspection(kind, _inspect_pdf(data, max_pages=max_pages))
    return Inspection(
        kind, _inspect_image(data, kind=kind, max_pages=max_pages, max_pixels=max_pixels)
    )


def _inspect_pdf(data: bytes, *, max_pages: int) -> int:
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=True)
        if reader.is_encrypted:
            raise InvalidDocument("PDF is encrypted")
        pages = len(reader.pages)
    except InvalidDocument:
        raise
    except Exception as e:  # pypdf raises many types for broken files
        raise InvalidDocument(f"PDF does not open: {e}") from e
    if pages == 0:
        raise InvalidDocument("PDF has no pages")
    if pages > max_pages:
        raise InvalidDocument(f"PDF has {pages} pages; the limit is {max_pages}")
    return pages


def _inspect_image(data: bytes, *, kind: str, max_pages: int, max_pixels: int) -> int:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != PIL_FORMATS[kind]:
                raise InvalidDocument(f"content is not {kind.upper()}")
            frames = getattr(image, "n_frames", 1)
            if frames > max_pages:
                raise InvalidDocument(f"image has {frames} pages; the limit is {max_pages}")
            for frame in range(frames):
                image.seek(frame)
                width, height = image.size
                if width * height > max_pixels:
                    raise InvalidDocument(
                        f"image is {width}x{height} pixels; the limit is {max_pixels}"
                    )
                if kind != "png":
                    image.load()  # decodes every byte: a cut-off image fails here
        if kind == "png":
            # Every PNG chunk carries a CRC: checking them all finds a cut-off or damaged
            # file in well under a millisecond, where decoding an A4 scan takes 20-30 ms
            # that Tesseract, which decodes it anyway, would spend again.
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
        return frames
    except InvalidDocument:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise InvalidDocument(f"image does not decode: {e}") from e


# Our own pixel limit replaces Pillow's warning-based one.
Image.MAX_IMAGE_PIXELS = None
