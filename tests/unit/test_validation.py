"""The cheap upload checks and the deep document checks."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import pypdf
import pytest

from docpipe.errors import InvalidDocument
from docpipe.validation import check_upload, describe_error, inspect_document, sniff_kind
from tests import documents

LIMITS = {"max_pages": 10, "max_pixels": 50_000_000}


def encrypted_pdf() -> bytes:
    reader = pypdf.PdfReader(io.BytesIO(documents.document("SECRET", "pdf")))
    writer = pypdf.PdfWriter()
    for page in reader.pages:
        writer.add_page(page)
    writer.encrypt(user_password="pw", algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["pdf", "png", "jpeg", "tiff"])
def test_each_allowed_kind_is_recognised_by_content_and_passes(kind: str) -> None:
    data = documents.document("HELLO", kind)
    assert sniff_kind(data[:8]) == kind
    assert check_upload(size=len(data), head=data[:8], max_bytes=10**8) == (kind, None)
    assert inspect_document(data, kind=kind, **LIMITS).page_count == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"GIF89a" + b"\0" * 10, "not a PDF", id="gif"),
        pytest.param(b"hello, this is text", "not a PDF", id="text-named-pdf"),
        pytest.param(b"%PDF-" + b"x" * 200, "limit", id="too-large"),
    ],
)
def test_cheap_checks_reject_with_a_reason(data: bytes, reason: str) -> None:
    kind, why = check_upload(size=len(data), head=data[:8], max_bytes=100)
    assert kind is None
    assert why is not None and reason in why


def damaged(data: bytes) -> bytes:
    """The same length, one byte of the image data changed, as a bad sector would."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize(
    ("make", "kind", "reason"),
    [
        pytest.param(
            lambda: documents.truncated(documents.document("X", "pdf")),
            "pdf",
            "PDF does not open",
            id="truncated-pdf",
        ),
        pytest.param(
            lambda: documents.truncated(documents.document("X", "png")),
            "png",
            "does not decode",
            id="truncated-png",
        ),
        pytest.param(
            lambda: damaged(documents.document("X", "png")),
            "png",
            "does not decode",
            id="damaged-png",
        ),
        pytest.param(
            lambda: documents.truncated(documents.document("X", "jpeg")),
            "jpeg",
            "does not decode",
            id="truncated-jpeg",
        ),
        pytest.param(
            lambda: documents.truncated(documents.document("X", "tiff")),
            "tiff",
            "does not decode",
            id="truncated-tiff",
        ),
        pytest.param(encrypted_pdf, "pdf", "encrypted", id="encrypted-pdf"),
        pytest.param(
            lambda: documents.multipage_pdf([str(i) for i in range(11)]),
            "pdf",
            "11 pages; the limit is 10",
            id="too-many-pages",
        ),
        pytest.param(lambda: documents.document("X", "png"), "pdf", "not PDF", id="kind-mismatch"),
    ],
)
def test_deep_checks_reject_broken_documents(make, kind: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    """Refused by the deep check, or at the latest by the decoding that starts OCR: either
    way the document ends ValidationFailed with the reason."""
    from docpipe.ocr import ocr_document

    data = make()
    with pytest.raises(InvalidDocument, match=reason):
        inspect_document(data, kind=kind, **LIMITS)
        ocr_document(data, kind=kind, language="eng", dpi=300, page_timeout=60)


def _tiff_whose_second_page_has_no_size() -> bytes:
    """Two page directories; the second names no width or height (Pillow: TypeError)."""

    def directory(entries: list[tuple[int, int, int, int]], after: int) -> bytes:
        fields = b"".join(struct.pack("<HHII", *entry) for entry in entries)
        return struct.pack("<H", len(entries)) + fields + struct.pack("<I", after)

    page = [(256, 3, 1, 4), (257, 3, 1, 4), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, 200), (277, 3, 1, 1), (278, 3, 1, 4), (279, 4, 1, 16)]  # fmt: skip
    first = directory(page, 0)
    first = directory(page, 8 + len(first))
    second = directory([(262, 3, 1, 1), (273, 4, 1, 200), (279, 4, 1, 16)], 0)
    data = b"II*\0" + struct.pack("<I", 8) + first + second
    return data + b"\0" * (220 - len(data))


