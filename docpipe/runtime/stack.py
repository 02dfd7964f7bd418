"""Run the whole service on one machine: Prefect server, pool and deployments, worker, API."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
from pydantic import SecretStr

from docpipe.config import Settings, url_host
from docpipe.db import upgrade_database
from docpipe.home import prefect_auth_headers, prefect_auth_string, prepare_home

log = logging.getLogger(__name__)
# Where this docpipe was imported from (a checkout, or site-packages): the services run
# there, so `python -m` finds the same code. Nothing deployed names it.
PROJECT_DIR = Path(__file__).resolve().parents[2]
STOP_SECONDS = 8.0
DEFAULT_WORKER_NAME = "docpipe-worker"


def service_env(settings: Settings) -> dict[str, str]:
    """The environment every process of the stack shares: one home, one Prefect API."""
    env = dict(os.environ)
    auth_string = prefect_auth_string(settings)
    env.update(
        {
            # `python` in a flow run's command is this environment's Python.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            # Every docpipe setting, so one given in code (a test's, the bench's) or read
            # from the operator's .env (the services run in the checkout) reaches the
            # processes as surely as one given in the environment; secrets as themselves.
            **{
                f"DOCPIPE_{name.upper()}": _as_variable(value)
                for name, value in settings
                if value is not None
            },
            "PREFECT_HOME": str(settings.prefect_home),
            "PREFECT_API_URL": settings.prefect_api_url,
            "PREFECT_SERVER_API_HOST": settings.prefect_host,
            "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
            # The server refuses every API request without the secret, the workers and
            # flow runs send it, and no web page but the Prefect UI's own may call it.
            "PREFECT_SERVER_API_AUTH_STRING": auth_string,
            "PREFECT_API_AUTH_STRING": auth_string,
            "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": ",".join(ui_origins(settings)),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "OMP_THREAD_LIMIT": "1",
            # The worker is woken by the server's events when a run is scheduled on its
            # pool (docpipe/runtime/worker.py); its poll is only the fallback.
            "PREFECT_WORKER_QUERY_SECONDS": str(settings.worker_poll_seconds),
            # A run cancelled while its process starts would stay Cancelling for minutes,
            # its engine refusing to run it and nothing ending it: the worker ends it.
            "PREFECT_WORKER_ENABLE_CANCELLATION": "true",
            # The server records task-run states one event per database write by default;
            # writing what arrived each second costs it far less CPU per batch.
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
            # The server's housekeeping loops, from every 5-20 s to every 30-60 s: docpipe
            # never pauses a flow run, and a run shown Late, a new deployment's schedule,
            # an offline worker or an expired lease can wait that long.
            "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS": "60",
            "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": "30",
            "PREFECT_SERVER_SERVICES_CLEANUP_RECONCILER_LOOP_SECONDS": "30",
            "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "30",
            "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "60",
            "PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS": "60",
            "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS": "60",
            # Logs go to files: no highlighting to compute for each line.
            "PREFECT_LOGGING_COLORS": "false",
        }
    )
    if not settings.prefect_automations:
        # Every event a run sends is parsed, evaluated and stored by each of these
        # services, which docpipe does not use. A setting in the environment still wins.
        for service in ("EVENT_PERSISTER", "TRIGGERS"):
            env.setdefault(f"PREFECT_SERVER_SERVICES_{service}_ENABLED", "false")
    if settings.prefect_api_url.startswith("http://"):
        # Plain HTTP has no certificates to check, but every Prefect client still parses
        # a whole CA bundle, and a flow run makes about ten clients. One CA is as good as
        # all of them when none is ever asked for.
        env["PREFECT_API_SSL_CERT_FILE"] = str(_one_ca_file(settings.home))
    return env


def _as_variable(value: Any) -> str:
    """A setting's value as an environment variable holds it: a secret never as '****'."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return json.dumps(value) if isinstance(value, dict) else str(value)


