"""What people OCR for, through the real stack: searchable PDFs, hOCR, word boxes, the
original back, their own languages, and pages turned the right way up."""

from __future__ import annotations

import io
import json
import re
import struct
from functools import partial
from html.parser import HTMLParser
from typing import Any

import httpx
import pypdf
import pypdfium2 as pdfium
import pytesseract
import pytest
from PIL import Image
from rapidfuzz import fuzz

from tests import documents
from tests.helpers import files_part, make_tenant, wait_for_batch

pytestmark = pytest.mark.e2e

ALL_OUTPUTS = ["text", "pdf", "hocr", "words"]


def upload(
    api: httpx.Client, tenant_id: str, key: str, files: list[tuple[str, bytes]], **params: str
) -> httpx.Response:
    return api.post(
        "/api/documents/bulk-upload",
        params={"tenantId": tenant_id, **params},
        files=files_part(files),
        headers={"X-API-Key": key},
    )


def finished_documents(
    api: httpx.Client, tenant_id: str, key: str, files: list[tuple[str, bytes]], **params: str
) -> dict[str, dict[str, Any]]:
    """Upload, wait for the batch, and return each document's metadata by file name."""
    response = upload(api, tenant_id, key, files, **params)
    assert response.status_code == 202, response.text
    batch = wait_for_batch(api, key, response.json()["batchId"])
    found = {}
    for document in batch["documents"]:
        found[document["fileName"]] = api.get(
            f"/api/documents/{document['id']}", headers={"X-API-Key": key}
        ).json()
    return found


def fetch(api: httpx.Client, key: str, document: dict[str, Any], output: str) -> httpx.Response:
    return api.get(f"/api/documents/{document['id']}/{output}", headers={"X-API-Key": key})


class HocrPages(HTMLParser):
    """The pages and words of an hOCR document, read as any hOCR consumer would."""

    def __init__(self) -> None:
        super().__init__()
        self.pages: list[dict[str, Any]] = []
        self._in_word = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        classes = (found.get("class") or "").split()
        if "ocr_page" in classes:
            self.pages.append({"id": found["id"], "title": found["title"], "words": []})
        self._in_word = "ocrx_word" in classes

    def handle_data(self, data: str) -> None:
        if self._in_word and data.strip():
            self.pages[-1]["words"].append(data.strip())

    def handle_endtag(self, tag: str) -> None:
        self._in_word = False


def pdf_words(data: bytes) -> list[set[str]]:
    """The words a PDF library finds in each page's text."""
    pages = pypdf.PdfReader(io.BytesIO(data)).pages
    return [documents.words(page.extract_text()) for page in pages]


@pytest.fixture(scope="module")
def everything(api: httpx.Client, stack: Any) -> tuple[str, dict[str, dict[str, Any]], dict]:
    """A tenant making every output, with a two-page PDF and a PNG, finished."""
    tenant_id, key = make_tenant(outputs="hocr,words,pdf")
    texts = [documents.phrase(40), documents.phrase(41)]
    originals = {
        "two pages.pdf": documents.multipage_pdf(texts),
        "scan.png": documents.document(documents.phrase(42), "png", seed=42),
    }
    found = finished_documents(api, tenant_id, key, list(originals.items()))
    expected = {"two pages.pdf": texts, "scan.png": [documents.phrase(42)]}
    return key, found, {"originals": originals, "texts": expected}


def test_a_ready_document_lists_the_outputs_its_tenant_chose(everything: Any) -> None:
    _, found, _ = everything
    for document in found.values():
        assert document["status"] == "Ready"
        assert document["outputs"] == ALL_OUTPUTS
        assert document["language"] == "eng"


def test_the_searchable_pdf_has_the_original_pages_and_their_text(
    api: httpx.Client, everything: Any
) -> None:
    key, found, known = everything
    for name, document in found.items():
        response = fetch(api, key, document, "pdf")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/pdf"
        pages = pdf_words(response.content)
        assert len(pages) == len(known["texts"][name])
        for expected, got in zip(known["texts"][name], pages, strict=True):
            assert documents.words(expected) <= got
    # A PDF keeps its own pages: the same size, and the same picture drawn on them.
    original = pypdf.PdfReader(io.BytesIO(known["originals"]["two pages.pdf"]))
    made = pypdf.PdfReader(io.BytesIO(fetch(api, key, found["two pages.pdf"], "pdf").content))
    for before, after in zip(original.pages, made.pages, strict=True):
        assert before.mediabox == after.mediabox
        assert [i.data for i in before.images] == [i.data for i in after.images]


def test_the_text_layer_lies_over_the_words_it_says(api: httpx.Client, everything: Any) -> None:
    """Select a word in a viewer and the highlight covers that word on the page."""
    key, found, known = everything
    data = fetch(api, key, found["two pages.pdf"], "pdf").content
    word = documents.phrase(40).split()[1]
    assert_word_under_its_text(data, word)


def assert_word_under_its_text(data: bytes, word: str) -> None:
    """The page, drawn, shows `word` where its text layer puts it (found by PDFium)."""
    pdf = pdfium.PdfDocument(data)
    page = pdf[0]
    text = page.get_textpage()
    found = text.search(word, match_case=False).get_next()
    assert found is not None, f"{word} is not in the text layer"
    start, count = found
    boxes = [text.get_charbox(i) for i in range(start, start + count)]
    scale = 2
    width, height = page.get_size()
    # Where the page is drawn on screen: the text layer is in the page's own coordinates.
    left, top = _on_screen(page, min(b[0] for b in boxes), max(b[3] for b in boxes))
    right, bottom = _on_screen(page, max(b[2] for b in boxes), min(b[1] for b in boxes))
    left, right = sorted((left, right))
    top, bottom = sorted((top, bottom))
    drawn = page.render(scale=scale).to_pil()
    margin = 10
    crop = drawn.crop(
        (
            int(left * scale) - margin,
            int(top * scale) - margin,
            int(right * scale) + margin,
            int(bottom * scale) + margin,
        )
    )
    read = pytesseract.image_to_string(crop, config="--psm 7").strip().upper()
    assert fuzz.ratio(read, word.upper()) >= 80, (read, word)


