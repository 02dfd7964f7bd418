"""The child side of docpipe.readers: every decoding of a tenant's file, in its own process.

A tenant's file meets large readers written in C and C++: PDFium (a PDF's pages), pypdf
(its deep check, its searchable PDF), libpng, libjpeg and libtiff (an image's pixels).
A crafted file that crashes one or sends it round for ever costs this process and its
document only; docpipe.readers kills it at the timeout and starts another. It caps its
own address space (`python -m docpipe.reader_server BYTES PDF_BYTES`: the second while
it reads a PDF) before it reads anything.

Requests, one JSON line each (every path is in the run's page folder):
- `{"do": "inspect", "path", "max_pages", "max_pixels", "budget", "dpi", "max_content"}`:
  pypdf's deep check of a PDF; answers `{"pages": n}`.
- `{"do": "inspect_image", "path", "kind", "max_pages", "max_pixels", "budget"}`: the
  deep check of an image (its frames' sizes, a PNG's chunks); answers `{"pages": n}`.
- `{"do": "sizes", "path"}`: PDFium's own page sizes, in points: `{"sizes": [[w, h], ...]}`.
- `{"do": "render", "path", "index", "dpi", "out"}`: PDF page `index` drawn in grey at
  `dpi`, written to `out` as BMP: `{"width": w, "height": h}`.
- `{"do": "frames", "path"}`: how many pages an image holds: `{"frames": n}`.
- `{"do": "decode", "path", "index", "dpi", "out"}`: image frame `index` decoded, in a
  mode Tesseract reads, written to `out` as BMP: `{"width", "height", "dpi"}` (its own
  resolution if a scan could have it, else `dpi`).
- `{"do": "searchable", "path", "kind", "out", "layers": [...]}`: the searchable PDF of
  the document, each layer a page's text layer (base64) with its dpi, rotation and
  skew; a PDF's page that has text of its own (PDFium finds some) gets no layer.
- `{"do": "forget"}`: let go of the document open (its caller stopped before its end).
A document it cannot read answers `{"invalid": reason}` (the document is not valid) or
`{"failed": reason}` (a PDF's page does not render).
"""

from __future__ import annotations

import base64
import io
import resource
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docpipe.children import serving


@dataclass(frozen=True)
class _Layer:
    """A page's text layer as docpipe.outputs lays it over the page."""

    pdf: bytes
    dpi: int
    rotation: int
    skew: float