def is_loopback(host: str) -> bool:
    """Whether a bind address is this machine's alone (a name other than localhost is not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_server_auth(settings: Settings) -> None:
    """Refuse to serve Prefect beyond loopback with a secret generated into this home: the
    other machines' workers and APIs must be given it, so the operator sets it."""
    if not is_loopback(settings.prefect_host) and settings.prefect_auth_string is None:
        raise RuntimeError(
            f"DOCPIPE_PREFECT_HOST={settings.prefect_host} serves Prefect beyond this machine: "
            "set its secret in DOCPIPE_PREFECT_AUTH_STRING (user:password) first"
        )


def check_existing_server(settings: Settings) -> None:
    """That the Prefect server at prefect_api_url answers, and accepts this home's secret."""
    url = settings.prefect_api_url
    try:
        httpx.get(f"{url}/health", timeout=5).raise_for_status()
        answer = httpx.get(
            f"{url}/admin/version", headers=prefect_auth_headers(settings), timeout=5
        )
    except httpx.InvalidURL as e:
        raise RuntimeError(f"DOCPIPE_PREFECT_API_URL is not a URL: {url}") from e
    except httpx.HTTPError as e:
        raise RuntimeError(
            f"no Prefect server answers at {url} ({' '.join(str(e).split())}): start one, "
            "or point DOCPIPE_PREFECT_API_URL at it"
        ) from e
    if answer.status_code in (401, 403):
        raise RuntimeError(
            f"the Prefect server at {url} refused this home's secret: set "
            "DOCPIPE_PREFECT_AUTH_STRING to the one it was started with"
        )


def ui_origins(settings: Settings) -> list[str]:
    """The origins the Prefect UI is served from: the only ones allowed to call its API."""
    hosts = [settings.prefect_host]
    if settings.prefect_host in ("127.0.0.1", "localhost", "::1"):
        hosts = ["127.0.0.1", "localhost"]
    return [f"http://{url_host(host)}:{settings.prefect_port}" for host in hosts]


def _one_ca_file(home: Path) -> Path:
    """A CA file holding just the first certificate of certifi's bundle."""
    import certifi

    path = home / "run" / "one-ca.pem"
    if not path.exists():
        begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
        bundle = Path(certifi.where()).read_text()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(bundle[bundle.index(begin) : bundle.index(end)] + end + "\n")
        partial.replace(path)  # atomic: every process that races here writes the same
    return path


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_file: IO[bytes]


