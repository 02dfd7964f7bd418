"""Test documents with known text: scanned-looking pages, PDFs, and broken files."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from loadtest.pages import VOCABULARY

# The first 30 words of the benchmark's vocabulary: short, common, OCR-friendly.
WORDS = VOCABULARY[:30]


def phrase(seed: int, words: int = 4) -> str:
    """A few distinct dictionary words, the same for the same seed."""
    rng = random.Random(seed)
    return " ".join(rng.sample(WORDS, words)).upper()


def page_image(
    lines: list[str], *, width: int = 1240, dpi: int = 150, noise: bool = True, seed: int = 0
) -> Image.Image:
    """A grayscale page that looks scanned: dark text on off-white, a little blur and noise."""
    font = ImageFont.load_default(size=max(24, dpi // 4))
    assert isinstance(font, ImageFont.FreeTypeFont)  # a sized font needs FreeType
    line_height = int(font.size * 1.6)
    height = max(400, 120 + line_height * len(lines))
    image = Image.new("L", (width, height), 245)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((60, 60 + i * line_height), line, fill=20, font=font)
    if noise:
        rng = random.Random(seed)
        pixels = image.load()
        assert pixels is not None
        for _ in range(width * height // 500):
            x, y = rng.randrange(width), rng.randrange(height)
            pixels[x, y] = rng.randrange(150, 256)
        image = image.filter(ImageFilter.GaussianBlur(0.6))
    image.info["dpi"] = (dpi, dpi)
    return image


def accented_page(lines: list[str], *, dpi: int = 150) -> Image.Image:
    """A page in a font with every Latin letter (matplotlib's DejaVu), for non-English text."""
    import matplotlib

    serif = Path(matplotlib.get_data_path(), "fonts/ttf/DejaVuSerif.ttf")
    font = ImageFont.truetype(str(serif), 40)
    image = Image.new("L", (1400, 120 + 80 * len(lines)), 245)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((60, 60 + i * 80), line, fill=20, font=font)
    image.info["dpi"] = (dpi, dpi)
    return image


def words(text: str) -> set[str]:
    """The words OCR found, ignoring punctuation a speck of noise may add between them."""
    return set(re.findall(r"[A-Z0-9]+", text.upper()))


def encode(image: Image.Image, kind: str) -> bytes:
    buf = io.BytesIO()
    if kind == "pdf":
        image.save(buf, "PDF", resolution=image.info.get("dpi", (150, 150))[0])
    elif kind == "jpeg":
        image.save(buf, "JPEG", quality=90)
    else:
        image.save(buf, {"png": "PNG", "tiff": "TIFF"}[kind], dpi=image.info.get("dpi"))
    return buf.getvalue()


def document(text: str, kind: str, *, seed: int = 0) -> bytes:
    """One page of the given kind with the text drawn on it."""
    return encode(page_image([text], seed=seed), kind)


def multipage_pdf(texts: list[str]) -> bytes:
    pages = [page_image([t], seed=i) for i, t in enumerate(texts)]
    buf = io.BytesIO()
    pages[0].save(buf, "PDF", resolution=150, save_all=True, append_images=pages[1:])
    return buf.getvalue()


def truncated(data: bytes) -> bytes:
    """The first half of a file: the signature is right, the rest is missing."""
    return data[: len(data) // 2]


def ten_files_two_broken() -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """Eight good documents of every kind, a truncated PDF and a cut-off PNG."""
    kinds = ["pdf", "png", "jpeg", "tiff"]
    files, texts = [], {}
    for i in range(8):
        kind = kinds[i % 4]
        name = f"scan-{i}.{kind}"
        texts[name] = phrase(100 + i)
        files.append((name, document(texts[name], kind, seed=i)))
    files.insert(3, ("cut.pdf", truncated(document("GONE", "pdf"))))
    files.insert(7, ("cut.png", truncated(document("GONE", "png"))))
    return files, texts
