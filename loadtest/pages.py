"""Scanned-looking pages with known text, the same for the same seed, cached on disk."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont
from rapidfuzz.distance import Levenshtein

VOCABULARY = [
    "invoice",
    "account",
    "balance",
    "payment",
    "amount",
    "total",
    "delivery",
    "order",
    "customer",
    "address",
    "contract",
    "signature",
    "date",
    "number",
    "reference",
    "office",
    "company",
    "market",
    "report",
    "summary",
    "quarter",
    "energy",
    "river",
    "mountain",
    "garden",
    "window",
    "silver",
    "orange",
    "planet",
    "yellow",
    "service",
    "period",
    "credit",
    "debit",
    "tax",
    "net",
    "gross",
    "item",
    "quantity",
    "price",
    "discount",
    "shipping",
    "bank",
    "transfer",
    "notice",
    "letter",
    "policy",
    "claim",
    "insurance",
    "vehicle",
    "registration",
    "member",
    "health",
    "record",
    "patient",
    "doctor",
]

# A4 at 200 dpi: a real scanned page, smaller than 300 dpi scans so runs stay short.
WIDTH, HEIGHT, DPI = 1654, 2339, 200


def page_text(seed: int, lines: int = 18, words_per_line: int = 7) -> str:
    rng = random.Random(seed)
    return "\n".join(
        " ".join(rng.choice(VOCABULARY) for _ in range(words_per_line)) for _ in range(lines)
    )


def page_png(seed: int) -> bytes:
    """One page: its text in dark grey on off-white, with a little blur and speckle."""
    text = page_text(seed)
    image = Image.new("L", (WIDTH, HEIGHT), 242)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    for i, line in enumerate(text.splitlines()):
        draw.text((140, 200 + i * 96), line, fill=25, font=font)
    rng = random.Random(seed)
    pixels = image.load()
    assert pixels is not None
    for _ in range(WIDTH * HEIGHT // 400):
        pixels[rng.randrange(WIDTH), rng.randrange(HEIGHT)] = rng.randrange(150, 256)
    image = image.filter(ImageFilter.GaussianBlur(0.5))
    buf = io.BytesIO()
    image.save(buf, "PNG", dpi=(DPI, DPI))
    return buf.getvalue()


def cached_pages(count: int, cache: Path, *, first_seed: int = 0) -> list[tuple[Path, str]]:
    """`count` pages as PNG files under cache, made once: (path, known text)."""
    cache.mkdir(parents=True, exist_ok=True)
    pages = []
    for seed in range(first_seed, first_seed + count):
        path = cache / f"page-{seed:05d}.png"
        if not path.exists():
            partial = path.with_suffix(".partial")
            partial.write_bytes(page_png(seed))
            partial.replace(path)
        pages.append((path, page_text(seed)))
    return pages


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Edit distance between the texts (whitespace runs as one space) over the reference length."""
    ref, hyp = " ".join(reference.split()), " ".join(hypothesis.split())
    if not ref:
        return float(bool(hyp))
    return int(Levenshtein.distance(ref, hyp)) / len(ref)
