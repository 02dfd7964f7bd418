"""One settings object for the API, the worker, the flows and the CLI."""

from __future__ import annotations

import os
import posixpath
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

MIB = 1024 * 1024


class Settings(BaseSettings):
    """docpipe's configuration: environment variables `DOCPIPE_*`, or a `.env` file."""

    model_config = SettingsConfigDict(
        env_prefix="DOCPIPE_", env_file=".env", extra="ignore", populate_by_name=True
    )

    home: Path = Field(Path("var"), description="Where every piece of local state lives.")
    database_url: str = Field("", description="SQLAlchemy URL; default SQLite under home.")
    storage_url: str = Field("", description="fsspec URL for documents; default home/blobs.")
    # An S3-compatible store's endpoint (unset: AWS), region and credentials (unset: the
    # usual AWS_* variables and files). They apply to the inbox too when it is on S3.
    storage_endpoint_url: str = ""
    storage_region: str = ""
    storage_key_id: str = ""
    storage_secret: SecretStr | None = None
    # Anything else for the fsspec backend, as JSON (`{"config_kwargs": {...}}`); the named
    # settings above win. Hidden from reprs: it may hold credentials too.
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)

    # Bind addresses: 0.0.0.0 (or a machine's address) serves other machines too; then
    # the Prefect server needs DOCPIPE_PREFECT_AUTH_STRING (docs/operations.md).
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    prefect_host: str = "127.0.0.1"
    prefect_port: int = 4200
    # Where this machine's workers, API and CLI reach Prefect: another machine's server.
    prefect_api_url: str = Field("", description="Default http://prefect_host:prefect_port/api.")
    # The Prefect server's API secret. Unset, the first start generates one into home
    # (docpipe/home.py); Prefect's own variable is honoured, as operators know it.
    prefect_auth_string: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "DOCPIPE_PREFECT_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING", "prefect_auth_string"
        ),
    )

    # GET /metrics answers only `Authorization: Bearer <token>` when this is set; unset, it
    # is open like /health (it holds counts by tier and status, never a tenant's name).
    metrics_token: SecretStr | None = None

    max_file_bytes: int = 25 * MIB
    max_batch_documents: int = 100
    max_pdf_pages: int = 100
    # Pixels of one page (a PDF page's at ocr_dpi), and of all a document's pages: about
    # 115 A4 pages at 300 dpi. What a document costs is bounded before any is spent.
    max_image_pixels: int = 100_000_000
    # A PDF page's drawing instructions, decompressed (its contents and the forms it
    # draws): a few kilobytes on a scan, far more only on a detailed map or plan. An
    # 800 KB file whose page strokes 30 million lines drove PDFium past 5 GB.
    max_pdf_page_content_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_document_pixels: int = 1_000_000_000
    # Per tenant (0: no limit): batches started a minute, batches Queued or Processing,
    # and pages not yet finished. Past one, an upload is answered 429 and nothing stored.
    tenant_uploads_per_minute: int = 60
    tenant_open_batches: int = 50
    tenant_pages_in_flight: int = 5000
    # Uploads of one tenant being received at once (of max_concurrent_uploads in all).
    tenant_concurrent_uploads: int = 2
    # Uploads being received at once, and the bytes they may hold between them (each
    # counted at its Content-Length); past either, an upload is answered 503 at once.
    max_concurrent_uploads: int = 4
    max_staged_bytes: int = 8 * 1024 * MIB
    # A request head not complete this long after its connection opened, a body whose
    # next bytes take longer than the idle timeout, or one arriving slower than the
    # minimum rate over any stretch of the idle timeout's length, is answered 408 and its
    # connection closed: an upload's place is not held by a trickle of bytes.
    request_head_timeout_seconds: float = 10.0
    request_idle_timeout_seconds: float = 30.0
    request_min_bytes_per_second: int = Field(10_000, ge=0)

    # Tesseract's languages for tenants that have none of their own (`deu+eng`), and at
    # most how many one upload may ask for: each one adds to every page's cost.
    ocr_language: str = "eng"
    ocr_max_languages: int = 3
    # Which Tesseract reads pages: `api`, its library in long-lived child processes that
    # load the models once (tesserocr); `cli`, the `tesseract` program, one process a
    # page (pytesseract); `auto`, the API where tesserocr is installed.
    ocr_engine: str = "auto"
    # The outputs made for tenants that have none of their own: text and any of pdf,
    # hocr, words (all from the same Tesseract pass).
    ocr_outputs: str = "text,pdf"
    # Turn pages upright, and straighten tilted ones; each costs a second pass, and
    # only on the pages that need it.
    ocr_orient: bool = True
    ocr_deskew: bool = True
    # Make the searchable PDF a PDF/A-2b (through Ghostscript), for archives that ask for it.
    pdfa: bool = False
    ocr_dpi: int = 300
    ocr_page_timeout_seconds: float = 120.0
    # All of one document's pages together: a hostile 100-page PDF of pages that each
    # take nearly the page timeout would otherwise hold a slot for hours.
    ocr_document_timeout_seconds: float = Field(1800.0, gt=0, allow_inf_nan=False)
    # A flow run's OCR slots: pages read at once, whichever documents they are from (one
    # long PDF uses all of them). See also documents_in_flight.
    ocr_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1)
    # Standard batches' Tesseract processes run at this niceness, VIP ones at 0, so a
    # VIP batch gets the CPU even when standard batches already fill every core.
    standard_niceness: int = 10

    # Recovery: a Processing batch whose run has not beaten for stale_after_seconds is
    # taken for dead and resubmitted, at most max_submissions times in all.
    heartbeat_seconds: float = 10.0
    stale_after_seconds: float = 90.0
    max_submissions: int = 3
    # The API runs a recovery pass at its start and then every recovery_interval_seconds
    # (0: never); the recover-batches deployment runs one on its own schedule too, for
    # when no API is running, and on demand from the Prefect UI.
    recovery_interval_seconds: float = 60.0
    recovery_schedule_seconds: float = 900.0
    # Stored files with no batch row, and staging left by a killed upload, are removed
    # once this old: younger ones may belong to an upload still in progress.
    orphan_grace_seconds: float = 300.0
    # Looking for them lists every stored file, so the API's frequent pass does it at its
    # first pass and then at most this often (0: every pass). `docpipe recover` and the
    # recover-batches deployment always do.
    orphan_sweep_seconds: float = 3600.0

    # Retention (0: keep for ever): a batch Completed, Cancelled or Failed more than
    # retention_days ago is deleted with its files, flow runs and artifacts; any ended flow
    # run of the work pool, prefect_retention_days after it ended (unset: retention_days).
    # The expire-history deployment runs a pass every retention_schedule_seconds.
    retention_days: float = Field(0, ge=0, le=36500, allow_inf_nan=False)
    prefect_retention_days: float | None = Field(None, ge=0, le=36500, allow_inf_nan=False)
    retention_schedule_seconds: float = Field(86400.0, ge=0, allow_inf_nan=False)

    # Completion webhooks: an attempt's whole time, and how many attempts a batch's end
    # gets, the n-th retry webhook_backoff_seconds * 2**(n-1) after the one before (at
    # most an hour). The API looks for due deliveries every webhook_poll_seconds (0:
    # never; the flow run's first attempt and the recovery passes still send).
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=300, allow_inf_nan=False)
    webhook_max_attempts: int = Field(8, ge=1, le=50)
    webhook_backoff_seconds: float = Field(10.0, ge=0, le=3600, allow_inf_nan=False)
    webhook_poll_seconds: float = Field(2.0, ge=0, allow_inf_nan=False)
    # Webhooks to loopback, private, link-local and other non-public addresses: refused
    # unless this is true (tests, receivers on the same network on premises).
    webhook_allow_private: bool = False
    # Encrypts the tenants' webhook secrets in the database. Unset, the first use
    # generates one into home (docpipe/home.py); machines sharing a database need the same.
    webhook_key: SecretStr | None = None

    inbox: Path = Field(Path(), description="Watched folder; default home/inbox.")
    # Where a folder batch's results go when it completes: <outbox>/<tenant>/.
    outbox: Path = Field(Path(), description="Results of folder batches; default home/outbox.")
    # The inbox on an object store shared by every machine (`s3://bucket/inbox/`, with the
    # storage settings' credentials), in place of the folder above; its results go to
    # outbox_url (default: `outbox` beside the inbox).
    inbox_url: str = ""
    outbox_url: str = ""
    inbox_settle_seconds: float = 5.0
    ingest_interval_seconds: float = 60.0

    # One batch over many workers (docpipe/parts.py): a batch of more pages than this (a
    # document not read yet counts as one) is shared by its own flow run and helper runs
    # that any worker of the pool takes, split_max_runs in all at most. 0: never shared;
    # on one machine, sharing buys nothing.
    split_pages: int = Field(0, ge=0)
    split_max_runs: int = Field(8, ge=2, le=100)

    work_pool: str = "docpipe"
    worker_limit: int = 4
    # Batches handed to Prefect and not yet finished, per tier (0: worker_limit; with
    # workers on several machines, their limits added up). Standard batches leave
    # vip_reserved_slots of them free, so a VIP batch never waits for a slot.
    dispatch_slots: int = 0
    vip_reserved_slots: int = 1
    # The worker starts a run as soon as the server's events say it was scheduled; its
    # poll of the pool is the fallback for a missed event (PREFECT_WORKER_QUERY_SECONDS).
    worker_poll_seconds: float = 10.0
    submit_timeout_seconds: float = 10.0
    # Prefect's automations and its event feed (the UI's Events page) need the server to
    # evaluate and store every event; docpipe uses neither, and they cost the server
    # much of its CPU per document (docs/performance.md). True turns both on.
    prefect_automations: bool = False

    @field_validator("database_url")
    @classmethod
    def _a_database_url(cls, url: str) -> str:
        """Refused here, in a line, rather than as the engine's traceback later."""
        if url:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(url)
            except (ArgumentError, ValueError):
                raise ValueError(
                    "not a database URL, e.g. postgresql+psycopg://user@host/db"
                ) from None
        return url

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'docpipe.db'}"
        if not self.storage_url:
            self.storage_url = str(self.home / "blobs")
        if self.inbox == Path():
            self.inbox = self.home / "inbox"
        if self.outbox == Path():
            self.outbox = self.home / "outbox"
        self.outbox = self.outbox.expanduser().resolve()
        if self.inbox_url and "://" not in self.inbox_url.removeprefix("file://"):
            self.inbox = Path(self.inbox_url.removeprefix("file://"))  # a local folder after all
            self.inbox_url = ""
        self.inbox = self.inbox.expanduser().resolve()
        if self.inbox_url and not self.outbox_url:
            protocol, path = self.inbox_url.split("://", 1)
            parent = posixpath.dirname(path.rstrip("/"))
            if not parent:
                raise ValueError("DOCPIPE_INBOX_URL is a bucket's root: set DOCPIPE_OUTBOX_URL")
            self.outbox_url = f"{protocol}://{parent}/outbox"
        if self.prefect_retention_days is None:
            self.prefect_retention_days = self.retention_days
        if not self.prefect_api_url:
            self.prefect_api_url = f"http://{_reachable(self.prefect_host)}:{self.prefect_port}/api"
        return self

    def store_options(self, url: str) -> dict[str, Any]:
        """What fsspec's backend for url is opened with: the storage settings, for S3."""
        options = dict(self.storage_options)
        if url.split("://", 1)[0] not in ("s3", "s3a"):
            return options
        named = {
            "endpoint_url": self.storage_endpoint_url,
            "key": self.storage_key_id,
            "secret": self.storage_secret.get_secret_value() if self.storage_secret else "",
        }
        options |= {name: value for name, value in named.items() if value}
        if self.storage_region:
            client = dict(options.get("client_kwargs") or {})
            options["client_kwargs"] = client | {"region_name": self.storage_region}
        return options

    @property
    def documents_in_flight(self) -> int:
        """A flow run's documents in hand at once: one more than its OCR slots, so the
        next is checked and decoded while the slots read, and no slot waits for a page."""
        return self.ocr_concurrency + 1

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def api_url(self) -> str:
        return f"http://{_reachable(self.api_host)}:{self.api_port}"


def _reachable(host: str) -> str:
    """The address this machine reaches a server bound to `host` at, as a URL's host: a
    wildcard is no address to connect to."""
    return url_host({"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host))


def url_host(host: str) -> str:
    """A host as a URL holds it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def settings_problem(error: ValidationError | SettingsError) -> str:
    """What is wrong with the settings, in a line: the variable, never its value (a value
    may be a secret)."""
    if isinstance(error, ValidationError):
        return "; ".join(
            # A check of several settings together names them in its message instead.
            f"DOCPIPE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in error.errors()
        )
    found = re.search(r'field "(\w+)"', str(error))
    return f"DOCPIPE_{found.group(1).upper() if found else '...'}: not valid JSON"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once; tests clear the cache to change them."""
    return Settings()