def _on_screen(page: pdfium.PdfPage, x: float, y: float) -> tuple[float, float]:
    """A point of the page's own coordinates as shown (its /Rotate applied), y down."""
    shown_width, shown_height = page.get_size()
    rotation = page.get_rotation()
    left, bottom, _, _ = page.get_bbox()  # what is drawn starts at the crop box's corner
    x, y = x - left, y - bottom
    width, height = (
        (shown_width, shown_height) if rotation in (0, 180) else (shown_height, shown_width)
    )
    u, v = {
        0: (x, y),
        90: (y, width - x),
        180: (width - x, height - y),
        270: (height - y, x),
    }[rotation]
    return u, shown_height - v


def test_hocr_has_every_page_and_word_and_no_file_path(api: httpx.Client, everything: Any) -> None:
    key, found, known = everything
    response = fetch(api, key, found["two pages.pdf"], "hocr")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "sandbox" in response.headers["content-security-policy"]
    parser = HocrPages()
    parser.feed(response.text)
    assert [p["id"] for p in parser.pages] == ["page_1", "page_2"]
    for expected, page in zip(known["texts"]["two pages.pdf"], parser.pages, strict=True):
        assert documents.words(expected) <= documents.words(" ".join(page["words"]))
    assert "/tmp" not in response.text and 'image "' not in response.text
    assert len(set(re.findall(r"id='([^']+)'", response.text))) == len(
        re.findall(r"id='([^']+)'", response.text)
    )  # ids are unique across pages


def test_words_have_their_page_box_and_confidence(api: httpx.Client, everything: Any) -> None:
    key, found, known = everything
    body = fetch(api, key, found["scan.png"], "words").json()
    (page,) = body["pages"]
    assert (page["page"], page["rotation"]) == (1, 0)
    image = Image.open(io.BytesIO(known["originals"]["scan.png"]))
    assert (page["width"], page["height"]) == image.size
    read = {w["text"].upper(): w for w in page["words"]}
    for word in documents.phrase(42).split():
        box = read[word]["bbox"]
        assert 0 <= box[0] < box[2] <= page["width"] and 0 <= box[1] < box[3] <= page["height"]
        assert 50 <= read[word]["confidence"] <= 100
        # The box holds the word: cut out of the original, it reads as the word.
        crop = image.crop((box[0] - 6, box[1] - 6, box[2] + 6, box[3] + 6))
        assert fuzz.ratio(pytesseract.image_to_string(crop, config="--psm 8").strip(), word) >= 80


def test_the_original_comes_back_byte_for_byte_under_a_safe_name(
    api: httpx.Client, everything: Any
) -> None:
    key, found, known = everything
    response = fetch(api, key, found["two pages.pdf"], "original")
    assert response.status_code == 200
    assert response.content == known["originals"]["two pages.pdf"]
    assert response.headers["content-type"] == "application/pdf"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="two pages.pdf"')
    assert "filename*=UTF-8''two%20pages.pdf" in disposition


def test_a_hostile_file_name_cannot_break_the_download_header(
    api: httpx.Client, stack: Any
) -> None:
    tenant_id, key = make_tenant()
    name = 'a"b;\r\nSet-Cookie: x=1 ü.png'
    response = upload(api, tenant_id, key, [(name, documents.document("X", "png"))])
    assert response.status_code == 202, response.text
    document_id = response.json()["documentIds"][0]
    got = api.get(f"/api/documents/{document_id}/original", headers={"X-API-Key": key})
    assert got.status_code == 200
    assert "set-cookie" not in got.headers
    assert '"' not in got.headers["content-disposition"].split('filename="')[1].split('";')[0]


def test_outputs_not_chosen_are_not_made_and_the_default_is_text_and_pdf(
    api: httpx.Client, stack: Any
) -> None:
    tenant_id, key = make_tenant()
    found = finished_documents(
        api, tenant_id, key, [("a.png", documents.document(documents.phrase(43), "png"))]
    )
    document = found["a.png"]
    assert document["outputs"] == ["text", "pdf"]
    for output in ("hocr", "words"):
        response = fetch(api, key, document, output)
        assert response.status_code == 404
        assert f"this document has no {output} output" in response.json()["error"]


def test_an_output_of_a_document_not_ready_is_a_409(api: httpx.Client, stack: Any) -> None:
    tenant_id, key = make_tenant()
    found = finished_documents(
        api, tenant_id, key, [("cut.pdf", documents.truncated(documents.document("X", "pdf")))]
    )
    response = fetch(api, key, found["cut.pdf"], "pdf")
    assert response.status_code == 409
    assert response.json() == {"error": "document is ValidationFailed, not Ready"}


FRENCH = ["Le garçon était à l'école", "une fenêtre de l'hôtel à Noël"]
GERMAN = ["Die grüne Straße über dem Fluß", "Mädchen öffnen fünf Türen"]


def accented(lines: list[str]) -> bytes:
    return documents.encode(documents.accented_page(lines), "png")


def accented_words(lines: list[str]) -> set[str]:
    return {w for line in lines for w in re.findall(r"\w+", line)}


