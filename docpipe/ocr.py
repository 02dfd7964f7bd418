"""The only module that calls Tesseract (through pytesseract) and rasterises PDFs."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import pytesseract
from PIL import Image

from docpipe import readers
from docpipe.children import ChildDied, Children, ChildTimedOut, dying_with_parent
from docpipe.errors import (
    InvalidDocument,
    OcrFailed,
    OcrInterrupted,
    UnknownLanguage,
    fit_for_tenant,
)
from docpipe.outputs import (
    confidence,
    likely_turns,
    misturned,
    skew_degrees,
    words_of,
)
from docpipe.validation import page_pixels, pdf_header_offset

# How a decoded page goes to Tesseract: uncompressed (PNG's encoding costs more than it
# saves), and BMP, which Leptonica reads a row at a time, where it reads a PPM's pixels
# one by one: 14% of a page's OCR time (docs/performance.md).
PAGE_FORMAT = "BMP"
PAGE_SEPARATOR = "\f"
# A page as handed to Tesseract: a BMP file the reader wrote, or one turned from it.
Page = Image.Image | Path


@dataclass(frozen=True)
class PageRead:
    """One page as Tesseract read it, in one pass: its text, hOCR and (if asked) PDF page.

    Coordinates are pixels of the page as it was read: turned `rotation` degrees
    clockwise to stand upright, then, if its lines rose `skew` degrees, turned back by as
    much to lie straight.
    """

    text: str
    hocr: str
    pdf: bytes | None
    width: int
    height: int
    dpi: int
    rotation: int = 0
    skew: float = 0.0
    seconds: float = 0.0  # its reading took, every pass counted (docpipe.metrics)


@dataclass(frozen=True)
class OcrResult:
    pages: list[PageRead]
    seconds: float

    @property
    def text(self) -> str:
        return PAGE_SEPARATOR.join(page.text for page in self.pages)

    @property
    def page_count(self) -> int:
        return len(self.pages)


@dataclass(frozen=True)
class Straightening:
    """Which page corrections to try: both cost a second pass, and only on pages that need it."""

    orient: bool = True
    deskew: bool = True
    # Tesseract reads a slightly tilted line well; below this a second pass gains nothing.
    min_skew_degrees: float = 1.0
    max_skew_degrees: float = 15.0


def ocr_document(
    data: bytes,
    *,
    kind: str,
    language: str,
    dpi: int,
    page_timeout: float,
    document_timeout: float | None = None,
    pdf: bool = False,
    straighten: Straightening | None = None,
    engine: str = "auto",
    niceness: int = 0,
    max_page_pixels: int | None = None,
    max_pages: int | None = None,
    max_document_pixels: int | None = None,
    scratch: Path | None = None,
    slots: int = 1,
) -> OcrResult:
    """OCR every page of a PDF or image; raise OcrFailed if Tesseract cannot.

    Each page is read once, with every output asked for written by that pass (text,
    hOCR, and with `pdf` the page's text layer alone, which docpipe.outputs lays over the
    original's own page). Tesseract is only ever given pages docpipe decoded itself (PDF
    pages drawn by PDFium, image frames decoded by Pillow, both in the reader: a child
    process, docpipe.readers), one at a time and each with its own timeout: never the
    uploaded file, whose format quirks (a TIFF whose pages loop, a damaged JPEG) its own
    readers would meet. A page that does not decode raises InvalidDocument; pages that
    take over `document_timeout` seconds of OCR in all raise OcrFailed. Temporary
    files go under `scratch`. Pages are read on the process's `slots` OCR threads, which
    every document read at once shares: one long document is spread over all of them.
    """
    started = time.perf_counter()
    if scratch is not None:
        use_scratch(scratch)
    _run_at_niceness(niceness)
    # Tesseract's OpenMP threads fight each other when several pages run at once;
    # one thread per process and one process per core is measurably faster.
    os.environ["OMP_THREAD_LIMIT"] = "1"
    limits = PageLimits(max_page_pixels, max_pages, max_document_pixels)
    job = _PageJob(
        language=language,
        timeout=page_timeout,
        budget=_Budget(document_timeout),
        pdf=pdf,
        straighten=straighten or Straightening(orient=False, deskew=False),
        engine=get_engine(engine),
    )
    # Closed here, in this thread, whatever happens: its files go at once.
    with contextlib.closing(
        _pages(data, kind=kind, dpi=dpi, limits=limits, timeout=page_timeout)
    ) as decoded:
        pages = _page_slots(slots, niceness).read_all(job.read, decoded)
    return OcrResult(pages, time.perf_counter() - started)


class PageSlots:
    """A process's OCR threads: pages, not documents, are what they share.

    A document's thread decodes its pages and hands each to the slots, so one long
    document keeps every slot busy as many small ones do. Decoded pages wait their turn
    in memory, whole and uncompressed, so at most two per slot are held at once.
    """

    def __init__(self, slots: int, niceness: int) -> None:
        self.pool = ThreadPoolExecutor(
            max_workers=slots,
            thread_name_prefix="ocr-slot",
            # The slot's engine processes inherit it: a standard run's pages stay behind.
            initializer=_run_at_niceness,
            initargs=(niceness,),
        )
        self.held = threading.BoundedSemaphore(2 * slots)

    def read_all(
        self,
        read: Callable[[Path, int], PageRead],
        pages: Iterator[tuple[Path, int]],
    ) -> list[PageRead]:
        """Every page read, in order; the first page that fails stops the document."""
        futures: list[Future[PageRead]] = []
        waiting: list[Path] = []
        try:
            while True:
                if failed := next((f for f in futures if f.done() and f.exception()), None):
                    failed.result()  # no more of a failed document is decoded
                self.held.acquire()  # before decoding: a decoded page is what costs memory
                try:
                    page, dpi = next(pages)
                    future = self.pool.submit(read, page, dpi)
                except BaseException:  # StopIteration too: this place was never taken
                    self.held.release()
                    raise
                future.add_done_callback(lambda _: self.held.release())
                futures.append(future)
                waiting.append(page)
        except StopIteration:
            return [future.result() for future in futures]
        finally:
            # A failed document's pages still waiting are not read, and their files go.
            for future, page in zip(futures, waiting, strict=True):
                if future.cancel():
                    page.unlink(missing_ok=True)


_slots_lock = threading.Lock()
_slots: dict[tuple[int, int], PageSlots] = {}


def _page_slots(slots: int, niceness: int) -> PageSlots:
    """The process's slots at this niceness (a flow run has one tier, so one set)."""
    with _slots_lock:
        key = (max(1, slots), niceness)
        if key not in _slots:
            _slots[key] = PageSlots(*key)
        return _slots[key]


