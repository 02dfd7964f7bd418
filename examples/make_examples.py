"""Make the sample scans the README's first batch uploads: `python -m examples.make_examples`."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from tests.documents import encode, page_image

HERE = Path(__file__).resolve().parent
# Each file, and the lines drawn on it: what OCR should read back.
SAMPLES = {
    "invoice.pdf": ["INVOICE 2041", "TOTAL DUE 250 EUR"],
    "receipt.png": ["RECEIPT", "COFFEE AND BREAD"],
    "letter.tiff": ["DEAR CUSTOMER", "THANK YOU FOR YOUR ORDER"],
}


def compressed_tiff(image: Image.Image) -> bytes:
    """Deflate-compressed: the helper's uncompressed TIFF of this page is about 500 KB."""
    buf = io.BytesIO()
    image.save(buf, "TIFF", dpi=image.info["dpi"], compression="tiff_adobe_deflate")
    return buf.getvalue()


def main() -> None:
    for name, lines in SAMPLES.items():
        image = page_image(lines, noise=False)
        kind = name.rsplit(".", 1)[1]
        data = compressed_tiff(image) if kind == "tiff" else encode(image, kind)
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