def test_each_tenant_and_upload_reads_its_own_language(api: httpx.Client, stack: Any) -> None:
    """French and German with their accents; English data would drop them."""
    tenant_id, key = make_tenant(languages="deu")
    german = finished_documents(api, tenant_id, key, [("de.png", accented(GERMAN))])["de.png"]
    assert german["language"] == "deu"
    text = fetch(api, key, german, "text").text
    assert accented_words(GERMAN) <= set(re.findall(r"\w+", text))

    # One upload in French, by query parameter; another by form field.
    for how in ("query", "form"):
        if how == "query":
            found = finished_documents(
                api, tenant_id, key, [("fr.png", accented(FRENCH))], language="fra"
            )
        else:
            response = api.post(
                "/api/documents/bulk-upload",
                params={"tenantId": tenant_id},
                data={"language": "fra"},
                files=files_part([("fr.png", accented(FRENCH))]),
                headers={"X-API-Key": key},
            )
            assert response.status_code == 202, response.text
            batch = wait_for_batch(api, key, response.json()["batchId"])
            found = {"fr.png": batch["documents"][0]}
        french = found["fr.png"]
        text = fetch(api, key, french, "text").text
        assert accented_words(FRENCH) <= set(re.findall(r"\w+", text)), (how, text)


def test_an_unknown_language_is_refused_naming_those_installed(
    api: httpx.Client, stack: Any
) -> None:
    tenant_id, key = make_tenant()
    listed = api.get("/api/languages", headers={"X-API-Key": key}).json()
    assert {"eng", "deu", "fra", "spa", "ita", "por"} <= set(listed["installed"])
    assert "osd" not in listed["installed"] and listed["default"] == "eng"
    for bad in ("klingon", "eng+xx", "eng;rm -rf", "eng+deu+fra+spa"):
        response = upload(
            api, tenant_id, key, [("a.png", documents.document("X", "png"))], language=bad
        )
        assert response.status_code == 400, (bad, response.text)
        assert set(response.json()) == {"error"}
    one = [("a.png", documents.document("X", "png"))]
    response = upload(api, tenant_id, key, one, language="xx")
    assert response.json()["error"] == (
        "no OCR data for xx; installed: " + ", ".join(listed["installed"])
    )
    batches = api.get(f"/api/batches?tenantId={tenant_id}", headers={"X-API-Key": key}).json()
    assert batches["total"] == 0  # nothing was stored


LINES = [documents.phrase(50 + i, 5) for i in range(6)]


def turned(rotation: int, skew: float = 0.0) -> Image.Image:
    """The page of LINES as a scanner might have fed it: turned (counter-clockwise), or
    a little tilted."""
    page = documents.page_image(LINES, dpi=150)
    if skew:
        page = page.rotate(skew, resample=Image.Resampling.BICUBIC, fillcolor=245)
    if rotation:
        page = page.rotate(rotation, expand=True)
    page.info["dpi"] = (150, 150)
    return page


TURNS: list[tuple[str, int, float]] = [
    ("png", 90, 0.0),
    ("png", 180, 0.0),
    ("png", 270, 0.0),
    ("png", 0, 5.0),
    ("pdf", 180, 0.0),
    ("pdf", 90, 0.0),
    ("pdf", 0, -5.0),
]
CASES = [
    pytest.param(
        *turn, id=f"{turn[0]}-turned-{turn[1]}" if turn[1] else f"{turn[0]}-skewed-{turn[2]:g}"
    )
    for turn in TURNS
]


@pytest.fixture(scope="module")
def straightened(api: httpx.Client, stack: Any) -> tuple[str, dict[str, dict[str, Any]]]:
    """One batch of every case, read by a tenant making every output."""
    tenant_id, key = make_tenant(outputs="pdf,words")
    files = [
        (f"{kind}-{rotation}-{skew}.{kind}", documents.encode(turned(rotation, skew), kind))
        for kind, rotation, skew in TURNS
    ]
    files.append(("upright.png", documents.encode(turned(0), "png")))
    return key, finished_documents(api, tenant_id, key, files)


@pytest.mark.parametrize(("kind", "rotation", "skew"), CASES)
def test_a_turned_or_tilted_page_reads_as_well_as_an_upright_one(
    api: httpx.Client, straightened: Any, kind: str, rotation: int, skew: float
) -> None:
    key, found = straightened
    expected = set().union(*(documents.words(line) for line in LINES))
    upright = documents.words(fetch(api, key, found["upright.png"], "text").text)
    assert len(expected & upright) >= 0.95 * len(expected)

    document = found[f"{kind}-{rotation}-{skew}.{kind}"]
    assert document["status"] == "Ready", document["error"]
    read = documents.words(fetch(api, key, document, "text").text)
    assert len(expected & read) >= 0.95 * len(expected), sorted(expected - read)

    (page,) = fetch(api, key, document, "words").json()["pages"]
    assert page["rotation"] == rotation  # turned back clockwise as far as it was turned
    assert abs(page["skew"] - skew) < 1.0

    # The searchable PDF shows the page upright: drawn and read with no turning at all,
    # its words come out; and its text layer lies over them.
    pdf = fetch(api, key, document, "pdf").content
    drawn = pdfium.PdfDocument(pdf)[0].render(scale=2).to_pil()
    shown = documents.words(pytesseract.image_to_string(drawn, config="--psm 6"))
    assert len(expected & shown) >= 0.9 * len(expected)
    assert len(expected & pdf_words(pdf)[0]) >= 0.95 * len(expected)
    assert_word_under_its_text(pdf, LINES[0].split()[1])


