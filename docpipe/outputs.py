"""What one OCR pass makes of a document: the searchable PDF, hOCR, and word boxes."""

from __future__ import annotations

import html
import io
import math
import re
import statistics
import struct
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pypdf
from PIL import Image
from pypdf import PageObject, Transformation
from pypdf.errors import PyPdfError
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    NameObject,
    NumberObject,
    StreamObject,
)

from docpipe.errors import OcrFailed

if TYPE_CHECKING:
    from docpipe.ocr import PageRead


class TextLayer(Protocol):
    """What the searchable PDF needs of a page as read (docpipe.ocr.PageRead has it)."""

    @property
    def pdf(self) -> bytes | None: ...
    @property
    def dpi(self) -> int: ...
    @property
    def rotation(self) -> int: ...
    @property
    def skew(self) -> float: ...


@dataclass(frozen=True)
class Word:
    text: str
    left: int
    top: int
    right: int
    bottom: int
    confidence: float


_WORD = re.compile(
    r"<span class='ocrx_word'[^>]*?title='bbox (\d+) (\d+) (\d+) (\d+); x_wconf (\d+)'[^>]*>"
    r"(.*?)</span>",
    re.DOTALL,
)
_LINE = re.compile(
    r"class='ocr_(?:line|header|caption|textfloat)'[^>]*?"
    r"title=\"bbox (\d+) \d+ (\d+) \d+; baseline (-?[\d.]+) "
)
_TAG = re.compile(r"<[^>]+>")


def words_of(hocr: str) -> list[Word]:
    """Every word Tesseract wrote in a page's hOCR, with its box and confidence."""
    return [
        Word(html.unescape(_TAG.sub("", text)), int(l), int(t), int(r), int(b), float(c))
        for l, t, r, b, c, text in _WORD.findall(hocr)  # noqa: E741
    ]


def confidence(hocr: str) -> float:
    """The page's mean word confidence (0-100), longer words weighing more; 0 with no words."""
    words = [w for w in words_of(hocr) if any(ch.isalnum() for ch in w.text)]
    letters = sum(len(w.text) for w in words)
    return sum(w.confidence * len(w.text) for w in words) / letters if letters else 0.0


def misturned(words: list[Word]) -> bool:
    """Whether a read suggests the page was not upright: garbled, or its words stand on end.

    Tesseract reads a page turned a quarter well enough, but its words come out tall and
    narrow; a page upside down comes out as confident-looking nonsense of low confidence.
    """
    posture = _posture(words)
    return posture is not None and (posture[0] < 60 or posture[1])


def likely_turns(words: list[Word]) -> list[int]:
    """The clockwise turns, most likely first, that may bring a misturned page upright.

    Words that stand on end mean a quarter turn: if Tesseract read them well, the lines
    run top to bottom and the page wants a quarter turn back (270); else the other way.
    Lying but garbled words mean the page is upside down. No words: nothing to turn.
    """
    if not misturned(words):
        return []
    mean, standing = _posture(words) or (0.0, False)
    if standing:
        return [270, 90] if mean >= 60 else [90, 270]
    return [180]


def _posture(words: list[Word]) -> tuple[float, bool] | None:
    """(mean confidence, whether most longer words stand on end) of a read's real words,
    None if it has none."""
    words = [w for w in words if sum(ch.isalnum() for ch in w.text) >= 2]
    if not words:
        return None
    mean = sum(w.confidence for w in words) / len(words)
    long = [w for w in words if len(w.text) >= 4]
    standing = sum(1 for w in long if (w.bottom - w.top) > (w.right - w.left))
    return mean, bool(long) and standing > len(long) / 2


def skew_degrees(hocr: str) -> float:
    """How far the page's text lines tilt, in degrees counter-clockwise (from their baselines)."""
    slopes = [
        float(slope) for left, right, slope in _LINE.findall(hocr) if int(right) - int(left) >= 100
    ]
    if not slopes:
        return 0.0
    return -math.degrees(math.atan(statistics.median(slopes)))


