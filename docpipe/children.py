"""Helper processes that read what tenants send, each killed and replaced when it fails.

A tenant's file meets Tesseract, PDFium and pypdf, which are code that a crafted file
can crash or send round for ever. Each of them works in a child process of the flow run,
one per thread, that answers one JSON line per request: a request that crashes it or
passes its timeout costs that process and the document it was reading, never the flow
run or the batch. Children die with the run that started them and sit in its process
group, so a cancel reaches them too.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any


class ChildTimedOut(Exception):
    """The child did not answer within the request's timeout; it has been killed."""


class ChildDied(Exception):
    """The child died on the request (a crash, a signal)."""

    def __init__(self, status: int) -> None:
        super().__init__(exit_reason(status))


class Children:
    """One long-lived child per thread, running `python -m <module> <args()>`.

    It starts at a thread's first request, in the thread's niceness, and serves the
    thread's requests one after another until it fails one; the next request then starts
    a new one.
    """

    def __init__(
        self,
        module: str,
        args: Callable[[], list[str]],
        *,
        env: dict[str, str] | None = None,
        cwd: Callable[[], str] | None = None,
    ) -> None:
        self.module, self.args, self.env, self.cwd = module, args, env or {}, cwd
        self._local = threading.local()

    def ask(self, request: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """The child's answer to one request; ChildTimedOut or ChildDied if there is none."""
        child = self._child()
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(json.dumps(request).encode() + b"\n")
            child.stdin.flush()
            ready, _, _ = select.select([child.stdout], [], [], timeout)
            line = child.stdout.readline() if ready else None
        except (BrokenPipeError, ValueError):
            line = b""
        if line is None:
            self._replace(child)
            raise ChildTimedOut(f"no answer within {timeout:g} s")
        if not line:
            raise ChildDied(self._replace(child))
        try:
            reply = json.loads(line)
        except ValueError as e:  # a child that says nonsense is done for
            self._replace(child)
            raise ChildDied(-signal.SIGKILL) from e
        if not isinstance(reply, dict):
            self._replace(child)
            raise ChildDied(-signal.SIGKILL)
        return reply

    def _child(self) -> subprocess.Popen[bytes]:
        child: subprocess.Popen[bytes] | None = getattr(self._local, "child", None)
        if child is None or child.poll() is not None:
            command, options = dying_with_parent([sys.executable, "-m", self.module, *self.args()])
            child = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                cwd=self.cwd() if self.cwd else None,
                **options,
            )
            self._local.child = child
        return child

    def _replace(self, child: subprocess.Popen[bytes]) -> int:
        """Kill a child that failed its request; the next request starts a new one."""
        with contextlib.suppress(OSError):
            child.kill()
        self._local.child = None
        return child.wait()

    def close(self) -> None:
        """End this thread's child, if it has one (it would end with the run anyway)."""
        child: subprocess.Popen[bytes] | None = getattr(self._local, "child", None)
        if child is not None:
            self._replace(child)


def exit_reason(status: int) -> str:
    return f"killed by signal {-status}" if status < 0 else f"exit status {status}"


def answer_requests(handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The child's side: answer each JSON line on stdin with one on stdout, until stdin ends.

    Whatever a library prints goes to stderr, so stdout carries only answers. A request
    that raises is answered with its error, and the next one is served.
    """
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    for line in sys.stdin.buffer:
        try:
            reply = handle(json.loads(line))
        except Exception as e:
            reply = {"error": str(e) or type(e).__name__}
        replies.write(json.dumps(reply).encode() + b"\n")


def _die_with_parent() -> None:
    """In a child, before exec: die when the flow run that started it dies."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
_prctl: Any
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved now, not in the child
except (OSError, AttributeError):  # not Linux
    _prctl = None


# A child dies with the run that started it, so a run killed outright (SIGKILL, a
# crash) leaves none reading pages for their full timeout. setpriv does it by exec; a
# preexec_fn makes Python fork the whole flow run instead, about 14 ms a page.
_SETPRIV = shutil.which("setpriv")


def dying_with_parent(command: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The command, and Popen's options, for a child that dies with the thread starting it."""
    if _SETPRIV is not None:
        return [_SETPRIV, "--pdeathsig", "KILL", *command], {}
    if _prctl is not None:
        return command, {"preexec_fn": _die_with_parent}
    return command, {}
