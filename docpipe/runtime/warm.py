"""The warm starter: flow runs begin in a process that has already imported everything.

A Prefect process worker starts every flow run as a new Python process, which then
imports Prefect, pandas, SQLAlchemy and the flows: seconds of CPU per batch, before the
first document is touched. Instead, `docpipe worker` (and `make up`) also runs one
*warm starter*: a process that imports all of that once, then waits on a Unix socket.
The deployments' command is `python -m docpipe.runtime.warm`, a launcher that imports nothing
but the standard library. It hands the worker's environment, working directory and
stdin/stdout/stderr to the warm starter, which forks a child to run `prefect.engine`
there: the flow run starts in milliseconds, with its own session (so its CPU priority
is its own), and the worker sees the launcher exactly as it would see the engine:

- signals the worker sends the launcher (cancellation's SIGTERM) reach the flow run;
- the launcher exits with the flow run's exit status;
- if the launcher is killed outright, the warm starter kills the flow run too;
- if no warm starter is listening, the launcher becomes `python -m prefect.engine`,
  so a flow run never depends on it.

The socket is created owner-only: whoever can connect can run flows as this user.
With DOCPIPE_WARM_DEBUG_MODULES=<file>, each flow run appends the modules it had to
import itself to that file: the candidates for PRELOAD.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import selectors
import signal
import socket
import stat
import struct
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

SOCKET_ENV = "DOCPIPE_WARM_SOCKET"
ENGINE = "prefect.engine"
# Imported once by the warm starter, so no flow run pays for them again.
PRELOAD = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.deployments.steps",
    "flows.process_batch",
    "flows.process_batch_part",
    "flows.recover_batches",
    "flows.ingest_folder",
    # What a flow run would otherwise import on first use (see DOCPIPE_WARM_DEBUG_MODULES).
    "prefect.utilities.visualization",
    "anyio._backends._asyncio",
    "anyio.streams.memory",
    "anyio.streams.tls",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql.psycopg",
    "pandas.core.methods.to_dict",
    "rich._emoji_codes",
    "encodings.idna",
    "fsspec.implementations.chained",
    "PIL.PngImagePlugin",
    "PIL.JpegImagePlugin",
    "PIL.TiffImagePlugin",
    "PIL.PpmImagePlugin",
)
_HEADER = struct.Struct("!I")
_MAX_REQUEST = 4 * 1024 * 1024
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux


def socket_path_for(home: Path, worker_name: str) -> Path:
    """Where the warm starter of this worker listens: short enough for AF_UNIX."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in worker_name)[:64]
    preferred = home.resolve() / "run" / f"warm-{safe}.sock"
    if len(str(preferred)) <= _MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:16]
    # In a folder of its own, which `serve` makes owner-only and the launcher checks: the
    # shared temporary folder lets anyone create a file with a name they can guess.
    return Path(tempfile.gettempdir()) / f"docpipe-{os.getuid()}-{digest}" / "warm.sock"


def trusted(path: str) -> bool:
    """Whether the socket and its folder are this user's alone.

    A socket someone else planted there would be handed the flow run's whole
    environment, the Prefect secret included.
    """
    try:
        folder, sock = Path(path).parent.lstat(), os.lstat(path)
    except OSError:
        return False
    uid = os.getuid()
    return (
        stat.S_ISDIR(folder.st_mode)
        and folder.st_uid == uid
        and not folder.st_mode & 0o022
        and stat.S_ISSOCK(sock.st_mode)
        and sock.st_uid == uid
    )


# The launcher: runs once per flow run, so it imports only the standard library.