def test_a_searchable_pdf_becomes_pdfa_2b_when_the_setting_asks(
    docpipe_home: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked by what PDF/A-2b requires of a file (veraPDF cannot be installed here): the
    identification in XMP, an output intent with its ICC profile, every font embedded, a
    file ID, no encryption; and the text layer still there."""
    from docpipe import pipeline
    from docpipe.models import Document, Output
    from docpipe.ocr import Straightening, ocr_document
    from docpipe.storage import get_storage, output_key
    from tests.helpers import settings_with

    settings_with(monkeypatch, pdfa="true")
    for kind in ("png", "pdf"):
        data = documents.document(documents.phrase(44), kind, seed=44)
        result = ocr_document(
            data, kind=kind, language="eng", dpi=300, page_timeout=60, pdf=True,
            straighten=Straightening(),
        )  # fmt: skip
        document = Document(kind=kind, storage_key=f"pdfa-test/{kind}/doc.{kind}")
        made = pipeline._store_outputs(document, data, result, (Output.TEXT, Output.PDF))
        assert made == [Output.TEXT, Output.PDF]
        pdf = get_storage().read_bytes(output_key(document.storage_key, Output.PDF))

        reader = pypdf.PdfReader(io.BytesIO(pdf))
        root: Any = reader.trailer["/Root"]
        xmp = root["/Metadata"].get_object().get_data().decode()
        assert re.search(r"pdfaid:part(='|>)2", xmp) and re.search(
            r"pdfaid:conformance(='|>)B", xmp
        )
        (intent,) = root["/OutputIntents"]
        intent = intent.get_object()
        assert intent["/S"] == "/GTS_PDFA1"
        assert intent["/DestOutputProfile"].get_object().get_data()[36:40] == b"acsp"  # ICC
        assert "/ID" in reader.trailer and not reader.is_encrypted
        for page in reader.pages:
            resources: Any = page["/Resources"]
            for font in resources["/Font"].values():
                font = font.get_object()
                descendant = font.get("/DescendantFonts", [font])[0].get_object()
                descriptor = descendant["/FontDescriptor"].get_object()
                assert {"/FontFile", "/FontFile2", "/FontFile3"} & set(descriptor)
        assert documents.words(documents.phrase(44)) <= pdf_words(pdf)[0]


def _set(key: str, value: Any) -> Any:
    from pypdf.generic import NameObject

    def change(page: Any) -> None:
        page[NameObject(key)] = value

    return change


def _odd_pages() -> list[Any]:
    from pypdf.generic import ArrayObject, FloatObject, NameObject, NumberObject, TextStringObject

    def box(*values: float) -> Any:
        return ArrayObject(FloatObject(v) for v in values)

    return [
        pytest.param(_set("/Rotate", NumberObject(45)), id="rotate-45"),
        pytest.param(_set("/Rotate", NumberObject(-90)), id="rotate-minus-90"),
        pytest.param(_set("/Rotate", NumberObject(135)), id="rotate-135"),
        pytest.param(_set("/Rotate", NumberObject(270)), id="rotate-270"),
        # PDFium draws these as no turn at all; so must the searchable PDF.
        pytest.param(_set("/Rotate", NameObject("/Ninety")), id="rotate-a-name"),
        pytest.param(_set("/Rotate", TextStringObject("90")), id="rotate-a-string"),
        pytest.param(_set("/Rotate", NumberObject(10**12)), id="rotate-past-any-int"),
        # PDFium draws the crop box inside the media box, whichever way round given.
        pytest.param(_set("/CropBox", box(-300, -300, 900, 600)), id="crop-box-past-the-page"),
        pytest.param(_set("/MediaBox", box(595.2, 230, 0, 0)), id="media-box-reversed"),
        pytest.param(_set("/CropBox", box(8, 6, 580, 190)), id="crop-box-inside"),
    ]


@pytest.mark.parametrize("change", _odd_pages())
def test_an_odd_pdf_page_comes_back_upright_with_its_text_over_its_words(change: Any) -> None:
    """A page is read as PDFium draws it (its /Rotate, its boxes), then turned upright, and
    its text laid over its words."""
    from docpipe.ocr import Straightening, ocr_document
    from docpipe.outputs import searchable_pdf

    line = " ".join(LINES[0].split()[:3])
    writer = pypdf.PdfWriter(
        clone_from=pypdf.PdfReader(io.BytesIO(documents.document(line, "pdf")))
    )
    change(writer.pages[0])
    original = io.BytesIO()
    writer.write(original)
    data = original.getvalue()

    result = ocr_document(
        data, kind="pdf", language="eng", dpi=300, page_timeout=60, pdf=True,
        straighten=Straightening(),
    )  # fmt: skip
    pdf = searchable_pdf(data, kind="pdf", pages=result.pages)

    expected = documents.words(line)
    assert expected <= documents.words(result.text)
    assert expected <= pdf_words(pdf)[0]
    drawn = pdfium.PdfDocument(pdf)[0].render(scale=2).to_pil()
    assert expected <= documents.words(pytesseract.image_to_string(drawn, config="--psm 6"))
    assert_word_under_its_text(pdf, line.split()[1])


def test_a_pdf_pages_own_scripts_are_not_served_back() -> None:
    """The searchable PDF is served inline: actions a page runs when opened are dropped."""
    from pypdf.generic import DictionaryObject, NameObject, TextStringObject

    from docpipe.ocr import ocr_document
    from docpipe.outputs import searchable_pdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(documents.document("X", "pdf"))))
    action = DictionaryObject(
        {
            NameObject("/S"): NameObject("/JavaScript"),
            NameObject("/JS"): TextStringObject("alertone"),
        }
    )
    writer.pages[0][NameObject("/AA")] = DictionaryObject({NameObject("/O"): action})
    original = io.BytesIO()
    writer.write(original)
    data = original.getvalue()
    assert b"alertone" in data
    result = ocr_document(data, kind="pdf", language="eng", dpi=300, page_timeout=60, pdf=True)
    made = pypdf.PdfReader(io.BytesIO(searchable_pdf(data, kind="pdf", pages=result.pages)))
    assert "/AA" not in made.pages[0]
    assert b"alertone" not in searchable_pdf(data, kind="pdf", pages=result.pages)


def _script(js: str) -> Any:
    """A JavaScript action: what a hostile PDF hides wherever a viewer might run it."""
    from pypdf.generic import DictionaryObject, NameObject, TextStringObject

    return DictionaryObject(
        {NameObject("/S"): NameObject("/JavaScript"), NameObject("/JS"): TextStringObject(js)}
    )


def _annotation(writer: pypdf.PdfWriter, subtype: str, **fields: Any) -> Any:
    """A new annotation of the writer's (a reference to it), with these extra fields."""
    from pypdf.generic import ArrayObject, DictionaryObject, FloatObject, NameObject

    entries = {
        NameObject("/Type"): NameObject("/Annot"),
        NameObject("/Subtype"): NameObject(subtype),
        NameObject("/Rect"): ArrayObject([FloatObject(v) for v in (10, 10, 60, 60)]),
    }
    entries.update({NameObject(f"/{key}"): value for key, value in fields.items()})
    return writer._add_object(DictionaryObject(entries))


def test_a_pdf_pages_annotations_keep_their_links_but_nothing_that_runs() -> None:
    """Links stay; what a viewer would run, launch or open from an annotation goes: a
    script on the page's opening, a program to launch, a script chained after a link, and
    a file attached to the page."""
    from pypdf.generic import (
        ArrayObject,
        DictionaryObject,
        NameObject,
        StreamObject,
        TextStringObject,
    )

    from docpipe.ocr import ocr_document
    from docpipe.outputs import searchable_pdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(documents.document("X", "pdf"))))

    def name(value: str) -> NameObject:
        return NameObject(value)

    script = _script

    annotation = partial(_annotation, writer)

    link = DictionaryObject(
        {
            name("/S"): name("/URI"),
            name("/URI"): TextStringObject("https://example.com/kept"),
            name("/Next"): script("alertchained"),
        }
    )
    launch = DictionaryObject(
        {name("/S"): name("/Launch"), name("/F"): TextStringObject("launchme")}
    )
    attached = StreamObject()
    attached._data = b"MZ evilpayload"
    attached[name("/Type")] = name("/EmbeddedFile")
    spec = DictionaryObject(
        {
            name("/Type"): name("/Filespec"),
            name("/F"): TextStringObject("evilfile"),
            name("/EF"): DictionaryObject({name("/F"): writer._add_object(attached)}),
        }
    )
    hidden = StreamObject()
    hidden._data = b"MZ evilhidden"
    hidden[name("/Type")] = name("/EmbeddedFile")
    indirect_spec = DictionaryObject(
        {name("/Type"): name("/Filespec"), name("/F"): TextStringObject("evilfile")}
    )
    indirect_spec[name("/EF")] = DictionaryObject({name("/F"): writer._add_object(hidden)})
    attachment = annotation("/Link", FS=indirect_spec).get_object()
    # Its kind given by reference: a viewer follows it.
    attachment[name("/Subtype")] = writer._add_object(name("/FileAttachment"))
    in_script = DictionaryObject({name("/S"): name("/URI"), name("/URI"): TextStringObject("")})
    in_script[name("/URI")] = TextStringObject("javascript:alerturi()")
    writer.pages[0][name("/Annots")] = ArrayObject(
        [
            annotation("/Link", A=link),
            annotation("/Link", AA=DictionaryObject({name("/PO"): script("alertpo")})),
            annotation("/Link", A=launch),
            annotation("/FileAttachment", FS=spec),
            attachment.indirect_reference,
            annotation("/Link", A=in_script),
            writer._add_object(ArrayObject([writer._add_object(script("alertarray"))])),
        ]
    )
    original = io.BytesIO()
    writer.write(original)
    data = original.getvalue()
    harmful = (
        b"alertchained", b"alertpo", b"launchme", b"evilpayload", b"evilfile", b"evilhidden",
        b"alerturi", b"alertarray",
    )  # fmt: skip
    assert all(marker in data for marker in harmful)  # (pypdf escapes a name's dots)

    result = ocr_document(data, kind="pdf", language="eng", dpi=300, page_timeout=60, pdf=True)
    made = searchable_pdf(data, kind="pdf", pages=result.pages)

    assert not [marker for marker in harmful if marker in made]
    page: Any = pypdf.PdfReader(io.BytesIO(made)).pages[0]
    annotations = [a.get_object() for a in page["/Annots"]]
    assert [a["/Subtype"] for a in annotations] == ["/Link"] * 4
    assert annotations[0]["/A"]["/URI"] == "https://example.com/kept"