def hocr_document(pages: list[PageRead]) -> str:
    """One hOCR document of every page, ids and page numbers running on, no file paths."""
    if not pages:
        return ""
    head = pages[0].hocr.split("<body>", 1)[0]
    bodies = []
    for number, page in enumerate(pages, start=1):
        body = page.hocr.split("<body>", 1)[-1].rsplit("</body>", 1)[0]
        body = re.sub(r"(id=')([a-z]+)_1((?:_\d+)?')", rf"\g<1>\g<2>_{number}\g<3>", body)
        # Tesseract names the temporary file it read: that is nobody's business.
        body = re.sub(r'image "[^"]*"; ', "", body)
        body = body.replace("ppageno 0", f"ppageno {number - 1}")
        bodies.append(body.strip("\n"))
    return head + "<body>\n" + "\n".join(bodies) + "\n </body>\n</html>\n"


def words_document(pages: list[PageRead]) -> dict[str, Any]:
    """Every word with its page, box (pixels of the page as read) and confidence."""
    return {
        "pages": [
            {
                "page": number,
                "width": page.width,
                "height": page.height,
                "dpi": page.dpi,
                "rotation": page.rotation,
                "skew": round(page.skew, 2),
                "words": [
                    {
                        "text": w.text,
                        "bbox": [w.left, w.top, w.right, w.bottom],
                        "confidence": w.confidence,
                    }
                    for w in words_of(page.hocr)
                    if w.text.strip()
                ],
            }
            for number, page in enumerate(pages, start=1)
        ]
    }


def searchable_pdf(
    original: bytes,
    *,
    kind: str,
    pages: Sequence[TextLayer],
    own_text: Collection[int] = (),
) -> bytes:
    """The document as a PDF with its text, invisible, over each page, every page upright.

    A PDF keeps its own pages; an image's frames become pages that hold the image itself,
    losslessly (a PNG's or JPEG's own compressed data where the PDF format takes it as
    it is). Each page is turned upright where it was not (by /Rotate), and Tesseract's
    text layer is laid over it at the page's size and the angle of its words; except
    over the pages numbered (from 0) in `own_text`, a PDF's pages that have text of
    their own already, which a second layer would only repeat to a search.
    """
    writer = pypdf.PdfWriter()
    disarmed = False
    try:
        if kind == "pdf":
            reader = pypdf.PdfReader(io.BytesIO(original))
            if len(reader.pages) != len(pages):
                raise OcrFailed(
                    f"the PDF's pages do not agree ({len(reader.pages)} or {len(pages)}): "
                    "no searchable PDF can be made of it"
                )
            added = [writer.add_page(page) for page in reader.pages]
            disarmed = _disarm(added)
            for index, (page, read) in enumerate(zip(added, pages, strict=True)):
                _lay_text_over(page, read, layer=index not in own_text)
        else:
            for index, read in enumerate(pages):
                page = _image_page(writer, original, kind=kind, index=index, dpi=read.dpi)
                _lay_text_over(page, read)
        writer.add_metadata({"/Producer": "docpipe (Tesseract)"})
        out = io.BytesIO()
        writer.write(out)
        if kind == "pdf" and disarmed:
            # What was taken off the pages is still among the writer's objects: a copy
            # holds only what the document reaches.
            copy = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(out.getvalue())))
            out = io.BytesIO()
            copy.write(out)
    except (PyPdfError, ValueError, KeyError, TypeError) as e:
        raise OcrFailed(f"the searchable PDF could not be made: {e}") from e
    except (AttributeError, RecursionError) as e:  # pypdf's own slips on a crafted file
        raise OcrFailed(
            f"the searchable PDF could not be made: the PDF holds objects pypdf cannot copy "
            f"({type(e).__name__})"
        ) from e
    return out.getvalue()