def main() -> None:
    answer = serving()
    limit, pdf_limit = int(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def hold_to(soft: int) -> None:
        """The address space for this request: the soft limit moves, the hard one stays."""
        resource.setrlimit(resource.RLIMIT_AS, (soft, limit))

    import pypdfium2 as pdfium
    from PIL import Image

    from docpipe.errors import InvalidDocument, OcrFailed
    from docpipe.outputs import opaque, searchable_pdf
    from docpipe.validation import (
        describe_error,
        image_pages,
        inspect_image,
        inspect_pdf,
        scan_dpi,
    )

    # The document open (in PDFium, or Pillow): its pages are asked for one request at a
    # time. It is let go after its last page, its searchable PDF, or when another comes.
    opened: dict[str, Any] = {}

    def forget() -> None:
        for old in opened.values():
            old.close()
        opened.clear()

    def picture(path: str) -> Any:
        if path not in opened:
            forget()
            try:  # from memory, as the deep check read it: a reason then names no file
                opened[path] = Image.open(io.BytesIO(Path(path).read_bytes()))
            except (OSError, ValueError, SyntaxError, struct.error) as e:
                raise InvalidDocument(f"image does not decode: {describe_error(e)}") from e
        return opened[path]

    def document(path: str) -> Any:
        if path not in opened:
            forget()
            try:
                opened[path] = pdfium.PdfDocument(path)
            except pdfium.PdfiumError as e:
                raise OcrFailed(f"PDF does not render: {e}") from e
        return opened[path]

    def pages_with_text(pdf: Any) -> set[int]:
        """The pages that have text of their own: born digital, or OCR'd before."""
        found = set()
        for index in range(len(pdf)):
            try:
                page = pdf[index]
                text = page.get_textpage()
                if text.get_text_range().strip():
                    found.add(index)
                text.close()
                page.close()
            except pdfium.PdfiumError:  # text it cannot read: the page gets docpipe's layer
                continue
        return found

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        what = request["do"]
        on_pdf = what in ("inspect", "sizes", "render") or request.get("kind") == "pdf"
        hold_to(pdf_limit if on_pdf else limit)
        if what == "inspect":
            forget()
            data = Path(request["path"]).read_bytes()
            pages = inspect_pdf(
                data,
                max_pages=request["max_pages"],
                max_pixels=request["max_pixels"],
                budget=request["budget"],
                dpi=request["dpi"],
                max_content=request["max_content"],
            )
            return {"pages": pages}
        if what == "inspect_image":
            forget()
            pages = inspect_image(
                Path(request["path"]).read_bytes(),
                kind=request["kind"],
                max_pages=request["max_pages"],
                max_pixels=request["max_pixels"],
                budget=request["budget"],
            )
            return {"pages": pages}
        if what == "sizes":
            pdf = document(request["path"])
            try:
                return {"sizes": [list(pdf.get_page_size(i)) for i in range(len(pdf))]}
            except pdfium.PdfiumError as e:  # a page tree that counts pages it does not hold
                raise InvalidDocument(f"the PDF's pages cannot all be read: {e}") from e
        if what == "render":
            index = request["index"]
            try:
                pdf = document(request["path"])
                page = pdf[index]
                image = page.render(scale=request["dpi"] / 72, grayscale=True).to_pil()
                page.close()
            except pdfium.PdfiumError as e:
                raise OcrFailed(f"page {index + 1} does not render: {e}") from e
            if index == len(pdf) - 1:
                forget()
            image.save(request["out"], format="BMP")
            return {"width": image.width, "height": image.height}
        if what == "frames":
            return {"frames": image_pages(picture(request["path"]))}
        if what == "decode":
            index, frames = request["index"], picture(request["path"])
            try:
                frames.seek(index)
                frame = opaque(frames)
                frame.load()
            except (OSError, ValueError, SyntaxError, struct.error, EOFError) as e:
                raise InvalidDocument(f"image does not decode: {describe_error(e)}") from e
            dpi = scan_dpi(frames.info.get("dpi"), default=request["dpi"])
            width, height = frame.size
            frame.save(request["out"], format="BMP")  # a full disk is not the image's fault
            if index == image_pages(frames) - 1:
                forget()
            return {"width": width, "height": height, "dpi": dpi}
        if what == "forget":
            forget()
            return {"ok": True}
        if what == "searchable":
            layers = [
                _Layer(
                    base64.b64decode(layer["pdf"]), layer["dpi"], layer["rotation"], layer["skew"]
                )
                for layer in request["layers"]
            ]
            original, kind = Path(request["path"]).read_bytes(), request["kind"]
            own_text = pages_with_text(document(request["path"])) if kind == "pdf" else set()
            forget()
            made = searchable_pdf(original, kind=kind, pages=layers, own_text=own_text)
            Path(request["out"]).write_bytes(made)
            return {"ok": True}
        raise ValueError(f"unknown request {what!r}")

    def said(request: dict[str, Any]) -> dict[str, Any]:
        try:
            return handle(request)
        except Exception as e:
            forget()  # a failure ends its document: its memory goes now, not at the next
            return refusal(e, request)

    def refusal(error: Exception, request: dict[str, Any]) -> dict[str, Any]:
        if isinstance(error, InvalidDocument):
            return {"invalid": unnamed(str(error), request)}
        if isinstance(error, OcrFailed):
            return {"failed": unnamed(str(error), request)}
        if isinstance(error, OSError):  # its own files: nothing of the tenant's to say, nor paths
            return {"error": f"its file could not be read or written ({type(error).__name__})"}
        return {"error": unnamed(describe_error(error), request)}

    def unnamed(reason: str, request: dict[str, Any]) -> str:
        """The reason without the names of the files it was handed (they are ours)."""
        for key in ("path", "out"):
            if isinstance(request.get(key), str):
                reason = reason.replace(request[key], "the file")
        return reason

    answer(said)


if __name__ == "__main__":
    main()
