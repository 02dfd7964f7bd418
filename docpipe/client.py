"""A Python client of docpipe's HTTP API (what `docpipe upload` and its siblings use).

    from docpipe.client import Client

    batch = Client().upload(["scans/"], wait=True)   # the API's batch JSON, once it ended

It speaks HTTP only: it imports nothing of the server, so it runs wherever httpx does.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from dotenv import dotenv_values

DEFAULT_API_PORT = 8000
# Batch statuses after which nothing changes by itself.
FINAL_STATUSES = frozenset({"Completed", "Failed", "Cancelled"})
# Names a directory's files must end with to be sent; a file named outright is always sent.
DOCUMENT_SUFFIXES = frozenset({".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff"})
# The longest wait the API grants one request (GET /api/batches/{id}?waitSeconds=).
LONGEST_WAIT_SECONDS = 60

JSON = dict[str, Any]

# What the commands read of each answer: a service that is not docpipe's API (or is too old
# to have them) is told as such, not met as a missing key.
_BATCH = (
    "id", "status", "totalDocuments", "completedDocuments", "successCount", "failureCount",
    "cancelledCount", "documents",
)  # fmt: skip
_DOCUMENT_ROW = ("id", "fileName", "status")
_BATCH_ROW = ("id", "status", "createdAt", "successCount", "failureCount", "totalDocuments")
# The type each output is served as; the original keeps its own, with a file name.
_OUTPUT_TYPES = {
    "text": "text/plain",
    "pdf": "application/pdf",
    "hocr": "text/html",
    "words": "application/json",
}


class ClientError(Exception):
    """A request docpipe refused, or one that never reached it; the message is one line."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InvalidFiles(ClientError):
    """Files an upload may not hold, found before sending or named by the API."""

    def __init__(self, message: str, invalid_files: list[tuple[str, str]]) -> None:
        super().__init__(message, status=400)
        self.invalid_files = invalid_files


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int
    max_batch_documents: int


def setting(name: str) -> str | None:
    """An environment variable, else its line in the `.env` file of the folder the command
    runs in, as the server's own settings are read (docpipe.config)."""
    if value := os.environ.get(name):
        return value
    try:
        return dotenv_values(".env").get(name) or None
    except (OSError, UnicodeError):  # a .env it may not read is one it was not given
        return None


def default_api_url() -> str:
    """This machine's API, on the port `make up` gives it (DOCPIPE_API_PORT, else 8000)."""
    port = (setting("DOCPIPE_API_PORT") or "").strip()
    return f"http://127.0.0.1:{port if port.isdecimal() else DEFAULT_API_PORT}"


def config_path() -> Path:
    """Where `docpipe login` keeps the API's URL and key: owner-only."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "docpipe" / "client.json"


def read_config() -> JSON:
    try:
        config = json.loads(config_path().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ClientError(f"{config_path()} could not be read: {e}") from e
    return config if isinstance(config, dict) else {}


def write_config(api_url: str, api_key: str) -> Path:
    """Save the URL and key for later commands, readable by this user alone."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file that was already there keeps its mode otherwise
    with os.fdopen(descriptor, "w") as file:
        json.dump({"apiUrl": api_url, "apiKey": api_key}, file)
    return path


def document_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files an upload sends: each file named, and each directory's documents (by their
    suffix, hidden ones left out, links to directories not followed), in name order."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            found.append(path)
            continue
        for folder, folders, names in os.walk(path):
            # Pruned and ordered in place: the walk goes on into what is left, in this order.
            folders[:] = sorted(f for f in folders if not f.startswith("."))
            found += [
                Path(folder) / name
                for name in sorted(names)
                if not name.startswith(".") and Path(name).suffix.lower() in DOCUMENT_SUFFIXES
            ]
    return found


def check_files(files: list[Path], limits: Limits) -> None:
    """Raise InvalidFiles naming every file the API would refuse for its size or absence."""
    if not files:
        raise InvalidFiles("no documents to upload", [])
    if len(files) > limits.max_batch_documents:
        raise InvalidFiles(
            f"{len(files)} files; one batch holds at most {limits.max_batch_documents}", []
        )
    invalid: list[tuple[str, str]] = []
    for file in files:
        try:
            size = file.stat().st_size
        except OSError as e:
            invalid.append((str(file), e.strerror or "cannot be read"))
            continue
        if not file.is_file():
            invalid.append((str(file), "not a file"))
        elif size == 0:
            invalid.append((str(file), "file is empty"))
        elif size > limits.max_file_bytes:
            invalid.append(
                (str(file), f"{size} bytes; the limit is {limits.max_file_bytes} bytes a file")
            )
    if invalid:
        count = "1 file" if len(invalid) == 1 else f"{len(invalid)} files"
        raise InvalidFiles(f"{count} cannot be sent; nothing was sent", invalid)