def _lay_text_over(page: PageObject, read: TextLayer, *, layer: bool = True) -> None:
    """Turn the page upright and lay its text layer over it (unless not `layer`); a page of
    the writer: pypdf edits only those."""
    rotate = (_shown_rotation(page) + read.rotation) % 360
    page[NameObject("/Rotate")] = NumberObject(rotate)
    if not layer:
        return
    assert read.pdf is not None
    text = pypdf.PdfReader(io.BytesIO(read.pdf)).pages[0]
    x0, y0, w, h = _shown_box(page)
    # The page as a viewer shows it, in points; the layer was made at that size.
    view_w, view_h = (w, h) if rotate in (0, 180) else (h, w)
    layer_w, layer_h = float(text.mediabox.width), float(text.mediabox.height)
    ctm = (
        Transformation()
        .scale(view_w / layer_w, view_h / layer_h)
        # Straightened before it was read: the words go back to the page's own angle.
        .translate(-view_w / 2, -view_h / 2)
        .rotate(read.skew)
        .translate(view_w / 2, view_h / 2)
    )
    # From the page as shown to the page's own coordinates, under its /Rotate.
    ctm = {
        0: ctm.translate(x0, y0),
        90: ctm.rotate(90).translate(x0 + w, y0),
        180: ctm.rotate(180).translate(x0 + w, y0 + h),
        270: ctm.rotate(270).translate(x0, y0 + h),
    }[rotate]
    page.merge_transformed_page(text, ctm, over=True, expand=False)


# Annotations that play, launch or carry something rather than mark or link the page.
_CARRIERS = {"/FileAttachment", "/Sound", "/Movie", "/Screen", "/RichMedia", "/3D"}
_CARRIER_NAMES = {carrier.lstrip("/") for carrier in _CARRIERS}  # a kind given as text too
# The actions a link may keep: to a web address, or to a place in this document.
_LINKS = {"/URI", "/GoTo"}
_WEB = ("http:", "https:", "mailto:")


def _resolved(entry: Any) -> Any:
    """An entry's value itself: a viewer follows a reference where one stands."""
    return entry.get_object() if entry is not None else None


def _plain_link(action: Any) -> bool:
    """Whether an action only takes the reader to a web address or a place here."""
    kind = _resolved(action.get("/S")) if isinstance(action, DictionaryObject) else None
    if kind not in _LINKS:
        return False
    if kind == "/GoTo":
        return True
    address = _resolved(action.get("/URI"))
    return isinstance(address, str) and address.strip().lower().startswith(_WEB)


# Keys that hold what a viewer runs or opens, wherever they stand: actions on opening or
# on an event (/AA, /OpenAction), scripts (/JS, /JavaScript), actions chained after a
# link (/Next) or a page's when shown (/PA), attached files (/EF, /FS, /EmbeddedFiles), a
# document's own name trees and forms (/Names, /AcroForm) and an app's private data
# (/PieceInfo, which may point back at the whole original).
_ACTIVE_KEYS = {
    "/AA", "/OpenAction", "/JS", "/JavaScript", "/Next", "/PA", "/EF", "/FS",
    "/EmbeddedFiles", "/Names", "/AcroForm", "/PieceInfo",
}  # fmt: skip
# What no page of ours may reach: the original's catalog or page tree (and through them
# everything of the document's), or a file.
_CUT_TYPES = {"/Catalog", "/Pages", "/Filespec", "/EmbeddedFile"}
# Actions other than a link's, wherever they stand: harmless where no viewer looks for
# them, but not ours to serve back.
_ACTIONS = {
    "/Launch", "/GoToR", "/GoToE", "/JavaScript", "/SubmitForm", "/ResetForm",
    "/ImportData", "/Rendition", "/Sound", "/Movie", "/RichMediaExecute", "/GoTo3DView",
    "/Hide", "/Named", "/SetOCGState", "/Thread",
}  # fmt: skip


