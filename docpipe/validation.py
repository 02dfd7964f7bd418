"""Document checks: cheap ones on upload, deep ones before OCR (a PDF's by the reader)."""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pypdf
import pypdf.filters
from PIL import Image, UnidentifiedImageError

from docpipe import readers
from docpipe.errors import InvalidDocument, fit_for_tenant

# The bytes each allowed type starts with; the file name is never trusted for this.
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "pdf": (b"%PDF-",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "tiff": (b"II*\x00", b"MM\x00*"),
}
# PDF readers accept a header anywhere in the first 1024 bytes (a byte-order mark or a
# mail gateway's stray line before it); so does docpipe, and no further.
PDF_HEADER_WINDOW = 1024
SNIFF_BYTES = PDF_HEADER_WINDOW
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF"}
# A progressive JPEG is drawn in scans, each over the whole picture: an encoder makes
# about ten; 3000 copies of one kept a 447 KB file decoding for 9 s.
MAX_JPEG_SCANS = 100


def sniff_kind(head: bytes) -> str | None:
    """The document type the leading bytes announce, or None if not an allowed one."""
    for kind, signatures in SIGNATURES.items():
        if head.startswith(signatures):
            return kind
    if pdf_header_offset(head) is not None:
        return "pdf"
    return None


def pdf_header_offset(data: bytes) -> int | None:
    """Where `%PDF-` starts within the first 1024 bytes, if it does."""
    offset = data.find(b"%PDF-", 0, PDF_HEADER_WINDOW)
    return offset if offset >= 0 else None


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


def page_pixels(width_pt: float, height_pt: float, dpi: int) -> int:
    """The pixels a page of this size in points becomes when rendered at `dpi`."""
    scale = dpi / 72
    return round(width_pt * scale) * round(height_pt * scale)


@dataclass(frozen=True)
class Inspection:
    kind: str
    page_count: int


def inspect_document(
    data: bytes,
    *,
    kind: str,
    max_pages: int,
    max_pixels: int,
    max_document_pixels: int | None = None,
    max_content_bytes: int = 16 * 1024 * 1024,
    dpi: int = 300,
    timeout: float = 120.0,
) -> Inspection:
    """The deep checks: the document's structure is sound and its cost within limits.

    Cost is bounded before any work is spent on it: pages, each page's pixels (a PDF's
    at the rendering DPI) and all pages' pixels together, and a PDF page's drawing
    instructions (`max_content_bytes`, decompressed). An image's pixels are decoded
    once, by the OCR step, where a page that does not decode fails the same way. The check
    runs in the reader's process (docpipe.readers) and gets `timeout` seconds.
    """
    if sniff_kind(data[:SNIFF_BYTES]) != kind:
        raise InvalidDocument(f"content is not {kind.upper()}")
    budget = max_document_pixels or max_pages * max_pixels
    if kind == "pdf":
        # In the reader's own process: pypdf is large, and a crafted file may crash or hang
        # it (docpipe.readers).
        pages = readers.inspect_pdf(
            data, max_pages=max_pages, max_pixels=max_pixels, budget=budget, dpi=dpi,
            max_content=max_content_bytes, timeout=timeout,
        )  # fmt: skip
        return Inspection(kind, pages)
    # An image's too: a crafted file can stretch Pillow's reading of its headers and chunks
    # for as long as it likes (two million empty PNG chunks: 16 s).
    pages = readers.inspect_image(
        data, kind=kind, max_pages=max_pages, max_pixels=max_pixels, budget=budget,
        timeout=timeout,
    )  # fmt: skip
    return Inspection(kind, pages)


def inspect_image(data: bytes, *, kind: str, max_pages: int, max_pixels: int, budget: int) -> int:
    """The image's frames are sound and within the limits; how many (run by the reader,
    docpipe.reader_server)."""
    if kind == "tiff":
        _check_tiff_directories(data, max_pages=max_pages)
    return _inspect_image(
        data, kind=kind, max_pages=max_pages, max_pixels=max_pixels, budget=budget
    )


