"""The only module that calls Ghostscript: it makes the searchable PDF a PDF/A-2b."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import ImageCms

from docpipe.children import dying_with_parent
from docpipe.errors import OcrFailed

# The output intent PDF/A asks for (sRGB, made by Pillow's littleCMS), declared the way
# Ghostscript's own PDFA_def.ps does.
_DEFINITION = """%!
[/_objdef {{icc_PDFA}} /type /stream /OBJ pdfmark
[{{icc_PDFA}} << /N 3 >> /PUT pdfmark
[{{icc_PDFA}} ({icc}) (r) file /PUT pdfmark
[/_objdef {{OutputIntent_PDFA}} /type /dict /OBJ pdfmark
[{{OutputIntent_PDFA}} << /Type /OutputIntent /S /GTS_PDFA1 /DestOutputProfile {{icc_PDFA}}
  /OutputConditionIdentifier (sRGB) /Info (sRGB IEC61966-2.1) >> /PUT pdfmark
[{{Catalog}} << /OutputIntents [ {{OutputIntent_PDFA}} ] >> /PUT pdfmark
"""


def to_pdfa(pdf: bytes, *, timeout: float) -> bytes:
    """The same PDF as PDF/A-2b; OcrFailed if Ghostscript cannot make it one.

    Ghostscript reads what it is given in its SAFER mode (no file access but the
    definition and the profile), with a timeout, and its text layer comes through as is.
    """
    if shutil.which("gs") is None:
        raise OcrFailed("PDF/A needs Ghostscript (gs), which is not installed")
    with tempfile.TemporaryDirectory(prefix="pdfa-") as folder:
        work = Path(folder)
        icc = work / "srgb.icc"
        icc.write_bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
        definition = work / "pdfa.ps"
        definition.write_text(_DEFINITION.format(icc=icc))
        source, made = work / "in.pdf", work / "out.pdf"
        source.write_bytes(pdf)
        command, options = dying_with_parent([
            "gs", "-q", "-dBATCH", "-dNOPAUSE", "-dSAFER", f"--permit-file-read={work}/",
            "-sDEVICE=pdfwrite", "-dPDFA=2", "-dPDFACompatibilityPolicy=1",
            "-sColorConversionStrategy=RGB", "-dAutoRotatePages=/None",
            f"-sOutputFile={made}", str(definition), str(source),
        ])  # fmt: skip
        try:
            # It dies with the flow run: a run killed outright leaves no Ghostscript behind.
            done = subprocess.run(
                command, capture_output=True, timeout=timeout, check=False, **options
            )
        except subprocess.TimeoutExpired as e:
            raise OcrFailed(f"Ghostscript took longer than {timeout:g} s to make a PDF/A") from e
        if done.returncode != 0 or not made.exists():
            said = done.stderr.decode(errors="replace").replace(str(work), "").strip()
            reason = (said.splitlines() or ["no reason given"])[-1][:200]
            raise OcrFailed(f"Ghostscript could not make a PDF/A: {reason}")
        return made.read_bytes()