def _disarm(pages: Sequence[PageObject]) -> bool:
    """Keep the PDF's pages, links and marks without what a viewer would run or open on
    its own or at a click (the searchable PDF is served inline). Everything the pages
    reach is walked, not only their annotations: a popup, an annotation's reply, a
    form XObject or a key of an app's own may lead anywhere in the original. Actions
    that are not a plain link (a script, a program to launch, a form to send) go, and
    so do annotations that carry a file or play media, and the keys in _ACTIVE_KEYS.
    Whether it took anything off."""
    ours = {id(page) for page in pages}
    seen: set[int] = set()
    waiting: list[Any] = list(pages)
    changed = False
    while waiting:
        item = _resolved(waiting.pop())
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, DictionaryObject):
            for key in list(item.keys()):
                if key == "/Parent" and id(item) in ours:
                    continue  # a page's own place in the new document
                value = _resolved(item[key])
                if (
                    key in _ACTIVE_KEYS
                    or _cut(value)
                    or (key == "/A" and not _plain_link(value))
                    or (key == "/Annots" and not isinstance(value, ArrayObject))  # not a list
                ):
                    del item[key]
                    changed = True
                    continue
                if key == "/Annots":  # annotations are dictionaries; anything else goes
                    annotations = [a for a in value if isinstance(_resolved(a), DictionaryObject)]
                    changed |= len(annotations) != len(value)
                    value[:] = annotations
                waiting.append(item[key])
        elif isinstance(item, ArrayObject):
            kept = [entry for entry in item if not _cut(_resolved(entry))]
            if len(kept) != len(item):
                item[:] = kept
                changed = True
            waiting.extend(item)
    return changed


def _cut(value: Any) -> bool:
    """Whether a reference to `value` goes: a document's or a file's dictionary, or an
    annotation that carries a file or plays media."""
    if not isinstance(value, DictionaryObject):
        return False
    # Compared as text: a kind given as a string, not a name, still says what it is.
    kind, subtype, action = (str(_resolved(value.get(key))) for key in ("/Type", "/Subtype", "/S"))
    return (
        kind in _CUT_TYPES
        or subtype.lstrip("/") in _CARRIER_NAMES
        or action in _ACTIONS
        or (action == "/URI" and not _plain_link(value))
        or "/EF" in value
    )


def _image_page(
    writer: pypdf.PdfWriter, original: bytes, *, kind: str, index: int, dpi: int
) -> PageObject:
    """A new page of the writer showing frame `index` of an image, at `dpi`, as it is."""
    image = _embedded_image(original, kind=kind, index=index)
    width = int(image["/Width"]) * 72 / dpi  # type: ignore[call-overload]
    height = int(image["/Height"]) * 72 / dpi  # type: ignore[call-overload]
    page = writer.add_blank_page(width, height)
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/XObject"): DictionaryObject({NameObject("/Im0"): writer._add_object(image)})}
    )
    content = DecodedStreamObject()
    content.set_data(f"q {width:.4f} 0 0 {height:.4f} 0 0 cm /Im0 Do Q".encode())
    page[NameObject("/Contents")] = writer._add_object(content)
    return page


def _embedded_image(original: bytes, *, kind: str, index: int) -> StreamObject:
    """An image XObject of the frame: a plain PNG's or JPEG's own data, else its pixels
    (as docpipe decoded them for OCR) compressed losslessly."""
    image = StreamObject()
    fields: dict[str, Any]
    png = _plain_png(original) if kind == "png" else None
    with Image.open(io.BytesIO(original)) as frames:
        if png is not None and png[:2] == frames.size:  # the size that was checked
            width, height, colors, data = png
            fields = {
                "/Filter": NameObject("/FlateDecode"),
                "/DecodeParms": DictionaryObject(
                    {
                        NameObject("/Predictor"): NumberObject(15),
                        NameObject("/Colors"): NumberObject(colors),
                        NameObject("/BitsPerComponent"): NumberObject(8),
                        NameObject("/Columns"): NumberObject(width),
                    }
                ),
                "/ColorSpace": NameObject("/DeviceGray" if colors == 1 else "/DeviceRGB"),
                "/BitsPerComponent": NumberObject(8),
            }
        elif kind == "jpeg" and frames.mode in ("L", "RGB") and getattr(frames, "n_frames", 1) == 1:
            width, height, data = frames.width, frames.height, original
            fields = {
                "/Filter": NameObject("/DCTDecode"),
                "/ColorSpace": NameObject("/DeviceGray" if frames.mode == "L" else "/DeviceRGB"),
                "/BitsPerComponent": NumberObject(8),
            }
        else:
            frames.seek(index)
            frame = opaque(frames)
            frame.load()
            width, height = frame.size
            data = zlib.compress(frame.tobytes())
            fields = {
                "/Filter": NameObject("/FlateDecode"),
                "/ColorSpace": NameObject("/DeviceRGB" if frame.mode == "RGB" else "/DeviceGray"),
                "/BitsPerComponent": NumberObject(1 if frame.mode == "1" else 8),
            }
    image._data = data
    image.update({NameObject(key): value for key, value in fields.items()})
    image.update(
        {
            NameObject("/Type"): NameObject("/XObject"),
            NameObject("/Subtype"): NameObject("/Image"),
            NameObject("/Width"): NumberObject(width),
            NameObject("/Height"): NumberObject(height),
        }
    )
    return image


