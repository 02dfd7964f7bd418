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
import resource
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

# The most a child may answer to one request: its answers are a few numbers or a reason.
MAX_REPLY_BYTES = 1024 * 1024
# What a child is given of the parent's environment: enough to find Python and docpipe,
# none of the secrets (the Prefect secret, storage keys) a flow run holds.
_PASSED_ON = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


class ChildTimedOut(Exception):
    """The child did not answer within the request's timeout; it has been killed."""


class ChildDied(Exception):
    """The child died on the request (a crash, a signal), or broke the protocol and was
    killed for it; the message says which, and `status` is its exit status (negative: the
    signal that killed it) if it died by itself."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Children:
    """One long-lived child per thread, running `python -m <module> <args()>`.

    It starts at a thread's first request, in the thread's niceness, and serves the
    thread's requests one after another, one JSON line in, one out, until it fails one;
    the next request then starts a new one. Sending and answering share the request's
    deadline; a child that answers too much, out of turn or not in JSON is killed.
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
        deadline = time.monotonic() + timeout
        try:
            _send(child, json.dumps(request).encode() + b"\n", deadline)
            line = _receive(child, deadline)
            reply = json.loads(line)
            if not isinstance(reply, dict):
                raise _Broke("it answered something other than an object")
        except _Overran:
            self._replace(child)
            raise ChildTimedOut(f"no answer within {timeout:g} s") from None
        except _Ended:
            status = self._replace(child)
            raise ChildDied(exit_reason(status), status=status) from None
        except (_Broke, ValueError) as e:
            self._replace(child)
            raise ChildDied(f"killed: {e}" if isinstance(e, _Broke) else "killed: not JSON") from e
        except BaseException:
            # Interrupted mid-request (a cancel, a KeyboardInterrupt): its answer must not
            # be the next request's.
            self._replace(child)
            raise
        return reply

    def _child(self) -> subprocess.Popen[bytes]:
        child: subprocess.Popen[bytes] | None = getattr(self._local, "child", None)
        if child is not None and (child.poll() is not None or _has_spoken(child)):
            self._replace(child)  # dead, or it said something no one asked for
            child = None
        if child is None:
            command, options = dying_with_parent([sys.executable, "-m", self.module, *self.args()])
            passed = {name: os.environ[name] for name in _PASSED_ON if name in os.environ}
            child = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**passed, **self.env},
                cwd=self.cwd() if self.cwd else None,
                **options,
            )
            assert child.stdin is not None
            os.set_blocking(child.stdin.fileno(), False)
            self._local.child = child
        return child

    def _replace(self, child: subprocess.Popen[bytes]) -> int:
        """Kill a child that failed its request; the next request starts a new one."""
        with contextlib.suppress(OSError):
            child.kill()
        self._local.child = None
        for pipe in (child.stdin, child.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        return child.wait()

    def running(self) -> bool:
        """Whether this thread has a child alive (one that failed a request has gone)."""
        child: subprocess.Popen[bytes] | None = getattr(self._local, "child", None)
        return child is not None and child.poll() is None

    def close(self) -> None:
        """End this thread's child, if it has one (it would end with the run anyway)."""
        child: subprocess.Popen[bytes] | None = getattr(self._local, "child", None)
        if child is not None:
            self._replace(child)


class _Overran(Exception):
    pass


class _Ended(Exception):
    pass


class _Broke(Exception):
    pass


def _wait(fd: int, event: int, deadline: float) -> None:
    """Until `fd` is ready for `event` (or hung up); _Overran past the deadline."""
    poller = select.poll()
    poller.register(fd, event)
    while not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
        if time.monotonic() >= deadline:
            raise _Overran


def _send(child: subprocess.Popen[bytes], data: bytes, deadline: float) -> None:
    assert child.stdin is not None
    fd, view = child.stdin.fileno(), memoryview(data)
    while view:
        _wait(fd, select.POLLOUT, deadline)
        try:
            sent = os.write(fd, view)
        except BlockingIOError:
            continue
        except BrokenPipeError:
            raise _Ended from None
        view = view[sent:]


def _receive(child: subprocess.Popen[bytes], deadline: float) -> bytes:
    """One whole line and nothing after it."""
    assert child.stdout is not None
    fd, got = child.stdout.fileno(), bytearray()
    while b"\n" not in got:
        _wait(fd, select.POLLIN, deadline)
        chunk = os.read(fd, 65536)
        if not chunk:
            raise _Ended
        got += chunk
        if len(got) > MAX_REPLY_BYTES:
            raise _Broke(f"it answered over {MAX_REPLY_BYTES} bytes")
    line, _, rest = bytes(got).partition(b"\n")
    if rest:
        raise _Broke("it answered more than once")
    return line


def _has_spoken(child: subprocess.Popen[bytes]) -> bool:
    """Whether the child wrote (or closed its side) between requests."""
    assert child.stdout is not None
    poller = select.poll()
    poller.register(child.stdout.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def exit_reason(status: int) -> str:
    return f"killed by signal {-status}" if status < 0 else f"exit status {status}"


def serving() -> Callable[[Callable[[dict[str, Any]], dict[str, Any]]], None]:
    """The child's side, called first in its main(): no core dumps (a page of a tenant's
    file in memory is not to be left on disk), and stdout kept for answers only (whatever
    a library prints goes to stderr). Returns the loop that answers requests: each JSON
    line on stdin with one on stdout, until stdin ends. A request that raises is
    answered with its error, and the next one is served."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _prctl is not None:
        _prctl(_PR_SET_DUMPABLE, 0)
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)

    def answer(handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        for line in sys.stdin.buffer:
            try:
                reply = handle(json.loads(line))
            except Exception as e:
                reply = {"error": str(e) or type(e).__name__}
            replies.write(json.dumps(reply).encode() + b"\n")

    return answer


def _die_with_parent() -> None:
    """In a child, before exec: die when the flow run that started it dies."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
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