def test_a_tiff_page_without_a_size_is_refused_with_a_reason() -> None:
    with pytest.raises(InvalidDocument, match="^image does not decode: "):
        inspect_document(_tiff_whose_second_page_has_no_size(), kind="tiff", **LIMITS)


def test_a_decoders_bare_key_error_is_told_as_a_field_it_cannot_use() -> None:
    """Pillow's TIFF plugin can fail on a crafted tag with KeyError(88): "88" alone
    tells a tenant nothing."""
    assert describe_error(KeyError(88)) == "it holds a field the decoder cannot use (KeyError 88)"
    assert describe_error(TypeError("Missing dimensions")) == "Missing dimensions"


def test_pixel_limit_is_enforced_before_decoding() -> None:
    data = documents.document("X", "png")  # 1240 x 400 pixels
    with pytest.raises(InvalidDocument, match="pixels; the limit is 400000"):
        inspect_document(data, kind="png", max_pages=1, max_pixels=400_000)


def test_multipage_pdf_reports_its_pages() -> None:
    data = documents.multipage_pdf(["ONE", "TWO", "THREE"])
    assert inspect_document(data, kind="pdf", **LIMITS).page_count == 3


def test_an_animated_pngs_frames_are_not_decoded_by_the_deep_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seeking an animated PNG's frame decodes every frame before it: the deep check, which
    runs in the flow run, reads the canvas's size instead (pixels are the reader's job)."""
    import io

    from PIL import Image, ImageFile

    frames = [Image.new("L", (400, 300), shade) for shade in (0, 128, 255)]
    animated = io.BytesIO()
    frames[0].save(animated, "PNG", save_all=True, append_images=frames[1:])
    decoded = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self: ImageFile.ImageFile) -> object:
        decoded.append(self)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    inspection = inspect_document(animated.getvalue(), kind="png", max_pages=10, max_pixels=10**6)
    assert inspection.page_count == 3
    assert decoded == []


def _drawing_bomb(how: str) -> bytes:
    """A page of a few kilobytes whose drawing instructions come to 28 MB as PDFium runs
    them: PDFium builds every stroke in memory (30 million of them took it past 5 GB)."""
    from pypdf.generic import (
        ArrayObject,
        DictionaryObject,
        FloatObject,
        NameObject,
        NumberObject,
        StreamObject,
    )

    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(612, 792)

    def drawing(data: bytes, *, form: bool = False, draws: dict[str, Any] | None = None) -> Any:
        made = StreamObject()
        made._data = zlib.compress(data, 9)
        made[NameObject("/Filter")] = NameObject("/FlateDecode")
        if form:
            made[NameObject("/Type")] = NameObject("/XObject")
            made[NameObject("/Subtype")] = NameObject("/Form")
            made[NameObject("/BBox")] = ArrayObject([NumberObject(v) for v in (0, 0, 612, 792)])
        if draws is not None:
            made[NameObject("/Resources")] = resources(draws)
        return writer._add_object(made)

    def resources(draws: dict[str, Any]) -> DictionaryObject:
        named = DictionaryObject({NameObject(f"/{n}"): f for n, f in draws.items()})
        return DictionaryObject({NameObject("/XObject"): named})

    def type3(glyph: bytes) -> Any:
        """A Type3 font whose glyph `a` is the drawing `glyph`."""
        a = NameObject("/a")
        return writer._add_object(
            DictionaryObject(
                {
                    NameObject("/Type"): NameObject("/Font"),
                    NameObject("/Subtype"): NameObject("/Type3"),
                    NameObject("/FontBBox"): ArrayObject([NumberObject(v) for v in (0, 0, 9, 9)]),
                    NameObject("/FontMatrix"): ArrayObject(
                        [FloatObject(v) for v in (0.001, 0, 0, 0.001, 0, 0)]
                    ),
                    NameObject("/CharProcs"): DictionaryObject({NameObject("/a"): drawing(glyph)}),
                    NameObject("/Encoding"): DictionaryObject(
                        {NameObject("/Differences"): ArrayObject([NumberObject(97), a])}
                    ),
                    NameObject("/FirstChar"): NumberObject(97),
                    NameObject("/LastChar"): NumberObject(97),
                    NameObject("/Widths"): ArrayObject([NumberObject(1000)]),
                }
            )
        )

    strokes = b"0 0 m 1 1 l S\n"
    if how == "type3-text":  # not a bomb: a page of text in a font of small glyphs
        fonts = DictionaryObject({NameObject("/F1"): type3(b"1000 0 d0\n" + strokes * 20)})
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
        lines = b"".join(b"0 -14 Td (" + b"a" * 80 + b") Tj\n" for _ in range(50))
        page[NameObject("/Contents")] = drawing(b"BT /F1 12 Tf 72 760 Td\n" + lines + b"ET")
    elif how.startswith("type3"):  # a glyph of 100,000 strokes, shown 20 times
        fonts = DictionaryObject({NameObject("/F1"): type3(b"1000 0 d0\n" + strokes * 100_000)})
        page_resources = DictionaryObject({NameObject("/Font"): fonts})
        page[NameObject("/Resources")] = page_resources
        shown = b"(" + b"a" * 20 + b") Tj"
        if how == "type3":
            page[NameObject("/Contents")] = drawing(b"BT /F1 12 Tf 72 700 Td " + shown + b" ET")
        else:  # shown by a form of no fonts of its own, in the font its page set
            form = drawing(b"BT 72 700 Td " + shown + b" ET", form=True, draws={})
            page_resources[NameObject("/XObject")] = DictionaryObject({NameObject("/A"): form})
            page[NameObject("/Contents")] = drawing(b"BT /F1 12 Tf ET /A Do")
    elif how == "fallback":  # forms of resources with no forms, drawing the page's
        inner = drawing(strokes * 1000, form=True)
        outer = drawing(b"/B Do\n" * 100, form=True)
        for form in (inner, outer):
            form.get_object()[NameObject("/Resources")] = DictionaryObject(
                {NameObject("/ProcSet"): ArrayObject([NameObject("/PDF")])}
            )
        page[NameObject("/Resources")] = resources({"A": outer, "B": inner})
        page[NameObject("/Contents")] = drawing(b"/A Do\n" * 20)
    elif how in ("pattern", "soft mask"):  # painted with 20 times; its drawing is forms'
        inner = drawing(strokes * 1000, form=True)
        cell = drawing(b"/B Do\n" * 100, form=True, draws={"B": inner})
        if how == "pattern":  # a tiling pattern's cell
            for key, value in {"/PatternType": 1, "/PaintType": 1, "/TilingType": 1,
                               "/XStep": 612, "/YStep": 792}.items():  # fmt: skip
                cell.get_object()[NameObject(key)] = NumberObject(value)
            kind, named, use = "/Pattern", cell, b"/Pattern cs /P scn"
        else:  # a graphics state's soft mask, its group drawn where the state is set
            mask = {"/S": NameObject("/Luminosity"), "/G": cell}
            named = DictionaryObject({NameObject("/SMask"): DictionaryObject(
                {NameObject(k): v for k, v in mask.items()})})  # fmt: skip
            kind, use = "/ExtGState", b"/P gs"
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject(kind): DictionaryObject({NameObject("/P"): named})}
        )
        page[NameObject("/Contents")] = drawing((use + b" 0 0 612 792 re f\n") * 20)
    elif how.startswith("named "):  # forms drawn by names written as PDFium reads them
        inner = drawing(strokes * 1000, form=True)
        outer = drawing(b"/B Do\n" * 100, form=True, draws={"B": inner})
        page[NameObject("/Resources")] = resources({"A": outer})
        use = {"string": b"(A) Do", "hex": b"<41> Do",
               "nul": b"/A\x00Do"}[how.removeprefix("named ")]  # fmt: skip
        page[NameObject("/Contents")] = drawing((use + b"\n") * 20)
    elif how == "shown by name":  # `/aaaa Tj`: PDFium shows a name as a string
        fonts = DictionaryObject({NameObject("/F1"): type3(b"1000 0 d0\n" + strokes * 20_000)})
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
        page[NameObject("/Contents")] = drawing(b"BT /F1 12 Tf /" + b"a" * 100 + b" Tj ET")
    elif how == "ink":  # no look of its own: PDFium draws its strokes, 1,000 of 2,000 numbers
        stroke = writer._add_object(ArrayObject([NumberObject(i % 600) for i in range(2000)]))
        ink = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Annot"),
                NameObject("/Subtype"): NameObject("/Ink"),
                NameObject("/Rect"): ArrayObject([NumberObject(v) for v in (0, 0, 600, 600)]),
                NameObject("/InkList"): ArrayObject([stroke] * 1000),
            }
        )
        page[NameObject("/Annots")] = ArrayObject([writer._add_object(ink)])
    elif how == "contents":  # the page's own
        page[NameObject("/Contents")] = drawing(strokes * 2_000_000)
    elif how == "repeated":  # one stream listed 20 times
        page[NameObject("/Contents")] = ArrayObject([drawing(strokes * 100_000)] * 20)
    elif how == "nested":  # a form drawing a form 100 times, drawn 20 times
        inner = drawing(strokes * 1000, form=True)
        outer = drawing(b"/B Do\n" * 100, form=True, draws={"B": inner})
        page[NameObject("/Resources")] = resources({"A": outer})
        page[NameObject("/Contents")] = drawing(b"/A Do\n" * 20)
    elif how == "appearance":  # an annotation's look
        square = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Annot"),
                NameObject("/Subtype"): NameObject("/Square"),
                NameObject("/Rect"): ArrayObject([NumberObject(v) for v in (0, 0, 9, 9)]),
                NameObject("/AP"): DictionaryObject(
                    {NameObject("/N"): drawing(strokes * 2_000_000, form=True)}
                ),
            }
        )
        page[NameObject("/Annots")] = ArrayObject([writer._add_object(square)])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize(
    "how",
    [
        "contents",
        "repeated",
        "nested",
        "appearance",
        "type3",
        "type3-in-form",
        "fallback",
        "pattern",
        "soft mask",
        "named string",
        "named hex",
        "named nul",
        "shown by name",
        "ink",
    ],
)
def test_a_page_of_millions_of_strokes_is_refused_before_it_is_drawn(how: str) -> None:
    data = _drawing_bomb(how)
    assert len(data) < 200_000
    with pytest.raises(InvalidDocument, match="page 1's drawing instructions come to over"):
        inspect_document(data, kind="pdf", max_content_bytes=16 * 1024 * 1024, **LIMITS)


def _page_drawing(content: bytes, **resources: Any) -> bytes:
    from pypdf.generic import DictionaryObject, NameObject, StreamObject

    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(612, 792)
    kinds = {
        NameObject(f"/{kind}"): DictionaryObject(
            {NameObject(f"/{name}"): writer._add_object(made) for name, made in named.items()}
        )
        for kind, named in resources.items()
    }
    page[NameObject("/Resources")] = DictionaryObject(kinds)
    stream = StreamObject()
    stream._data = content
    page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _image(width: int, height: int) -> Any:
    """An image XObject of this size: PDFium decodes it whole, however small it is drawn."""
    from pypdf.generic import NameObject, NumberObject, StreamObject

    image = StreamObject()
    image._data = zlib.compress(b"\0" * 1000)
    for key, value in {"/Type": NameObject("/XObject"), "/Subtype": NameObject("/Image"),
                       "/Width": NumberObject(width), "/Height": NumberObject(height),
                       "/ColorSpace": NameObject("/DeviceGray"),
                       "/BitsPerComponent": NumberObject(1),
                       "/Filter": NameObject("/FlateDecode")}.items():  # fmt: skip
        image[NameObject(key)] = value
    return image


def test_a_page_drawing_images_of_too_many_pixels_is_refused() -> None:
    """LIMITS lets a page have 50 million pixels; so may the images it draws, in all."""
    drawn = b"q 10 0 0 10 0 0 cm /I Do Q\n"
    ok = _page_drawing(drawn * 4, XObject={"I": _image(3000, 4000)})
    assert inspect_document(ok, kind="pdf", **LIMITS).page_count == 1
    for data in (
        _page_drawing(drawn * 5, XObject={"I": _image(3000, 4000)}),  # 60 million as drawn
        _page_drawing(drawn, XObject={"I": _image(60000, 60000)}),
        _page_drawing(b"BI /W 60000 /H 60000 /BPC 1 /CS /G /F /CCF ID \0\0 EI"),  # inline
    ):
        with pytest.raises(InvalidDocument, match="its images come to over 50000000 pixels"):
            inspect_document(data, kind="pdf", **LIMITS)


def test_an_lzw_stream_past_its_bound_is_refused_before_pypdf_decodes_it() -> None:
    """pypdf decodes LZW in Python: 74 MB of LZW codes behind two deflates took 32 s."""
    from pypdf.generic import ArrayObject, NameObject, StreamObject

    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(612, 792)
    stream = StreamObject()
    stream._data = zlib.compress(b"\x80" * 2_000_000)
    stream[NameObject("/Filter")] = ArrayObject(
        [NameObject("/FlateDecode"), NameObject("/LZWDecode")]
    )
    page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(InvalidDocument, match="an LZW stream of over 1048576 bytes"):
        inspect_document(out.getvalue(), kind="pdf", **LIMITS)


def test_a_page_of_text_in_a_type3_font_passes() -> None:
    """4,000 glyphs of 20 strokes: what TeX's bitmap fonts and the like draw."""
    assert inspect_document(_drawing_bomb("type3-text"), kind="pdf", **LIMITS).page_count == 1