def _plain_png(data: bytes) -> tuple[int, int, int, bytes] | None:
    """(width, height, colours, compressed pixels) of an 8-bit grey or RGB PNG without
    interlacing or transparency, whose data a PDF reads as it is; else None."""
    position, chunks, header = 8, [], None
    while position + 8 <= len(data):
        length, name = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if name == b"IHDR":
            if position != 8 or len(body) != 13:  # a header only where it belongs, once
                return None
            width, height, depth, colour, _, _, interlaced = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (0, 2) or interlaced:
                return None
            header = (width, height, 1 if colour == 0 else 3)
        elif name == b"IDAT":
            chunks.append(body)
        elif name in (b"tRNS", b"PLTE", b"acTL"):  # transparent, a palette, or animated
            return None
        elif name == b"IEND":
            break
        position += 12 + length
    return (*header, b"".join(chunks)) if header and chunks else None


def opaque(image: Image.Image) -> Image.Image:
    """A frame in a mode Tesseract reads; what was transparent shows as white paper, and
    deeper greys (16-bit, 32-bit, floating point) are scaled to 8 bits, not clipped."""
    # A grey or colour PNG may name one colour see-through (tRNS) too.
    see_through = "transparency" in image.info and not image.mode.startswith("I")
    if image.mode in ("1", "L", "RGB") and not see_through:
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _eight_bit_grey(image)
    if image.mode in ("RGBA", "LA", "PA") or see_through:
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("RGB")
    return image.convert("RGB")


def _eight_bit_grey(image: Image.Image) -> Image.Image:
    import numpy as np  # here: the reader (docpipe.reader_server) needs numpy only for this

    levels = np.asarray(image, dtype=np.float64)
    low, high = float(levels.min(initial=0)), float(levels.max(initial=0))
    if low >= 0 and high <= 255 and image.mode != "F":
        scaled = levels
    elif low >= 0 and high <= 65535 and image.mode != "F":
        scaled = levels / 257  # 16 bits' white is 8 bits' white
    else:  # anything else: its own darkest and lightest are black and white
        scaled = (levels - low) * (255 / (high - low)) if high > low else levels * 0 + 255
    return Image.fromarray(scaled.round().astype(np.uint8), "L")


def _shown_rotation(page: PageObject) -> int:
    """The page's /Rotate as PDFium draws it: a number's quarter turns, rounded toward
    zero; anything else (a name, a string, a number past any int) as none."""
    value = page.get("/Rotate", 0)
    value = value.get_object() if hasattr(value, "get_object") else value
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 2**31:
        return int(value / 90) % 4 * 90
    return 0


def _shown_box(page: PageObject) -> tuple[float, float, float, float]:
    """(left, bottom, width, height) of what PDFium draws: the crop box inside the media
    box, whichever way round their corners are given."""

    def corners(box: Any) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = (float(v) for v in box)
        return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)

    media = corners(page.mediabox)
    crop = corners(page.cropbox)
    left, bottom = max(media[0], crop[0]), max(media[1], crop[1])
    right, top = min(media[2], crop[2]), min(media[3], crop[3])
    if right <= left or top <= bottom:  # a crop box outside the page: PDFium draws the page
        left, bottom, right, top = media
    return left, bottom, right - left, top - bottom