def launch(argv: list[str]) -> int:
    """Run one flow run in the warm starter, or as a cold `python -m prefect.engine`."""
    path = os.environ.get(SOCKET_ENV)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if not path:
            raise FileNotFoundError("no warm starter configured")
        if not trusted(path):
            raise PermissionError(f"{path} or its folder is not this user's alone")
        conn.connect(path)
        request = json.dumps({"argv": argv, "cwd": str(Path.cwd()), "env": dict(os.environ)})
        payload = request.encode()
        socket.send_fds(conn, [_HEADER.pack(len(payload)) + payload], [0, 1, 2])
        reader = conn.makefile("rb")
        started = reader.readline().split()
    except OSError:
        conn.close()
        started = []
    if len(started) != 2 or started[0] != b"pid":
        print("docpipe: no warm starter answered; starting the flow run cold", file=sys.stderr)
        # A session of its own, as a warm run has: its CPU priority is then its own, and
        # a standard run lowering it leaves the worker and later runs as they were.
        with contextlib.suppress(OSError):  # it leads its process group already
            os.setsid()
        os.execv(sys.executable, [sys.executable, "-m", ENGINE, *argv])
    child = int(started[1])

    def forward(signum: int, _frame: object) -> None:
        # To the flow run's whole process group (it leads its own session): its Tesseract
        # processes stop now too, instead of reading their pages to the end after a cancel.
        _kill(child, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    finished = reader.readline().split()
    if len(finished) != 2 or finished[0] != b"exit":
        print("docpipe: the warm starter went away during the flow run", file=sys.stderr)
        return 1
    code = int(finished[1])
    if code < 0:  # died of a signal: die of the same one, as the engine would have
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # no handler to reset for these
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


# The warm starter: one per worker, single-threaded, so forking it is safe.


@dataclass
class Job:
    """What a forked child runs: the launcher's command line, directory and environment."""

    argv: list[str]
    cwd: str
    env: dict[str, str]


def _prepare() -> None:
    """Do once what every run would otherwise do on first use (and nothing that starts a
    thread or opens a connection: the children must not share them)."""
    from prefect.settings import get_current_settings
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # docpipe's ORM classes, which every run would configure again
    # A worker hands its runs Prefect's settings as Prefect writes them ("30.0" for "30",
    # "False" for "false"): written the same way here, a run sees the environment it was
    # forked with and need not rebuild settings and logging.
    os.environ.update(get_current_settings().to_environment_variables(exclude_unset=True))


def serve(path: Path) -> Job | None:
    """Preload, then fork a child per launcher until SIGTERM; returns the Job in a child."""
    import importlib
    import threading

    for module in PRELOAD:
        try:
            importlib.import_module(module)
        except ImportError as e:  # an optional extra not installed: the run imports less
            print(f"warm starter: not preloading {module}: {e}", flush=True)
    _prepare()
    if threading.active_count() != 1:
        raise RuntimeError("the warm starter must not run threads: forking would be unsafe")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = os.lstat(path.parent)
    if folder.st_uid != os.getuid() or folder.st_mode & 0o022 or not stat.S_ISDIR(folder.st_mode):
        raise RuntimeError(f"{path.parent} is not a folder of this user's alone")
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(64)
    inode = path.stat().st_ino
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    stopping: list[int] = []
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda signum, _: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _: stopping.append(signum))
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_read, selectors.EVENT_READ, "wake")
    running: dict[int, socket.socket] = {}  # child pid -> its launcher's connection
    me = os.getpid()
    print(f"warm starter ready on {path}", flush=True)
    try:
        while not stopping:
            for key, _ in selector.select(timeout=5):
                if key.data == "wake":
                    _drain(wake_read)
                elif key.data == "accept":
                    conn, _ = listener.accept()
                    job, fds = _receive(conn)
                    if job is None:
                        conn.close()
                        continue
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                    if pid == 0:
                        # The child keeps nothing of the starter's: its stdio comes next.
                        selector.close()
                        for sock in (listener, conn, *running.values()):
                            sock.close()
                        for fd in (wake_read, wake_write):
                            os.close(fd)
                        _become_child(fds)
                        return job
                    for fd in fds:
                        os.close(fd)
                    _send(conn, f"pid {pid}\n")
                    flow_run = job.env.get("PREFECT__FLOW_RUN_ID", "?")
                    print(f"flow run {flow_run}: started warm as pid {pid}", flush=True)
                    running[pid] = conn
                    selector.register(conn, selectors.EVENT_READ, pid)
                else:  # a launcher hung up: it was killed, so its flow run goes too
                    pid = key.data
                    selector.unregister(key.fileobj)
                    _kill(pid, signal.SIGKILL)
            _reap(running, selector)
    finally:
        if os.getpid() == me:  # not in a child returning its job
            for pid in running:
                _kill(pid, signal.SIGTERM)
            with contextlib.suppress(OSError):
                if path.stat().st_ino == inode:  # still ours, not a newer starter's
                    path.unlink()
    return None