def _jpeg_of_scans(repeats: int) -> bytes:
    """A progressive JPEG whose last scan comes `repeats` more times: each one is decoded
    over the whole picture again (a decoder accepts them all)."""
    image = documents.page_image([documents.phrase(5)], width=1000)
    buf = io.BytesIO()
    image.save(buf, "JPEG", progressive=True, quality=50)
    data = buf.getvalue()
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + b"\xff\xd9"


def test_a_jpeg_of_thousands_of_scans_is_refused_before_it_is_decoded() -> None:
    assert inspect_document(_jpeg_of_scans(10), kind="jpeg", **LIMITS).page_count == 1
    with pytest.raises(InvalidDocument, match=r"JPEG has \d+ scans; the limit is 100"):
        inspect_document(_jpeg_of_scans(3000), kind="jpeg", **LIMITS)


def test_a_pdf_drawing_a_jpeg_of_thousands_of_scans_is_refused() -> None:
    """The scan limit holds for a JPEG inside a PDF too: PDFium decodes every scan."""
    from pypdf.generic import DictionaryObject, NameObject, NumberObject, StreamObject

    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(612, 792)
    image = StreamObject()
    image._data = _jpeg_of_scans(3000)
    for key, value in {
        "/Type": NameObject("/XObject"), "/Subtype": NameObject("/Image"),
        "/Width": NumberObject(1000), "/Height": NumberObject(400),
        "/ColorSpace": NameObject("/DeviceGray"), "/BitsPerComponent": NumberObject(8),
        "/Filter": NameObject("/DCTDecode"),
    }.items():  # fmt: skip
        image[NameObject(key)] = value
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/XObject"): DictionaryObject({NameObject("/Im0"): writer._add_object(image)})}
    )
    drawn = StreamObject()
    drawn._data = b"q 612 0 0 245 0 0 cm /Im0 Do Q"
    page[NameObject("/Contents")] = writer._add_object(drawn)
    out = io.BytesIO()
    writer.write(out)

    with pytest.raises(InvalidDocument, match=r"page 1: it draws a JPEG of \d+ scans"):
        inspect_document(out.getvalue(), kind="pdf", **LIMITS)