def test_nothing_a_page_reaches_by_another_way_brings_scripts_or_files_along() -> None:
    """Found by an attacker's review: a popup or a reply reached from an annotation, a
    link's own /JS and /PA, a file named by /FS or a key of the page's own, and /PieceInfo
    pointing at the original's catalog (its opening script, named scripts and attached
    files) all came through. Everything the pages reach is walked now."""
    from pypdf.generic import (
        ArrayObject,
        DictionaryObject,
        NameObject,
        StreamObject,
        TextStringObject,
    )

    from docpipe.ocr import ocr_document
    from docpipe.outputs import searchable_pdf

    text = documents.phrase(31)
    original_pdf = io.BytesIO(documents.document(text, "pdf"))
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(original_pdf))

    def name(value: str) -> NameObject:
        return NameObject(value)

    script = _script

    def embedded(marker: bytes) -> Any:
        stream = StreamObject()
        stream._data = b"MZ " + marker
        stream[name("/Type")] = name("/EmbeddedFile")
        return writer._add_object(stream)

    annotation = partial(_annotation, writer)

    catalog = writer._root_object
    catalog[name("/OpenAction")] = script("alertopen")
    catalog[name("/Names")] = DictionaryObject(
        {
            name("/JavaScript"): DictionaryObject(
                {name("/Names"): ArrayObject([TextStringObject("n"), script("alertnamed")])}
            ),
            name("/EmbeddedFiles"): DictionaryObject(
                {
                    name("/Names"): ArrayObject(
                        [
                            TextStringObject("f"),
                            DictionaryObject(
                                {
                                    name("/Type"): name("/Filespec"),
                                    name("/EF"): DictionaryObject(
                                        {name("/F"): embedded(b"evilnamed")}
                                    ),
                                }
                            ),
                        ]
                    )
                }
            ),
        }
    )
    page = writer.pages[0]
    page[name("/PieceInfo")] = DictionaryObject(
        {name("/X"): DictionaryObject({name("/Private"): catalog.indirect_reference})}
    )
    page[name("/Extra")] = embedded(b"evilextra")
    page[name("/Foo")] = ArrayObject(  # actions where no viewer looks: still not served
        [
            DictionaryObject(
                {name("/S"): name("/GoToR"), name("/F"): TextStringObject("evilgotor")}
            ),
            DictionaryObject(
                {name("/S"): name("/Launch"), name("/F"): TextStringObject("evilfoo")}
            ),
        ]
    )
    model = StreamObject()
    model._data = b"alertmodel"
    odd = annotation("/3D")
    odd.get_object()[name("/Subtype")] = TextStringObject("3D")  # a string, not a name
    odd.get_object()[name("/3DD")] = writer._add_object(model)
    popup = annotation(
        "/Popup", A=script("alertpopup"), AA=DictionaryObject({name("/O"): script("alertpopupaa")})
    )
    widget = annotation(
        "/Widget",
        A=DictionaryObject(
            {name("/S"): name("/Launch"), name("/F"): TextStringObject("launchcalc")}
        ),
        AA=DictionaryObject({name("/K"): script("alertwidget")}),
    )
    goto = DictionaryObject(
        {
            name("/S"): name("/GoTo"),
            name("/D"): ArrayObject([page.indirect_reference, name("/Fit")]),
            name("/JS"): TextStringObject("alertgoto"),
        }
    )
    spec = DictionaryObject(
        {
            name("/Type"): name("/Filespec"),
            name("/EF"): DictionaryObject({name("/F"): embedded(b"evillinkfs")}),
        }
    )
    page[name("/Annots")] = ArrayObject(
        [
            annotation("/Text", Popup=popup, IRT=widget),
            annotation("/Link", A=goto, PA=script("alertpa")),
            annotation("/Link", FS=spec),
            odd,
        ]
    )
    original = io.BytesIO()
    writer.write(original)
    data = original.getvalue()
    harmful = (
        b"alertopen", b"alertnamed", b"evilnamed", b"evilextra", b"alertpopup", b"launchcalc",
        b"alertwidget", b"alertgoto", b"alertpa", b"evillinkfs", b"evilgotor", b"evilfoo",
        b"alertmodel",
    )  # fmt: skip
    assert all(marker in data for marker in harmful)

    result = ocr_document(data, kind="pdf", language="eng", dpi=300, page_timeout=60, pdf=True)
    made = searchable_pdf(data, kind="pdf", pages=result.pages)

    assert not [marker for marker in harmful if marker in made]
    assert made.count(b"/Catalog") == 1  # its own, and no copy of the original's
    shown: Any = pypdf.PdfReader(io.BytesIO(made)).pages[0]
    annotations = [a.get_object() for a in shown["/Annots"]]
    assert [a["/Subtype"] for a in annotations] == ["/Text", "/Link", "/Link"]
    assert annotations[1]["/A"]["/S"] == "/GoTo"  # the link still goes where it went
    assert documents.words(text) <= pdf_words(made)[0]