def inspect_pdf(
    data: bytes,
    *,
    max_pages: int,
    max_pixels: int,
    budget: int,
    dpi: int,
    max_content: int = 16 * 1024 * 1024,
) -> int:
    """pypdf's strict reading of the PDF within the limits; its page count (run by the
    reader, docpipe.reader_server)."""
    # Byte offsets in a PDF count from its header, wherever the header starts.
    data = data[pdf_header_offset(data) or 0 :]
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=True)
        if reader.is_encrypted:
            raise InvalidDocument("PDF is encrypted")
        pages = len(reader.pages)
        if pages == 0:
            raise InvalidDocument("PDF has no pages")
        if pages > max_pages:
            raise InvalidDocument(f"PDF has {pages} pages; the limit is {max_pages}")
        total = 0
        for number, page in enumerate(reader.pages, start=1):
            box = page.cropbox
            unit = float(page.user_unit or 1)
            width, height = abs(float(box.width)) * unit, abs(float(box.height)) * unit
            pixels = page_pixels(width, height, dpi)
            if pixels > max_pixels:
                raise InvalidDocument(
                    f"page {number} is {width:.0f} x {height:.0f} pt, {pixels} pixels at "
                    f"{dpi} dpi; the limit is {max_pixels}"
                )
            total += pixels
            if total > budget:
                raise InvalidDocument(
                    f"the pages come to over {budget} pixels at {dpi} dpi; that is the limit "
                    "for one document"
                )
            try:
                drawn = _content_bytes(page, max_content, max_pixels)
            except InvalidDocument as e:
                raise InvalidDocument(f"page {number}: {e}") from e
            if drawn > max_content:
                raise InvalidDocument(
                    f"page {number}'s drawing instructions come to over {max_content} bytes; "
                    "the limit is that for one page"
                )
    except InvalidDocument:
        raise
    except Exception as e:  # pypdf raises many types for broken files
        raise InvalidDocument(f"PDF does not open: {describe_error(e)}") from e
    return pages


def _content_bytes(page: Any, limit: int, max_pixels: int | None = None) -> int:
    """The size of a page's drawing instructions decompressed, counted as PDFium would
    run them and only until it passes `limit`: each stream as often as the page lists
    it, each form as often as it is drawn (a form drawing a form 100 times, drawn 200
    times, is 20,000 copies), the annotations' appearances, the soft masks of the
    graphics states it sets and the cells of the tiling patterns it paints with (forms
    too), and each Type3 glyph (a drawing too) as often as the strings could show it. A
    JPEG it draws may not hold over MAX_JPEG_SCANS scans, nor the images it draws (each
    as often as it is drawn) over `max_pixels` pixels in all (InvalidDocument)."""
    resources = _resolved(page.get("/Resources"))
    drawing = _Drawing(limit, resources, max_pixels)
    contents = _resolved(page.get("/Contents"))
    total = 0
    for stream in contents if isinstance(contents, list) else [contents]:
        total += drawing.cost(_resolved(stream), resources)
        if total > limit:
            return total
    annotations = _resolved(page.get("/Annots"))
    for annotation in annotations if isinstance(annotations, list) else []:
        annotation = _resolved(annotation)
        looks = _resolved(annotation.get("/AP")) if isinstance(annotation, dict) else None
        normal = _resolved(looks.get("/N")) if isinstance(looks, dict) else None
        shown = [normal] if isinstance(normal, pypdf.generic.StreamObject) else []
        if isinstance(normal, dict) and not shown:  # one appearance for each state
            shown = [_resolved(look) for look in normal.values()]
        if not shown and isinstance(annotation, dict):  # PDFium draws one of its own
            total += _drawn_geometry(annotation, limit)
        for look in shown:
            total += drawing.form_cost(look, resources)
            if total > limit:
                return total
    return total


# A number of an annotation's geometry, as bytes of drawing: PDFium draws one with no look
# of its own (an ink stroke, a highlight) from these, each array as often as it is named.
GEOMETRY_NUMBER_BYTES = 16


def _drawn_geometry(annotation: Any, limit: int) -> int:
    numbers = 0
    for key in ("/InkList", "/QuadPoints", "/Vertices", "/L"):
        value = _resolved(annotation.get(key))
        for part in value if isinstance(value, list) else []:
            part = _resolved(part)
            numbers += len(part) if isinstance(part, list) else 1
            if numbers * GEOMETRY_NUMBER_BYTES > limit:
                return numbers * GEOMETRY_NUMBER_BYTES
    return numbers * GEOMETRY_NUMBER_BYTES


