"""The child side of docpipe.ocr's in-process engine: Tesseract's API, models loaded once.

docpipe.ocr starts one per OCR thread (`python -m docpipe.ocr_server TESSDATA FOLDER`,
FOLDER the run's page folder) and sends it one JSON line per page: a decoded page file to
read and where to write its outputs; it answers one JSON line per page. A page that
crashes or hangs it costs only this process, which docpipe.ocr then replaces. It imports
little, so it starts fast.
"""

from __future__ import annotations

import sys
from typing import Any

from docpipe.children import serving

# Tesseract instances held at once, one per language set: each holds its models.
MAX_LANGUAGE_SETS = 3


def main() -> None:
    answer = serving()
    import tesserocr

    tessdata = sys.argv[1]
    apis: dict[str, Any] = {}

    def read(request: dict[str, Any]) -> dict[str, Any]:
        language = request["language"]
        api = apis.pop(language, None)
        if api is None:
            try:
                api = tesserocr.PyTessBaseAPI(path=tessdata, lang=language)
            except RuntimeError as e:
                raise RuntimeError(f"could not load the data of language {language}") from e
        apis[language] = api  # the most recently used last
        if len(apis) > MAX_LANGUAGE_SETS:
            apis.pop(next(iter(apis))).End()
        for renderer in ("txt", "hocr", "pdf"):
            wanted = "1" if renderer in request["renderers"] else "0"
            api.SetVariable(f"tessedit_create_{renderer}", wanted)
        api.SetVariable("textonly_pdf", "1")  # the text layer alone: docpipe lays it over
        api.SetVariable("user_defined_dpi", str(request["dpi"]))
        # One recognition; every renderer asked for writes its file from it. (Its
        # ProcessPage would not finish the PDF: only ProcessPages ends the document.)
        if not api.ProcessPages(request["base"], request["input"]):
            raise RuntimeError("Tesseract could not read the page")
        return {"ok": True}

    # A page's failure is said to the parent as its error; the next page goes on.
    answer(read)


if __name__ == "__main__":
    main()