def test_a_png_with_a_second_header_is_shown_at_the_size_that_was_read() -> None:
    """A second IHDR after the pixels names a size no check saw: the searchable PDF's
    image has the size Pillow read, checked and OCR'd, not the header's claim."""
    from docpipe.ocr import ocr_document
    from docpipe.outputs import searchable_pdf
    from tests.hostile import png_chunk

    text = documents.phrase(46)
    good = documents.encode(documents.page_image([text], noise=False), "png")
    end = good.rindex(b"IEND") - 4  # the IEND chunk starts with its length
    claim = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    data = good[:end] + png_chunk(b"IHDR", claim) + good[end:]

    result = ocr_document(data, kind="png", language="eng", dpi=300, page_timeout=60, pdf=True)
    pdf = searchable_pdf(data, kind="png", pages=result.pages)

    page: Any = pypdf.PdfReader(io.BytesIO(pdf)).pages[0]
    image = next(iter(page["/Resources"]["/XObject"].values())).get_object()
    with Image.open(io.BytesIO(good)) as read:
        assert (image["/Width"], image["/Height"]) == read.size
    assert documents.words(text) <= pdf_words(pdf)[0]


def test_a_pdf_page_whose_annotations_are_not_a_list_still_gets_its_searchable_pdf() -> None:
    from pypdf.generic import DictionaryObject, NameObject

    from docpipe.ocr import ocr_document
    from docpipe.outputs import searchable_pdf

    text = documents.phrase(47)
    writer = pypdf.PdfWriter(
        clone_from=pypdf.PdfReader(io.BytesIO(documents.document(text, "pdf")))
    )
    writer.pages[0][NameObject("/Annots")] = DictionaryObject()  # a list, says the standard
    original = io.BytesIO()
    writer.write(original)
    data = original.getvalue()

    result = ocr_document(data, kind="pdf", language="eng", dpi=300, page_timeout=60, pdf=True)
    made = searchable_pdf(data, kind="pdf", pages=result.pages)

    assert "/Annots" not in pypdf.PdfReader(io.BytesIO(made)).pages[0]
    assert documents.words(text) <= pdf_words(made)[0]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "RGB"])