# A resource used by name: a form or image drawn (`/Name Do`), a pattern painted with
# (`/Name scn`, `/Name SCN`), a graphics state set (`/Name gs`). A name's #xx escapes
# read as their bytes.
_USED = re.compile(rb"/([^\s\x00/\[\]()<>{}%]*+)[\s\x00]*+(Do|scn|SCN|gs)(?![^\s\x00/\[\]()<>{}%])")
# PDFium takes a string operand as the name too, `(X) Do`: costed as the costliest there.
_USED_BY_STRING = re.compile(rb"[)>][\s\x00]*+(Do|scn|SCN|gs)(?![^\s\x00/\[\]()<>{}%])")
# An image drawn inline (BI ... ID): its width and height, in its dictionary. Every one is
# taken as wide as all of them and as high as the highest: never fewer pixels.
_INLINE_WIDTH = re.compile(rb"/(?:W|Width)[\s\x00]*+(\d{1,9})(?!\d)")
_INLINE_HEIGHT = re.compile(rb"/(?:H|Height)[\s\x00]*+(\d{1,9})(?!\d)")
# What showing any glyph costs PDFium, in bytes of drawing; it bounds the string scan too.
GLYPH_LEAST = 64
_KIND = {b"Do": "/XObject", b"scn": "/Pattern", b"SCN": "/Pattern", b"gs": "/ExtGState"}
# What checking one page may read (streams decoded, names looked up, strings scanned),
# in multiples of the limit: a file of many fonts sharing one huge glyph stays cheap.
WORK_PER_LIMIT = 4


