"""A flow run killed outright (SIGKILL, a crash) leaves no program it started running on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

# Ghostscript that hangs (a fault injected: the real one finishes): it says who it is, then
# sleeps as that same process.
HANGING_GS = """#!/bin/sh
echo $$ > "{pid_file}"
exec sleep 300
"""

# The flow run's part: make a PDF/A, with a timeout far longer than the test.
RUN = """
from docpipe.ghostscript import to_pdfa
to_pdfa(b"%PDF-1.7", timeout=600)
"""


def test_ghostscript_dies_with_the_run_that_started_it(tmp_path: Path) -> None:
    bin_dir, pid_file = tmp_path / "bin", tmp_path / "gs.pid"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(HANGING_GS.format(pid_file=pid_file))
    gs.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.Popen([sys.executable, "-c", RUN], env=env)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert run.poll() is None, "the run ended before Ghostscript started"
            assert time.monotonic() < deadline, "Ghostscript never started"
            time.sleep(0.05)
        ghostscript = psutil.Process(int(pid_file.read_text()))

        run.kill()  # SIGKILL: nothing of the run's own can clean up
        run.wait(timeout=10)

        try:
            ghostscript.wait(timeout=10)
        except psutil.TimeoutExpired:
            ghostscript.kill()
            raise AssertionError("Ghostscript ran on after its run was killed") from None
    finally:
        run.kill()