_LANGUAGES_TTL_SECONDS = 60.0
_languages: tuple[float, list[str], str] | None = None
# A name as Tesseract lists it: `deu`, `chi_sim`, `eng-best`, or a script like `script/Latin`
# (data in a subfolder). Nothing else, so no `..` or absolute path ever reaches Tesseract.
_LANGUAGE = r"(?:script/)?[A-Za-z0-9_][A-Za-z0-9_-]{0,31}"
LANGUAGE_NAME = re.compile(_LANGUAGE)
LANGUAGE_SPEC = re.compile(rf"{_LANGUAGE}(?:\+{_LANGUAGE})*")
MAX_LANGUAGE_CHARS = 64  # the width of the tenant's and the document's language columns


def installed_languages() -> list[str]:
    """The languages Tesseract has data for here (not `osd`, which finds orientation).

    Asked of Tesseract at most once a minute, so data installed meanwhile is seen soon.
    """
    global _languages
    if _languages is None or time.monotonic() - _languages[0] > _LANGUAGES_TTL_SECONDS:
        try:
            listed = subprocess.run(
                [pytesseract.pytesseract.tesseract_cmd, "--list-langs"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise OcrFailed("tesseract is not installed or does not answer") from e
        header, *names = listed.stdout.splitlines() or [""]
        found = re.search(r'"(.+)"', header)  # List of available languages in "<dir>/" (7):
        _languages = (
            time.monotonic(),
            # Only names an upload may ask for, so the list never offers one it refuses.
            sorted(n for n in map(str.strip, names) if n != "osd" and LANGUAGE_NAME.fullmatch(n)),
            found.group(1) if found else os.environ.get("TESSDATA_PREFIX", ""),
        )
    return _languages[1]


def _tessdata() -> str:
    """The folder the CLI finds its languages in: the API engine reads the same."""
    installed_languages()
    assert _languages is not None
    return _languages[2].rstrip("/") + "/"


def check_languages(spec: str, *, max_languages: int) -> str:
    """`deu+eng` if Tesseract has data for each; else UnknownLanguage naming those it has.

    Spaces join languages too: `language=deu+eng` in a URL's query arrives as `deu eng`.
    """
    spec = "+".join(spec.split())

    def refused(why: str) -> UnknownLanguage:
        return UnknownLanguage(f"{why}; installed: {', '.join(installed_languages())}")

    if not LANGUAGE_SPEC.fullmatch(spec):
        raise refused(
            f"{spec[:40]!r} is not a language list: Tesseract's language codes joined by '+', "
            "like deu+eng"
        )
    asked = list(dict.fromkeys(spec.split("+")))  # eng+eng is eng
    if len(asked) > max_languages:
        raise UnknownLanguage(f"at most {max_languages} languages at once; {len(asked)} were asked")
    if len("+".join(asked)) > MAX_LANGUAGE_CHARS:
        raise refused(f"at most {MAX_LANGUAGE_CHARS} characters of languages")
    if unknown := [lang for lang in asked if lang not in installed_languages()]:
        raise refused(f"no OCR data for {', '.join(unknown)}")
    return "+".join(asked)


def tesseract_version(engine: str = "auto") -> str:
    """The version of the Tesseract that reads pages with this engine setting, and how:
    the wheel's library in process and Debian's program are different releases."""
    if isinstance(get_engine(engine), ApiEngine):
        import tesserocr

        return f"{tesserocr.tesseract_version().split()[1]} (in process, tesserocr)"
    try:
        return f"{pytesseract.get_tesseract_version()} (the tesseract program)"
    except pytesseract.TesseractNotFoundError as e:
        raise OcrFailed("tesseract is not installed or not on PATH") from e


@dataclass(frozen=True)
class PageLimits:
    """The deep check's bounds, held again where the work is done: a reader other than
    the one that checked may see a different document in the same bytes."""

    page_pixels: int | None = None
    pages: int | None = None
    document_pixels: int | None = None

    def check_sizes(self, sizes: list[tuple[float, float]], dpi: int) -> None:
        """Every page's size (points) at `dpi`, before any page is drawn."""
        total = 0
        for number, (width, height) in enumerate(sizes, start=1):
            pixels = page_pixels(width, height, dpi)
            total += pixels
            self.check(number, pixels, total, dpi)

    def check(self, number: int, pixels: int, total: int, dpi: int) -> None:
        if self.pages is not None and number > self.pages:
            raise InvalidDocument(f"over {self.pages} pages; the limit is {self.pages}")
        if self.page_pixels is not None and pixels > self.page_pixels:
            raise InvalidDocument(
                f"page {number} is {pixels} pixels at {dpi} dpi; the limit is {self.page_pixels}"
            )
        if self.document_pixels is not None and total > self.document_pixels:
            raise InvalidDocument(
                f"the pages come to over {self.document_pixels} pixels at {dpi} dpi; that is "
                "the limit for one document"
            )


def _pages(
    data: bytes, *, kind: str, dpi: int, limits: PageLimits, timeout: float
) -> Generator[tuple[Path, int], None, None]:
    """Each page decoded by a reader, with its resolution: a PDF's is the one it is drawn
    at, an image's its own (if a scan could have it)."""
    if kind == "pdf":
        # From the header on, as the deep check (pypdf) read it.
        data = data[pdf_header_offset(data) or 0 :]
        check = partial(limits.check_sizes, dpi=dpi)
        for page in readers.render_pdf(data, dpi=dpi, timeout=timeout, check=check):
            yield page, dpi
    else:
        yield from readers.decode_image(data, dpi=dpi, timeout=timeout)


_scratch_lock = threading.Lock()
_scratch: Path | None = None


def use_scratch(root: Path) -> Path:
    """Make root/<this process> the folder of this process's temporary files; once.

    A run killed outright (SIGKILL, a crash) cannot remove its temporary files, which
    are whole uncompressed pages; the next process to start here removes the folders of
    processes that are gone.
    """
    global _scratch
    with _scratch_lock:
        if _scratch is None:
            root.mkdir(parents=True, exist_ok=True)
            for folder in root.glob("run-*"):
                if not _is_alive(folder.name):
                    shutil.rmtree(folder, ignore_errors=True)
            me = psutil.Process()
            _scratch = root / f"run-{me.pid}-{int(me.create_time() * 1000)}"
            _scratch.mkdir(exist_ok=True)
            tempfile.tempdir = str(_scratch)
        return _scratch


def _is_alive(name: str) -> bool:
    """Whether the process a scratch folder is named after still runs (pids are reused)."""
    try:
        _, pid, created = name.split("-")
        return int(psutil.Process(int(pid)).create_time() * 1000) == int(created)
    except (ValueError, psutil.Error):
        return False


def run_tesseract(args: list[str], *, timeout: float) -> None:
    """Run `tesseract *args`; its failures as docpipe's: a crash may pass, a bad page will not."""
    command, options = dying_with_parent([pytesseract.pytesseract.tesseract_cmd, *args])
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False, **options)
    except FileNotFoundError as e:
        raise OcrFailed("tesseract is not installed or not on PATH") from e
    except subprocess.TimeoutExpired as e:
        raise OcrFailed(f"Tesseract took longer than {timeout:g} s on a page") from e
    if done.returncode < 0:
        raise OcrInterrupted(f"Tesseract was killed by signal {-done.returncode}")
    if done.returncode == 127:  # setpriv found no tesseract to run
        raise OcrFailed("tesseract is not installed or not on PATH")
    if done.returncode:
        said = done.stderr.decode(errors="replace")
        if _scratch is not None:
            said = said.replace(str(_scratch), "")  # names no folder of ours
        lines = [line for line in said.splitlines() if line.strip()]
        reason = " ".join(lines[-2:])[:300] or f"exit status {done.returncode}"
        raise OcrFailed(f"Tesseract failed: {reason}")


@dataclass(frozen=True)
class PagePass:
    """One Tesseract pass over a decoded page file: every renderer asked for, at once.

    Its `pdf` renderer writes the text layer alone (docpipe.outputs lays it over the page).
    """

    input: str
    base: str
    language: str
    dpi: int
    renderers: tuple[str, ...]


class CliEngine:
    """Debian's `tesseract` program, one process per page (through pytesseract's files)."""

    def run(self, page: PagePass, *, timeout: float) -> None:
        config = ["--dpi", str(page.dpi)]
        if "pdf" in page.renderers:
            config += ["-c", "textonly_pdf=1"]
        run_tesseract(
            [page.input, page.base, "-l", page.language, *config, *page.renderers],
            timeout=timeout,
        )


class ApiEngine:
    """Tesseract's API (tesserocr) in a long-lived child process per OCR thread.

    Each child loads a language's models once and reads page after page; a child that
    dies or passes the page timeout is killed and replaced by a new one for the next
    page, so it fails only the page it was reading (docpipe.children). Children run in
    the thread's niceness and the run's process group, so priority and cancel reach them.
    """

    def __init__(self) -> None:
        # A child works in the run's page folder, which its command line names (for ps).
        self.children = Children(
            "docpipe.ocr_server",
            lambda: [_tessdata(), _folder()],
            env={"OMP_THREAD_LIMIT": "1"},
            cwd=_folder,
        )

    def run(self, page: PagePass, *, timeout: float) -> None:
        try:
            reply = self.children.ask(asdict(page), timeout=timeout)
        except ChildTimedOut as e:
            raise OcrFailed(f"Tesseract took longer than {timeout:g} s on a page") from e
        except ChildDied as e:
            raise OcrInterrupted(f"Tesseract's engine died ({e})") from e
        if "error" in reply:
            said = str(reply["error"]).replace(_tessdata(), "").replace(_folder(), "")
            raise OcrFailed(f"Tesseract failed: {fit_for_tenant(said) or 'no reason given'}")


def _folder() -> str:
    return str(_scratch or tempfile.gettempdir())


def _api_installed() -> bool:
    try:
        import tesserocr  # noqa: F401
    except ImportError:
        return False
    return True


_engines: dict[str, CliEngine | ApiEngine] = {}


def get_engine(name: str = "auto") -> CliEngine | ApiEngine:
    """The engine by setting: `api`, `cli`, or `auto` (the API if tesserocr is installed)."""
    if name == "auto":
        name = "api" if _api_installed() else "cli"
    if name not in ("api", "cli"):
        raise OcrFailed(f"unknown OCR engine {name!r}: choose auto, api or cli")
    if name == "api" and not _api_installed():
        raise OcrFailed("the api OCR engine needs tesserocr, which is not installed")
    if name not in _engines:
        _engines[name] = ApiEngine() if name == "api" else CliEngine()
    return _engines[name]


class _Budget:
    """The seconds of OCR one document's pages may take in all (None: no bound).

    Its pages' own time, not the time they waited for a slot behind other documents.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds, self.spent = seconds, 0.0
        self.lock = threading.Lock()

    def left(self) -> float:
        with self.lock:
            return math.inf if self.seconds is None else self.seconds - self.spent

    def spend(self, seconds: float) -> None:
        with self.lock:
            self.spent += seconds

    def overrun(self) -> OcrFailed:
        return OcrFailed(
            f"the document's pages took over {self.seconds:g} s of OCR in all; that is the "
            "limit for one document (DOCPIPE_OCR_DOCUMENT_TIMEOUT_SECONDS)"
        )


@dataclass(frozen=True)
class _PageJob:
    """How every page of one document is read."""

    language: str
    timeout: float
    budget: _Budget
    pdf: bool
    straighten: Straightening
    engine: CliEngine | ApiEngine

    def read(self, page: Path, dpi: int) -> PageRead:
        """Read the page; turn it upright or straighten it only if the first read says to.

        An upright, straight page (nearly every page) costs one pass and nothing else: the
        page file the reader wrote goes to Tesseract as it is, never decoded here.
        """
        started = time.perf_counter()
        try:
            if self.budget.left() <= 0:
                raise self.budget.overrun()
            with Image.open(page) as image:  # its header only, unless it must be turned
                best = self._best(page, image, dpi)
        except OcrFailed as e:
            # A page stopped because the document's time ran out says so, not the page's.
            if self.budget.left() - (time.perf_counter() - started) <= 0:
                raise self.budget.overrun() from e
            raise
        finally:
            page.unlink(missing_ok=True)
            self.budget.spend(time.perf_counter() - started)
        return replace(best, seconds=time.perf_counter() - started)

    def _best(self, page: Page, image: Image.Image, dpi: int) -> PageRead:
        best = self._pass(page, image.size, dpi)
        if self.straighten.orient:
            for rotation in likely_turns(words_of(best.hocr)):
                turned = _turned(image, rotation)
                again = self._pass(turned, turned.size, dpi, rotation=rotation)
                # The turn that reads upright and at least as well as the first read wins.
                words = words_of(again.hocr)
                if not misturned(words) and confidence(again.hocr) >= confidence(best.hocr) - 5:
                    best = again
                    break
        if self.straighten.deskew:
            skew = skew_degrees(best.hocr)
            if not skew and len(words_of(best.hocr)) < FEW_WORDS:
                # Tesseract may find no lines at all on a tilted page: measure it instead.
                skew = projected_skew(_turned(image, best.rotation))
            if self.straighten.min_skew_degrees <= abs(skew) <= self.straighten.max_skew_degrees:
                straight = _straightened(_turned(image, best.rotation), skew)
                again = self._pass(straight, straight.size, dpi, rotation=best.rotation, skew=skew)
                if confidence(again.hocr) >= confidence(best.hocr) - 5:
                    best = again
        return best

    def _pass(
        self,
        page: Page,
        size: tuple[int, int],
        dpi: int,
        *,
        rotation: int = 0,
        skew: float = 0.0,
    ) -> PageRead:
        """One Tesseract run writing every output at once."""
        renderers = ("txt", "hocr", *(("pdf",) if self.pdf else ()))
        with pytesseract.pytesseract.save(str(page) if isinstance(page, Path) else page) as (
            base,
            name,
        ):
            self.engine.run(
                PagePass(name, base, self.language, dpi, renderers),
                timeout=min(self.timeout, max(self.budget.left(), 0.01)),
            )
            text = Path(f"{base}.txt").read_text(encoding="utf-8", errors="replace").strip()
            hocr = Path(f"{base}.hocr").read_text(encoding="utf-8", errors="replace")
            pdf = Path(f"{base}.pdf").read_bytes() if self.pdf else None
        width, height = size
        return PageRead(text, hocr, pdf, width, height, dpi, rotation, skew)


FEW_WORDS = 3


def projected_skew(image: Image.Image, *, limit: float = 15.0) -> float:
    """The angle (degrees counter-clockwise) the page's lines rise, from its ink alone.

    The turn that lines the ink up in rows makes the row sums most uneven; tried on a
    small copy, coarse then fine, it costs a few milliseconds.
    """
    small = image.convert("L")
    small = small.reduce(max(1, small.width // 500))
    ink = Image.fromarray(((np.asarray(small) < 128) * 255).astype(np.uint8))

    def unevenness(angle: float) -> float:
        rows = np.asarray(ink.rotate(angle, resample=Image.Resampling.NEAREST)).sum(axis=1)
        return float(np.square(np.diff(rows.astype(np.float64))).sum())

    coarse = max(np.arange(-limit, limit + 0.1, 1.0), key=unevenness)
    fine = max(np.arange(coarse - 1, coarse + 1.01, 0.1), key=unevenness)
    # Turning by `fine` straightens it: its lines rose by as much the other way.
    return -round(float(fine), 1)


def _turned(image: Image.Image, rotation: int) -> Image.Image:
    """The page turned `rotation` degrees clockwise."""
    if not rotation:
        return image
    turned = image.rotate(-rotation, expand=True)
    turned.format = PAGE_FORMAT
    return turned


def _straightened(image: Image.Image, skew: float) -> Image.Image:
    """The page turned `skew` degrees clockwise, the same size, corners filled white."""
    if image.mode == "1":
        image = image.convert("L")
    white = 255 if image.mode == "L" else (255, 255, 255)
    straight = image.rotate(-skew, resample=Image.Resampling.BICUBIC, fillcolor=white)
    straight.format = PAGE_FORMAT
    return straight


def lower_process_priority(niceness: int) -> None:
    """Run this process, and the Tesseract processes it starts, at a lower CPU priority.

    Linux's autogroup scheduler shares the CPU fairly between sessions whatever their
    processes' nice values, and every flow run is a session of its own: so the
    session's autogroup gets the niceness too, or a VIP run would not get ahead. Only a
    session this process leads: one it shares (a test's terminal, a worker's) would be
    lowered whole, and everything started in it later with it.
    """
    if niceness <= 0:
        return
    with contextlib.suppress(OSError):
        if os.getpriority(os.PRIO_PROCESS, 0) < niceness:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
    autogroup = Path("/proc/self/autogroup")
    with contextlib.suppress(OSError):
        if autogroup.exists() and os.getsid(0) == os.getpid():
            autogroup.write_text(str(niceness))


def _run_at_niceness(niceness: int) -> None:
    """Set this thread's niceness; Tesseract processes it starts inherit it."""
    if niceness <= 0:
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):
        current = os.getpriority(os.PRIO_PROCESS, thread)
        if current < niceness:
            os.setpriority(os.PRIO_PROCESS, thread, niceness)