def test_a_transparent_image_reads_as_ink_on_white_paper(mode: str) -> None:
    """Black text on a transparent background: what is see-through is paper, not black.
    A grey or colour PNG without alpha names its see-through colour in a tRNS chunk."""
    from docpipe.ocr import ocr_document
    from docpipe.outputs import searchable_pdf

    text = documents.phrase(45)
    ink = documents.page_image([text], noise=False)  # dark text on light grey
    alpha = ink.point(lambda v: 255 - v)  # opaque where the ink is
    page = Image.new("RGBA", ink.size, (0, 0, 0, 0))
    page.putalpha(alpha)
    if mode == "LA":
        page = page.convert("LA")
    elif mode == "P":
        page = page.convert("RGBA").quantize(colors=16)
        page.info["transparency"] = 0
    elif mode in ("L", "RGB"):  # black is see-through; the ink stays just off black
        page = ink.point(lambda v: 0 if v > 128 else max(v, 1)).convert(mode)
        page.info["transparency"] = 0 if mode == "L" else (0, 0, 0)
    buf = io.BytesIO()
    page.save(buf, "PNG")
    data = buf.getvalue()

    result = ocr_document(data, kind="png", language="eng", dpi=300, page_timeout=60, pdf=True)

    assert documents.words(text) <= documents.words(result.text)
    assert (
        documents.words(text) <= pdf_words(searchable_pdf(data, kind="png", pages=result.pages))[0]
    )


def test_languages_joined_by_plus_in_a_query_and_given_twice(api: httpx.Client, stack: Any) -> None:
    tenant_id, key = make_tenant()
    one = [("a.png", documents.document("X", "png"))]
    # `+` in a URL's query is a space: docpipe reads it as the '+' it was meant to be.
    response = api.post(
        f"/api/documents/bulk-upload?tenantId={tenant_id}&language=deu+eng",
        files=files_part(one),
        headers={"X-API-Key": key},
    )
    assert response.status_code == 202, response.text
    document = api.get(
        f"/api/documents/{response.json()['documentIds'][0]}", headers={"X-API-Key": key}
    ).json()
    assert document["language"] == "deu+eng"
    twice = api.post(
        "/api/documents/bulk-upload",
        params={"tenantId": tenant_id, "language": "fra"},
        data={"language": "zzz"},
        files=files_part(one),
        headers={"X-API-Key": key},
    )
    assert twice.status_code == 400
    assert twice.json() == {"error": "language is given twice (query and form field), differently"}


@pytest.mark.parametrize("kind", ["png", "jpeg", "tiff"])
def test_an_images_searchable_pdf_holds_the_image_itself(kind: str) -> None:
    """The page shows the uploaded image as it is (a JPEG's own bytes; a PNG's or TIFF's
    very pixels), not a recompressed or straightened copy; the text lies over its words."""
    from docpipe.ocr import Straightening, ocr_document
    from docpipe.outputs import searchable_pdf

    data = documents.encode(turned(0, 5.0), kind)
    result = ocr_document(
        data, kind=kind, language="eng", dpi=300, page_timeout=60, pdf=True,
        straighten=Straightening(),
    )  # fmt: skip
    assert abs(result.pages[0].skew - 5.0) < 1.0  # it was straightened to be read
    pdf = searchable_pdf(data, kind=kind, pages=result.pages)

    page: Any = pypdf.PdfReader(io.BytesIO(pdf)).pages[0]
    (shown,) = page.images
    if kind == "jpeg":  # the JPEG's own bytes, as they were uploaded
        (stream,) = [x.get_object() for x in page["/Resources"]["/XObject"].values()]
        assert stream["/Filter"] == "/DCTDecode" and stream._data == data
    else:
        with Image.open(io.BytesIO(data)) as original:
            assert shown.image is not None
            assert shown.image.convert("L").tobytes() == original.convert("L").tobytes()
    expected = set().union(*(documents.words(line) for line in LINES))
    assert len(expected & pdf_words(pdf)[0]) >= 0.95 * len(expected)
    assert_word_under_its_text(pdf, LINES[0].split()[1])


def _sixteen_bit(kind: str) -> bytes:
    """A 16-bit grey page: ink at 16-bit 5140 would be clipped to white at 8 bits."""
    import numpy as np

    ink = documents.page_image([documents.phrase(46)], noise=False)
    deep = Image.fromarray(np.asarray(ink).astype(np.uint16) * 257)
    buf = io.BytesIO()
    deep.save(buf, {"png": "PNG", "tiff": "TIFF"}[kind])
    return buf.getvalue()


def _camera_jpeg() -> bytes:
    """A phone's JPEG with a preview picture after the photo (MPO)."""
    photo = documents.page_image([documents.phrase(47)], noise=False).convert("RGB")
    buf = io.BytesIO()
    photo.save(buf, "MPO", save_all=True, append_images=[photo.resize((200, 60))])
    return buf.getvalue()