class _Drawing:
    """What drawing a page's streams costs, each stream's cost counted once and reused."""

    def __init__(self, limit: int, page_resources: Any, max_pixels: int | None) -> None:
        self.limit = limit
        self.max_pixels = max_pixels
        self.pixels = 0  # of the images drawn so far, each as often as it is drawn
        # Where PDFium looks for a name a form's own resources lack.
        self.page = page_resources if isinstance(page_resources, dict) else {}
        self.work = WORK_PER_LIMIT * limit
        self.read: dict[int, tuple[bytes, Counter[tuple[bytes, bytes | None]]]] = {}
        # Each stream's cost where it is drawn, once: its text costs more where a costlier
        # font is set, and its names resolve in its resources.
        self.costs: dict[tuple[int, int, int], int] = {}
        self.open: set[int] = set()
        # A Type3 font's glyph is a drawing run each time it is shown. A stream may show
        # any font a stream drawing it selected (the font is graphics state, inherited),
        # and those were costed before it: so every glyph costs the costliest yet selected.
        self.glyph = 0
        self.type3: dict[tuple[int, int], int] = {}

    def cost(self, stream: Any, resources: Any) -> int:
        if not isinstance(stream, pypdf.generic.StreamObject):
            return 0
        key = (id(stream), id(resources), self.glyph)
        if key not in self.costs:
            self.costs[key] = self._cost(stream, resources)
        return self.costs[key]

    def _cost(self, stream: Any, resources: Any) -> int:
        data, uses = self._read(stream)
        total = len(data)
        if total > self.limit or not self._spend(len(uses)):
            return self.limit + 1
        if b"Tf" in data and (glyph := self._type3_glyph(resources)):
            self.glyph = max(self.glyph, glyph, GLYPH_LEAST)
        if self.glyph:
            if not self._spend(total):
                return self.limit + 1
            total += _shown_bytes(data, most=(self.limit - total) // self.glyph) * self.glyph
        if b"BI" in data and b"ID" in data:
            widths = sum(int(w) for w in _INLINE_WIDTH.findall(data))
            self._draw_image(widths * max(map(int, _INLINE_HEIGHT.findall(data)), default=0))
        for (operator, name), times in uses.items():
            if total > self.limit:
                break
            kind = _KIND[operator]
            # By a string, `(X) Do`: any resource of its kind it could be, the costliest.
            names = self._names(resources, kind) if name is None else [name]
            used = [self._find(resources, kind, n) for n in names]
            total += max((self._use(operator, u, resources, times) for u in used), default=0)
        return total

    def _scopes(self, resources: Any, kind: str) -> list[dict[Any, Any]]:
        """A kind of resource where PDFium looks for a name: its own, then the page's."""
        found = []
        for holder in (resources, self.page) if resources is not self.page else (resources,):
            named = _resolved(_get(holder, kind))
            if isinstance(named, dict):
                found.append(named)
        return found

    def _names(self, resources: Any, kind: str) -> set[bytes]:
        """The names of a kind of resource a stream could use."""
        return {
            str(key)[1:].encode("latin-1", "replace")
            for named in self._scopes(resources, kind)
            for key in named
        }

    def _use(self, operator: bytes, used: Any, resources: Any, times: int) -> int:
        """What `times` uses of a resource cost: a form's drawing, a soft mask's group or a
        tiling pattern's cell (drawn once at least); an image counts its pixels instead."""
        if operator == b"gs":  # a soft mask's group is drawn wherever the state is set
            mask = _resolved(used.get("/SMask")) if isinstance(used, dict) else None
            used = _resolved(mask.get("/G")) if isinstance(mask, dict) else None
        elif operator == b"Do" and _resolved(_get(used, "/Subtype")) != "/Form":
            if isinstance(used, pypdf.generic.StreamObject):
                width, height = (_resolved(used.get(k)) for k in ("/Width", "/Height"))
                if isinstance(width, int) and isinstance(height, int):
                    self._draw_image(times * max(width, 0) * max(height, 0))
                if _filters(used)[-1:] == ["/DCTDecode"]:
                    _check_jpeg_scans(used._data, "it draws a JPEG of")
            return 0
        return times * self.form_cost(used, resources)

    def _read(self, stream: Any) -> tuple[bytes, Counter[tuple[bytes, bytes | None]]]:
        """A stream decoded and the names it uses, once a page; nothing past the work."""
        if id(stream) not in self.read:
            if self.work <= 0:
                return b"", Counter()
            data = _decoded(stream, self.limit)
            self.work -= len(data)
            uses: Counter[tuple[bytes, bytes | None]] = Counter(
                (operator, re.sub(rb"#([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), name))
                for name, operator in _USED.findall(data)
            )
            uses.update((operator, None) for operator in _USED_BY_STRING.findall(data))
            self.read[id(stream)] = (data, uses)
        return self.read[id(stream)]

    def _draw_image(self, pixels: int) -> None:
        """PDFium decodes an image whole each time it is drawn, however small it is shown."""
        self.pixels += pixels
        if self.max_pixels is not None and self.pixels > self.max_pixels:
            raise InvalidDocument(
                f"its images come to over {self.max_pixels} pixels as drawn; the limit is "
                "that for one page"
            )

    def _spend(self, work: int) -> bool:
        self.work -= work
        return self.work > 0

    def _find(self, resources: Any, kind: str, name: bytes) -> Any:
        """A resource by name, where PDFium finds it."""
        for named in self._scopes(resources, kind):
            if found := named.get("/" + name.decode("latin-1")):
                return _resolved(found)
        return None

    def form_cost(self, form: Any, inherited: Any) -> int:
        if not isinstance(form, pypdf.generic.StreamObject):
            return 0
        if id(form) in self.open:  # a form that draws itself never ends
            return self.limit + 1
        self.open.add(id(form))
        cost = self.cost(form, _resolved(form.get("/Resources")) or inherited)
        self.open.discard(id(form))
        return cost

    def _type3_glyph(self, resources: Any) -> int:
        """The cost of the costliest glyph of the Type3 fonts in `resources` or the page's
        (over the limit when one font's glyphs come to more than the limit, or a glyph
        shows its own font)."""
        costliest = 0
        for fonts in self._scopes(resources, "/Font"):
            for font in fonts.values():
                font = _resolved(font)
                if not isinstance(font, dict) or _resolved(font.get("/Subtype")) != "/Type3":
                    continue
                if id(font) in self.open:
                    return self.limit + 1
                key = (id(font), id(resources))  # a glyph's names resolve where it is shown
                if key not in self.type3:
                    self.type3[key] = self._glyphs_cost(font, resources)
                costliest = max(costliest, self.type3[key])
        return costliest

    def _glyphs_cost(self, font: Any, resources: Any) -> int:
        self.open.add(id(font))
        glyphs = _resolved(font.get("/CharProcs"))
        own = _resolved(font.get("/Resources")) or resources
        spent = dearest = 0
        for glyph in glyphs.values() if isinstance(glyphs, dict) else []:
            cost = self.cost(_resolved(glyph), own)
            spent, dearest = spent + cost, max(dearest, cost)
            if spent > self.limit:
                dearest = self.limit + 1
                break
        self.open.discard(id(font))
        return dearest


def _get(holder: Any, key: str) -> Any:
    return holder.get(key) if isinstance(holder, dict) else None


_STRING_START = re.compile(rb"[(<]")
_NAME_SHOWN = re.compile(rb"/([^\s\x00/\[\]()<>{}%]*)[\s\x00]*(?:Tj|'|\")")
_IN_STRING = re.compile(rb"[()\\]")


def _shown_bytes(data: bytes, *, most: int) -> int:
    """At least as many as the characters a content stream's strings hold, counted only
    until they pass `most`: each one shown in a Type3 font runs that glyph's drawing.
    Comments and inline images are read as if they were drawing: their strings count too."""
    # PDFium shows a name operand as a string too: `/abc Tj`.
    shown, at, end = sum(len(name) + 1 for name in _NAME_SHOWN.findall(data)), 0, len(data)
    while shown <= most and (match := _STRING_START.search(data, at)):
        start = match.start()
        if data[start] == ord("<"):
            if data[start + 1 : start + 2] == b"<":  # a dictionary
                at = start + 2
                continue
            close = data.find(b">", start)
            close = end if close < 0 else close
            shown += (close - start) // 2 + 1  # two hex digits a byte
            at = close + 1
            continue
        depth, at = 1, start + 1  # a literal string: balanced parentheses, backslash escapes
        while depth and at - start <= most and (inner := _IN_STRING.search(data, at)):
            if data[inner.start()] == ord("\\"):
                at = inner.start() + 2
                continue
            depth += 1 if data[inner.start()] == ord("(") else -1
            at = inner.start() + 1
        if depth:
            at = end
        shown += at - start
    return shown


def _check_jpeg_scans(data: bytes, what: str) -> None:
    """Refuse a JPEG (a file, or an image a PDF draws) of over MAX_JPEG_SCANS scans.

    A scan's start marker cannot occur inside coded data (a 0xFF there is followed by
    0x00), so counting it counts the scans, a camera's preview picture's too."""
    if (scans := data.count(b"\xff\xda")) > MAX_JPEG_SCANS:
        raise InvalidDocument(f"{what} {scans} scans; the limit is {MAX_JPEG_SCANS}")


def _filters(stream: Any) -> list[Any]:
    """A stream's filters, in the order they are undone (none: an empty list)."""
    filters = _resolved(stream.get("/Filter"))
    return list(filters) if isinstance(filters, list) else [filters] if filters else []


def _decoded(stream: Any, limit: int) -> bytes:
    """A stream decoded, but never past just over `limit` bytes, no stage of it either:
    a deflated bomb stops there, and so does a chain of filters each expanding the last."""
    data = bytes(stream._data)
    for name in _filters(stream):
        if name in ("/FlateDecode", "/Fl"):
            data = _inflated(data, limit)
        elif name in ("/LZWDecode", "/LZW"):
            # pypdf decodes LZW in Python, a second a megabyte and more: a content stream
            # of old PDFs holds far less than the most it may hold here.
            if len(data) > LZW_MOST_BYTES:
                raise InvalidDocument(f"an LZW stream of over {LZW_MOST_BYTES} bytes")
            data = pypdf.filters.LZWDecode.decode(data)
        elif decoder := _SIMPLE_FILTERS.get(name):
            data = decoder(data)
        else:
            return b""  # an image's filter: PDFium draws no instructions from it
        data = data[: limit + 1]
    return data[: limit + 1]


LZW_MOST_BYTES = 1024 * 1024
_SIMPLE_FILTERS: dict[str, Any] = {
    "/ASCIIHexDecode": pypdf.filters.ASCIIHexDecode.decode,
    "/AHx": pypdf.filters.ASCIIHexDecode.decode,
    "/ASCII85Decode": pypdf.filters.ASCII85Decode.decode,
    "/A85": pypdf.filters.ASCII85Decode.decode,
    "/RunLengthDecode": pypdf.filters.RunLengthDecode.decode,
    "/RL": pypdf.filters.RunLengthDecode.decode,
}


def _inflated(raw: bytes, limit: int) -> bytes:
    """Deflated data inflated a chunk at a time, never holding much over `limit` bytes."""
    inflate, parts, size, rest = zlib.decompressobj(), [], 0, raw
    try:
        while rest and size <= limit:
            part = inflate.decompress(rest, 1 << 20)
            parts.append(part)
            size += len(part)
            rest = inflate.unconsumed_tail
    except zlib.error:
        pass  # what PDFium makes of a damaged stream is bounded by what it decoded
    return b"".join(parts)


def _resolved(value: Any) -> Any:
    return value.get_object() if value is not None else None


def _check_tiff_directories(data: bytes, *, max_pages: int) -> None:
    """Walk a TIFF's chain of page directories: it must end, within the file and the limit.

    A directory that points back to one before it makes some readers (Tesseract's among
    them) read the same page for ever.
    """
    order = "<" if data[:2] == b"II" else ">"
    seen: set[int] = set()
    if len(data) < 8:
        raise InvalidDocument("TIFF is cut off before its first page directory")
    (offset,) = struct.unpack_from(f"{order}I", data, 4)
    while offset:
        if offset in seen:
            raise InvalidDocument("TIFF's page directories loop back on themselves")
        if len(seen) >= max_pages:
            raise InvalidDocument(f"TIFF has over {max_pages} pages; the limit is {max_pages}")
        seen.add(offset)
        try:
            (entries,) = struct.unpack_from(f"{order}H", data, offset)
            (offset,) = struct.unpack_from(f"{order}I", data, offset + 2 + 12 * entries)
        except struct.error as e:
            raise InvalidDocument("TIFF's page directory points outside the file") from e
    if not seen:
        raise InvalidDocument("TIFF has no pages")


def scan_dpi(value: object, *, default: int) -> int:
    """The resolution an image says it has (Pillow's `dpi`), if one a scan could have."""
    try:
        found = round(float(value[0]))  # type: ignore[index]
    except (TypeError, ValueError, IndexError, OverflowError):
        return default
    return found if 70 <= found <= 1200 else default


def image_pages(image: Image.Image) -> int:
    """The pages an opened image holds: a TIFF's frames; an MPO (a camera's JPEG carrying
    a preview picture after the photo) is the one photo."""
    return 1 if image.format == "MPO" else getattr(image, "n_frames", 1)


def _inspect_image(data: bytes, *, kind: str, max_pages: int, max_pixels: int, budget: int) -> int:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != PIL_FORMATS[kind] and not (kind == "jpeg" and image.format == "MPO"):
                raise InvalidDocument(f"content is not {kind.upper()}")
            frames = image_pages(image)
            if frames > max_pages:
                raise InvalidDocument(f"image has {frames} pages; the limit is {max_pages}")
            total = 0
            for frame in range(frames):
                # An animated PNG's frames lie inside its canvas, and seeking one decodes
                # those before it: its canvas's size stands for each, nothing decoded here.
                if image.format != "PNG":
                    image.seek(frame)
                width, height = image.size
                if width * height > max_pixels:
                    raise InvalidDocument(
                        f"image is {width}x{height} pixels; the limit is {max_pixels}"
                    )
                total += width * height
                if total > budget:
                    raise InvalidDocument(
                        f"the pages come to over {budget} pixels; that is the limit for one "
                        "document"
                    )
        if kind == "jpeg":
            _check_jpeg_scans(data, "JPEG has")
        if kind == "png":
            # Every PNG chunk carries a CRC: checking them all finds a cut-off or damaged
            # file in well under a millisecond. Decoding the pixels is left to the OCR
            # step, which decodes each page once for Tesseract and fails the document as
            # ValidationFailed if it does not decode (docpipe.ocr).
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
        return frames
    except InvalidDocument:
        raise
    # Pillow's plugins raise more than their documented errors on a crafted TIFF directory.
    except (
        OSError, UnidentifiedImageError, ValueError, SyntaxError, struct.error, TypeError,
        KeyError, IndexError, ZeroDivisionError, EOFError,
    ) as e:  # fmt: skip
        raise InvalidDocument(f"image does not decode: {describe_error(e)}") from e


def describe_error(error: Exception) -> str:
    """A library's message fit for a tenant: no object reprs, no memory addresses."""
    said = fit_for_tenant(str(error))
    if isinstance(error, LookupError):
        # A decoder's own slip on a crafted field, whose message alone ("88") says nothing.
        detail = f"{type(error).__name__} {said}".strip()
        return f"it holds a field the decoder cannot use ({detail})"
    return said or type(error).__name__


# Our own pixel limit replaces Pillow's warning-based one.
Image.MAX_IMAGE_PIXELS = None