@dataclass
class Stack:
    """The processes `docpipe up` starts, and stops again together."""

    settings: Settings
    services: list[Service] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.settings.home / "logs"

    def start(self, *, server: bool = True, worker: bool = True, api: bool = True) -> None:
        """Start these roles; without `server`, pool and deployments go to the Prefect
        server at DOCPIPE_PREFECT_API_URL, which must answer and take this home's secret."""
        if server:
            check_server_auth(self.settings)
        prepare_home(self.settings)
        upgrade_database(self.settings.database_url)
        self.settings.prefect_home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            if server:
                self.start_server()
            else:
                check_existing_server(self.settings)
            self.deploy()
            if worker:
                self.start_warm_starter()
                self.start_worker()
            if api:
                self.start_api()  # which runs a recovery pass now, then every recovery_interval
        except BaseException:
            self.stop()
            raise

    def start_server(self) -> None:
        s = self.settings
        self._spawn(
            "prefect-server",
            [
                sys.executable,
                "-m",
                "docpipe.runtime.prefect_server",
                "--host",
                s.prefect_host,
                "--port",
                str(s.prefect_port),
            ],
        )
        self._wait_for("prefect-server", f"{s.prefect_api_url}/health", timeout=120)

    def deploy(self) -> None:
        log_path = self.log_dir / "deploy.log"
        with log_path.open("ab") as out:
            result = subprocess.run(
                [sys.executable, "-m", "deployments.deploy"],
                env=service_env(self.settings),
                cwd=PROJECT_DIR,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(f"creating the deployments failed; see {log_path}")

    def start_warm_starter(self, worker_name: str = DEFAULT_WORKER_NAME) -> None:
        """The process the worker's flow runs fork from, with Prefect and the flows imported."""
        from docpipe.runtime.warm import SOCKET_ENV, socket_path_for

        path = socket_path_for(self.settings.home, worker_name)
        path.unlink(missing_ok=True)
        service = self._spawn(
            "warm-starter",
            [sys.executable, "-m", "docpipe.runtime.warm", "serve"],
            env={SOCKET_ENV: str(path)},
            log_name=_log_name("warm-starter", worker_name),
        )
        deadline = time.monotonic() + 120
        while not path.exists():
            if service.process.poll() is not None:
                raise RuntimeError(f"warm starter exited; see {service.log_file.name}")
            if time.monotonic() > deadline:
                raise RuntimeError("warm starter did not start within 120 s")
            time.sleep(0.1)

    def start_worker(self, name: str = DEFAULT_WORKER_NAME) -> Service:
        """A worker; its flow runs start warm if its warm starter (same name) is running."""
        from docpipe.runtime.warm import SOCKET_ENV, socket_path_for

        socket = str(socket_path_for(self.settings.home, name))
        return self._spawn(
            "worker",
            worker_command(self.settings, name),
            env={SOCKET_ENV: socket},
            log_name=_log_name("worker", name),
        )

    def start_api(self) -> None:
        s = self.settings
        self._spawn("api", [sys.executable, "-m", "docpipe.api.serve"])
        self._wait_for("api", f"{s.api_url}/health", timeout=60)

    def stop_service(self, name: str) -> None:
        """Stop one service and everything it started (the others keep running)."""
        service = next(s for s in self.services if s.name == name)
        _terminate_tree([service])
        self.services.remove(service)

    def stop(self) -> None:
        """Stop every process started, with everything they started, within STOP_SECONDS."""
        _terminate_tree(list(reversed(self.services)))
        self.services.clear()

    def check_alive(self) -> str | None:
        """The name of a service that has exited, if any."""
        for service in self.services:
            if service.process.poll() is not None:
                return service.name
        return None

    def _spawn(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        log_name: str | None = None,
    ) -> Service:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = (self.log_dir / f"{log_name or name}.log").open("ab")
        process = subprocess.Popen(
            command,
            env={**service_env(self.settings), **(env or {})},
            cwd=PROJECT_DIR,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Own session: a terminal's Ctrl-C reaches `docpipe up` alone, which then
            # stops the services in order.
            start_new_session=True,
        )
        service = Service(name, process, log_file)
        self.services.append(service)
        return service

    def _wait_for(self, name: str, url: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        service = next(s for s in self.services if s.name == name)
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.log_dir / (name + '.log')}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{name} did not answer at {url} within {timeout:g} s")


def process_trees(pids: Iterable[int]) -> list[psutil.Process]:
    """These processes and all their descendants (flow runs, Tesseract); ones that are gone
    are left out."""
    procs: list[psutil.Process] = []
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            procs.extend([parent, *parent.children(recursive=True)])
        except psutil.NoSuchProcess:
            continue
    return procs


def _terminate_tree(services: list[Service]) -> None:
    """SIGTERM the services and all their descendants; SIGKILL what is left after a while."""
    procs = process_trees(s.process.pid for s in services)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=STOP_SECONDS - 2)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=2)
    for service in services:
        service.process.poll()
        service.log_file.close()


def _log_name(service: str, worker_name: str) -> str:
    """`worker` and `warm-starter` for `make up`'s worker; a worker started with another
    name (`docpipe worker --name`) on the same home logs to files of its own."""
    return service if worker_name == DEFAULT_WORKER_NAME else f"{service}-{worker_name}"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_command(settings: Settings, name: str) -> list[str]:
    """docpipe's worker for the pool (docpipe/runtime/worker.py), as `make up` and `docpipe worker`
    run it: Prefect's process worker, woken by the server's events as well as polling."""
    return [
        sys.executable, "-m", "docpipe.runtime.worker", "--pool", settings.work_pool,
        "--name", name, "--limit", str(settings.worker_limit),
    ]  # fmt: skip


def _bin(name: str) -> str:
    """A console script of this environment, whatever PATH says."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name