@pytest.mark.parametrize(
    ("kind", "make", "phrase"),
    [
        pytest.param("png", lambda: _sixteen_bit("png"), 46, id="16-bit-png"),
        pytest.param("tiff", lambda: _sixteen_bit("tiff"), 46, id="16-bit-tiff"),
        pytest.param("jpeg", _camera_jpeg, 47, id="camera-mpo-jpeg"),
    ],
)
def test_deep_greys_and_camera_jpegs_read_and_show(kind: str, make: Any, phrase: int) -> None:
    """One page each, read with their words, and a one-page PDF that shows them (a 16-bit
    page was clipped to blank white; a camera's MPO was refused as "not JPEG")."""
    from docpipe.ocr import ocr_document
    from docpipe.outputs import searchable_pdf
    from docpipe.validation import inspect_document

    data = make()
    assert (
        inspect_document(
            data, kind=kind, max_pages=100, max_pixels=10**8, max_document_pixels=10**9, dpi=300
        ).page_count
        == 1
    )
    result = ocr_document(data, kind=kind, language="eng", dpi=300, page_timeout=60, pdf=True)
    expected = documents.words(documents.phrase(phrase))
    assert expected <= documents.words(result.text)
    pdf = searchable_pdf(data, kind=kind, pages=result.pages)
    assert len(pdf_words(pdf)) == 1 and expected <= pdf_words(pdf)[0]
    drawn = pdfium.PdfDocument(pdf)[0].render(scale=2).to_pil()
    assert expected <= documents.words(pytesseract.image_to_string(drawn, config="--psm 6"))


def test_a_language_named_twice_counts_once(api: httpx.Client, stack: Any) -> None:
    tenant_id, key = make_tenant()
    one = [("a.png", documents.document("X", "png"))]
    response = upload(api, tenant_id, key, one, language="eng+eng+eng+eng")
    assert response.status_code == 202, response.text
    document_id = response.json()["documentIds"][0]
    assert (
        api.get(f"/api/documents/{document_id}", headers={"X-API-Key": key}).json()["language"]
        == "eng"
    )


def _born_digital_page(writer: pypdf.PdfWriter, line: str) -> None:
    """A page whose words are text of its own (a font, not a picture), as a word
    processor's PDF has them."""
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    page = writer.add_blank_page(612, 792)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    fonts = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
    content = DecodedStreamObject()
    content.set_data(f"BT /F1 28 Tf 72 700 Td ({line}) Tj ET".encode())
    page[NameObject("/Contents")] = writer._add_object(content)


def test_a_page_with_text_of_its_own_gets_no_second_layer() -> None:
    """Like OCRmyPDF's --skip-text: a born-digital page is already searchable, and a second,
    invisible copy of its words would make every search find them twice. A scanned page
    of the same PDF still gets its layer; the text output reads both."""
    from docpipe import readers
    from docpipe.ocr import ocr_document

    typed, scanned = "Quixotic zephyr jumps", documents.phrase(77)
    writer = pypdf.PdfWriter()
    _born_digital_page(writer, typed)
    writer.append(pypdf.PdfReader(io.BytesIO(documents.document(scanned, "pdf"))))
    original = io.BytesIO()
    writer.write(original)
    data = original.getvalue()

    result = ocr_document(data, kind="pdf", language="eng", dpi=300, page_timeout=60, pdf=True)
    assert documents.words(typed) <= documents.words(result.pages[0].text)
    made = pypdf.PdfReader(
        io.BytesIO(readers.searchable(data, kind="pdf", pages=result.pages, timeout=60))
    )
    first, second = (page.extract_text() for page in made.pages)
    assert first.count("Quixotic") == 1, first
    assert documents.words(scanned) <= documents.words(second)


def test_a_tenant_set_by_the_cli_and_the_page_settings_reach_every_document(
    tmp_path: Any,
) -> None:
    """Through a stack of its own: languages and outputs given by `docpipe tenant create`
    and changed by `tenant set` apply to the next upload; with DOCPIPE_OCR_ORIENT and
    DOCPIPE_OCR_DESKEW off a page is read as it came; with DOCPIPE_PDFA on, the searchable
    PDF the API serves is a PDF/A-2b."""
    from tests.helpers import cli, started_stack

    with started_stack(tmp_path, ocr_orient=False, ocr_deskew=False, pdfa=True) as stack:
        made = cli(stack, "tenant", "create", "scribe", "--languages", "deu+eng", "--json")
        key = json.loads(made)["apiKey"]
        cli(stack, "tenant", "set", "scribe", "--languages", "fra", "--outputs", "text,pdf,words")
        with httpx.Client(base_url=f"http://127.0.0.1:{stack.settings.api_port}") as api:
            files = [
                ("fr.png", accented(FRENCH)),
                ("upside down.png", documents.encode(turned(180), "png")),
                ("tilted.png", documents.encode(turned(0, 5.0), "png")),
            ]
            found = finished_documents(api, "scribe", key, files)
            assert {d["language"] for d in found.values()} == {"fra"}
            assert {tuple(d["outputs"]) for d in found.values()} == {("text", "pdf", "words")}
            french = fetch(api, key, found["fr.png"], "text").text
            assert accented_words(FRENCH) <= set(re.findall(r"\w+", french)), french
            for name in ("upside down.png", "tilted.png"):
                (page,) = fetch(api, key, found[name], "words").json()["pages"]
                assert (page["rotation"], page["skew"]) == (0, 0), name
            upside_down = documents.words(fetch(api, key, found["upside down.png"], "text").text)
            assert len(upside_down & documents.words("\n".join(LINES))) < len(LINES)
            pdf = fetch(api, key, found["fr.png"], "pdf").content
            root: Any = pypdf.PdfReader(io.BytesIO(pdf)).trailer["/Root"]
            xmp = root["/Metadata"].get_object().get_data().decode()
            assert re.search(r"pdfaid:part(='|>)2", xmp), xmp[:500]