# What an API key may hold, and what an HTTP header can carry as it is.
_API_KEY_CHARACTERS = re.compile(r"[!-~]+")


class Client:
    """docpipe's API for one key. URL and key: the arguments, else DOCPIPE_API_URL and
    DOCPIPE_API_KEY (the environment, else `.env`), else the file `docpipe login` wrote
    (else this machine's API, on DOCPIPE_API_PORT). Answers are the API's JSON."""

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        tenant: str | None = None,
        timeout: float = 60,
    ) -> None:
        api_url = api_url or setting("DOCPIPE_API_URL")
        api_key = api_key or setting("DOCPIPE_API_KEY")
        # The file is read only for what the arguments and the environment left out.
        config = {} if api_url and api_key else read_config()
        self.api_url = (api_url or config.get("apiUrl") or default_api_url()).rstrip("/")
        key = api_key or config.get("apiKey")
        if not key:
            raise ClientError(
                "no API key: pass --api-key, set DOCPIPE_API_KEY, or run `docpipe login`"
            )
        if not _API_KEY_CHARACTERS.fullmatch(key):
            # Said before it is sent, and never echoed: an error naming it would show it.
            raise ClientError(
                "the API key has characters an API key cannot have (it is printable ASCII, "
                "with no spaces)"
            )
        self.tenant = tenant
        self._http = httpx.Client(
            base_url=self.api_url,
            headers={"X-API-Key": key},
            # Waiting requests last up to a minute on the server's side.
            timeout=httpx.Timeout(timeout, read=timeout + LONGEST_WAIT_SECONDS),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def limits(self) -> Limits:
        body = self._json("GET", "/api/limits", fields=("maxFileBytes", "maxBatchDocuments"))
        return Limits(body["maxFileBytes"], body["maxBatchDocuments"])

    def upload(
        self,
        paths: Iterable[str | Path],
        *,
        language: str | None = None,
        wait: bool = False,
        on_sent: Callable[[int, int], None] | None = None,
        on_progress: Callable[[JSON], None] | None = None,
    ) -> JSON:
        """Upload files and directories' documents as one batch, checked against the limits
        first. The API's answer ({batchId, documentIds, ...}), or with `wait` the batch once it
        has ended. on_sent(bytes sent, bytes in all) follows the upload; on_progress, the wait."""
        files = document_files(paths)
        check_files(files, self.limits())
        with ExitStack() as stack:
            parts = [("files", (file.name, stack.enter_context(file.open("rb")))) for file in files]
            request = self._http.build_request(
                "POST",
                "/api/documents/bulk-upload",
                params=self._params(language=language),
                files=parts,
            )
            if on_sent is not None:
                total = int(request.headers.get("Content-Length", 0))
                request.stream = _CountedStream(request.stream, total, on_sent)  # type: ignore[arg-type]
            accepted = self._shaped(self._answer(self._send(request)), ("batchId", "documentIds"))
        return self.wait(accepted["batchId"], on_progress=on_progress) if wait else accepted

    def batch(self, batch_id: str, *, wait_seconds: float = 0) -> JSON:
        params = {"waitSeconds": wait_seconds} if wait_seconds else None
        return self._batch("GET", f"/api/batches/{_segment(batch_id)}", params=params)

    def wait(
        self,
        batch_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[JSON], None] | None = None,
    ) -> JSON:
        """The batch once it has ended (or as it is after `timeout` seconds). With on_progress,
        asks each second to report each change; without, the API answers at the end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = LONGEST_WAIT_SECONDS if deadline is None else deadline - time.monotonic()
            wait = min(left, 1 if on_progress else LONGEST_WAIT_SECONDS)
            batch = self.batch(batch_id, wait_seconds=max(wait, 0))
            if on_progress is not None:
                on_progress(batch)
            if batch["status"] in FINAL_STATUSES or left <= 0:
                return batch

    def batches(self, *, limit: int = 20, offset: int = 0) -> JSON:
        """A page of the tenant's batches, newest first: {items, total, limit, offset}."""
        page = self._json(
            "GET",
            "/api/batches",
            params=self._params(limit=limit, offset=offset),
            fields=("items", "total"),
        )
        for item in page["items"]:
            self._shaped(item, _BATCH_ROW)
        return page

    def document(self, document_id: str) -> JSON:
        return self._json("GET", f"/api/documents/{_segment(document_id)}", fields=_DOCUMENT_ROW)

    def output(self, document_id: str, output: str) -> bytes:
        """A document's text, pdf, hocr, words (JSON) or original, as bytes."""
        response = self._request("GET", f"/api/documents/{_segment(document_id)}/{output}")
        served = response.headers.get("Content-Type", "").split(";")[0].strip()
        expected = _OUTPUT_TYPES.get(output)
        words_without_pages = output == "words" and b'"pages"' not in response.content
        wrong_type = (
            served != expected if expected else "Content-Disposition" not in response.headers
        )
        if wrong_type or words_without_pages:
            raise ClientError(
                f"{self.api_url} answered {served or 'no type'} for a document's {output}; "
                "is it docpipe's API?"
            )
        return response.content

    def text(self, document_id: str) -> str:
        """A Ready document's text, pages separated by a form feed."""
        return self.output(document_id, "text").decode()

    def cancel(self, batch_id: str) -> JSON:
        return self._batch("POST", f"/api/batches/{_segment(batch_id)}/cancel")

    def retry(self, batch_id: str, *, include_invalid: bool = False) -> JSON:
        params = {"includeInvalid": "true"} if include_invalid else None
        return self._batch("POST", f"/api/batches/{_segment(batch_id)}/retry", params=params)

    def _params(self, **values: Any) -> dict[str, Any]:
        tenant = {"tenantId": self.tenant} if self.tenant else {}
        return tenant | {k: v for k, v in values.items() if v is not None}

    def _json(self, method: str, path: str, *, fields: tuple[str, ...], **kwargs: Any) -> JSON:
        return self._shaped(self._answer(self._request(method, path, **kwargs)), fields)

    def _batch(self, method: str, path: str, **kwargs: Any) -> JSON:
        batch = self._json(method, path, fields=_BATCH, **kwargs)
        for document in batch["documents"]:
            self._shaped(document, _DOCUMENT_ROW)
        return batch

    def _shaped(self, body: Any, fields: tuple[str, ...]) -> JSON:
        """The answer, if it has these fields; else ClientError: not docpipe's API."""
        missing = [f for f in fields if f not in body] if isinstance(body, dict) else fields
        if missing:
            raise ClientError(
                f"{self.api_url} answered without {', '.join(missing)}; is it docpipe's API?"
            )
        return body  # type: ignore[no-any-return]

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            request = self._http.build_request(method, path, **kwargs)
        except (httpx.InvalidURL, UnicodeEncodeError, ValueError) as e:
            # An id too long for a URL, a key that is not ASCII: the request cannot be made.
            raise ClientError(f"cannot make that request: {_reason(e)}") from e
        response = self._send(request)
        self._answer(response, parse=False)
        return response

    def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._http.send(request)
        except httpx.TimeoutException as e:
            raise ClientError(f"{self.api_url} did not answer in time") from e
        except httpx.HTTPError as e:
            raise ClientError(f"cannot reach docpipe at {self.api_url}: {_reason(e)}") from e

    def _answer(self, response: httpx.Response, *, parse: bool = True) -> JSON:
        """The answer's JSON, or the API's error raised as ClientError."""
        if response.is_success:
            if not parse:
                return {}
            try:
                return response.json()  # type: ignore[no-any-return]
            except ValueError:
                raise ClientError(
                    f"{self.api_url} answered {response.status_code} without JSON; "
                    "is it docpipe's API?"
                ) from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        error = body.get("error") if isinstance(body, dict) else None
        if error is None:
            error = f"{self.api_url} answered {response.status_code}; is it docpipe's API?"
        if response.status_code in (429, 503) and "Retry-After" in response.headers:
            error += f" (try again in {response.headers['Retry-After']} s)"
        if invalid := (body.get("invalidFiles") if isinstance(body, dict) else None):
            raise InvalidFiles(error, [(f["fileName"], f["reason"]) for f in invalid])
        raise ClientError(error, status=response.status_code)


class _CountedStream(httpx.SyncByteStream):
    """A request body that reports how much of it has gone out."""

    def __init__(
        self, stream: Iterable[bytes], total: int, on_sent: Callable[[int, int], None]
    ) -> None:
        self.stream = stream
        self.total = total
        self.on_sent = on_sent

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self.stream:
            yield chunk
            sent += len(chunk)
            self.on_sent(sent, self.total)


def _segment(identifier: str) -> str:
    """An id as one path segment: `../x` or `a/b` never reaches another route."""
    return quote(identifier, safe="")


def _reason(error: Exception) -> str:
    """An error in a few words, on one line."""
    return " ".join(str(error).split())[:200] or type(error).__name__