def _receive(conn: socket.socket) -> tuple[Job | None, list[int]]:
    conn.settimeout(10)
    fds: list[int] = []
    try:
        first, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
        if len(first) < _HEADER.size or len(fds) != 3:
            raise ValueError("bad request")
        (size,) = _HEADER.unpack_from(first)
        if size > _MAX_REQUEST:
            raise ValueError("request too large")
        payload = first[_HEADER.size :]
        while len(payload) < size:
            chunk = conn.recv(size - len(payload))
            if not chunk:
                raise ValueError("truncated request")
            payload += chunk
        request = json.loads(payload)
        job = Job(argv=list(request["argv"]), cwd=str(request["cwd"]), env=dict(request["env"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"warm starter: rejected a request: {e}", file=sys.stderr, flush=True)
        for fd in fds:
            os.close(fd)
        return None, []
    conn.settimeout(None)
    return job, fds


def _become_child(fds: list[int]) -> None:
    """In the forked child: the launcher's stdio, a session of its own, default signals."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    os.setsid()  # its own session, so its own autogroup: niceness stays per flow run
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)


def _reap(running: dict[int, socket.socket], selector: selectors.BaseSelector) -> None:
    while running:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = running.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
        print(f"warm starter: run {pid} exited {code} after {cpu:.2f} CPU s", flush=True)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(conn)
        _send(conn, f"exit {code}\n")
        conn.close()


def _send(conn: socket.socket, line: str) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(line.encode())


def _kill(pid: int, signum: int) -> None:
    """Signal a flow run and everything it started (its process group)."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):  # not yet a group of its own
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def run_job(job: Job) -> NoReturn:
    """In the child: become the engine process the worker asked for, then exit as it would."""
    import runpy

    os.chdir(job.cwd)
    before = _settings_environment()
    os.environ.clear()
    os.environ.update(job.env)
    if _settings_environment() != before:
        # What was read from the warm starter's environment is read again from the job's
        # (only when it differs: rebuilding Prefect's settings and logging is costly).
        from prefect.context import refresh_global_settings_context
        from prefect.logging.configuration import setup_logging

        refresh_global_settings_context()
        setup_logging()
    from docpipe.config import get_settings

    get_settings.cache_clear()
    sys.argv = [ENGINE, *job.argv]
    # Imported ahead on purpose (that is the warm start): runpy's warning says only that.
    warnings.filterwarnings(
        "ignore", f"'{ENGINE}' found in sys.modules", RuntimeWarning, module="runpy"
    )
    known = set(sys.modules)
    code: object = 0
    try:
        runpy.run_module(ENGINE, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    finally:
        if debug := os.environ.get("DOCPIPE_WARM_DEBUG_MODULES"):
            with Path(debug).open("a") as f:
                f.write("\n".join(sorted(set(sys.modules) - known)) + "\n")
    _exit(code)


def _exit(code: object) -> NoReturn:
    """Exit as Python would (threads joined, atexit handlers run: Prefect sends what it has
    queued), without tearing down every module the warm starter imported: that costs a
    short run more CPU than its work."""
    import atexit
    import threading

    # What the interpreter does first at exit: threading's own exit hooks (which stop
    # thread pools' idle threads, the OCR slots' among them), then every thread joined.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # as Python does for sys.exit("message")
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _settings_environment() -> dict[str, str]:
    """The variables Prefect's and docpipe's settings are read from (not per-run ones)."""
    return {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("PREFECT_", "DOCPIPE_")) and not k.startswith("PREFECT__")
    }


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        path = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(os.environ[SOCKET_ENV])
        job = serve(path)
        if job is None:
            return
        run_job(job)  # never returns: the child exits with the engine's status
    sys.exit(launch(sys.argv[1:]))


if __name__ == "__main__":
    main()
