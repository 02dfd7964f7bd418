"""`docpipe upload`, `status`, `text` ...: a tenant's commands, through docpipe.client.

Exit status: 0 when every document succeeded (or nothing was asked to finish), 1 when a
batch ended with documents that did not, 2 for a usage, key, not-found or connection error,
told in one line.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Column, Table
from rich.text import Text

from docpipe.client import (
    FINAL_STATUSES,
    Client,
    ClientError,
    InvalidFiles,
    default_api_url,
    document_files,
    write_config,
)

app = typer.Typer()
USAGE_ERROR = 2
INTERRUPTED = 130  # as a shell reports Ctrl-C
# Ids are shown whole, to be copied into the next command.
ID_WIDTH = 36

ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        metavar="URL",
        help="The API; default DOCPIPE_API_URL, else `docpipe login`'s, else "
        "http://127.0.0.1 on DOCPIPE_API_PORT (8000).",
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        metavar="KEY",
        help="The tenant's API key; default DOCPIPE_API_KEY, else `docpipe login`'s.",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", metavar="", help="Print the API's JSON.")]
BatchId = Annotated[str, typer.Argument(metavar="BATCH", help="The batch's id.")]
DocumentId = Annotated[str, typer.Argument(metavar="DOC", help="The document's id.")]
OutputFile = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", metavar="FILE", help="Write it to this file instead of standard output."
    ),
]


@contextmanager
def _client(
    api_url: str | None, api_key: str | None, tenant: str | None = None
) -> Iterator[Client]:
    """A client; any error of the API's or the network's ends the command with one line."""
    try:
        with Client(api_url, api_key, tenant=tenant) as client:
            yield client
    except InvalidFiles as e:
        for name, reason in e.invalid_files:
            typer.echo(f"{_one_line(name)}: {_one_line(reason)}", err=True)
        raise typer.Exit(_fail(str(e))) from None
    except ClientError as e:
        raise typer.Exit(_fail(str(e))) from None
    except (OSError, ValueError, TypeError, AttributeError) as e:
        # A file name the system refuses, a saved login file of the wrong shape: one line.
        raise typer.Exit(_fail(_one_line(f"{type(e).__name__}: {e}"))) from None
    except KeyboardInterrupt:
        # Not 1, which says documents failed; a batch already accepted goes on.
        typer.echo("interrupted: a batch already sent goes on (docpipe status BATCH)", err=True)
        raise typer.Exit(INTERRUPTED) from None


@app.command("upload", short_help="Upload files as one batch [--wait for it].")
def upload_documents(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILES",
            help="Documents, and directories whose PDF, PNG, JPEG and TIFF files (by name, "
            "in every subdirectory) are sent.",
        ),
    ],
    tenant: Annotated[
        str | None,
        typer.Option(metavar="ID", help="The tenant; default the API key's.", show_default=False),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", metavar="", help="Wait for the batch to end; show its failures."),
    ] = False,
    language: Annotated[
        str | None,
        typer.Option(
            metavar="L", help="Tesseract's languages, e.g. deu+eng; default the tenant's."
        ),
    ] = None,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Upload files as one batch and print its id; files over the limits are named, and
    nothing sent. With --wait, exit 1 if any document did not succeed.

    Example: docpipe upload scans/ invoice.pdf --wait
    """
    with _client(api_url, api_key, tenant) as client:
        paths = document_files(files)
        with _bar(BYTES, hidden=as_json) as progress:
            sending = progress.add_task("sending", total=None)

            def sent(done: int, total: int) -> None:
                progress.update(sending, completed=done, total=total)

            accepted = client.upload(paths, language=language, on_sent=sent)
        if not as_json:
            _err.print(f"batch {accepted['batchId']}: {len(accepted['documentIds'])} documents")
        if not wait:
            if as_json:
                _print_json(accepted)
            else:
                _out.print(accepted["batchId"], highlight=False)
            return
        with _bar(DOCUMENTS, hidden=as_json) as progress:
            batch = client.wait(accepted["batchId"], on_progress=_documents_bar(progress))
    # The API keeps a file's own name; the table names the file as it was found here, so
    # a/scan.png and b/scan.png stay apart.
    sent_as = dict(zip(accepted["documentIds"], map(str, paths), strict=False))
    raise typer.Exit(_report(batch, as_json, only_failed=True, names=sent_as))


@app.command("status", short_help="A batch's status [--watch it to the end].")
def show_status(
    batch_id: BatchId,
    watch: Annotated[
        bool, typer.Option("--watch", metavar="", help="Follow it until it ends.")
    ] = False,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """A batch's status and its documents'; exit 1 if it ended with any not succeeded.

    Example: docpipe status 3f2c9a6e-... --watch
    """
    with _client(api_url, api_key) as client, _bar(DOCUMENTS, hidden=as_json) as progress:
        batch = (
            client.wait(batch_id, on_progress=_documents_bar(progress))
            if watch
            else client.batch(batch_id)
        )
    raise typer.Exit(_report(batch, as_json, only_failed=False))


@app.command("batches", short_help="The tenant's batches, newest first.")
def show_batches(
    limit: Annotated[int, typer.Option(metavar="N", min=1, max=100, help="How many.")] = 20,
    offset: Annotated[
        int, typer.Option(metavar="N", min=0, help="How many newer ones to skip.")
    ] = 0,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """The tenant's batches, newest first.

    Example: docpipe batches --limit 5
    """
    with _client(api_url, api_key) as client:
        page = client.batches(limit=limit, offset=offset)
    if as_json:
        _print_json(page)
        return
    table = Table(
        Column("batch", no_wrap=True, min_width=ID_WIDTH),
        "status",
        "created",
        "succeeded",
        "failed",
        "documents",
    )
    for b in page["items"]:
        table.add_row(
            _plain(b["id"]),
            _plain(b["status"]),
            b["createdAt"][:19].replace("T", " "),
            str(b["successCount"]),
            str(b["failureCount"]),
            str(b["totalDocuments"]),
        )
    _out.print(table)
    _err.print(f"{len(page['items'])} of {page['total']} batches")


def _save_output(
    output: str, document_id: str, to: Path | None, api_url: str | None, api_key: str | None
) -> None:
    """Write a document's output to a file, or to standard output (text ones only to a
    terminal)."""
    binary = output in ("pdf", "original")
    if to is None and binary and sys.stdout.isatty():
        raise typer.Exit(_fail(f"the {output} is binary: give -o FILE, or redirect the output"))
    with _client(api_url, api_key) as client:
        data = client.output(document_id, output)
    if to is None:
        sys.stdout.buffer.write(data)
        if not binary and sys.stdout.isatty() and not data.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")  # so the prompt starts on a line of its own
        sys.stdout.flush()
        return
    try:
        to.write_bytes(data)
    except OSError as e:
        raise typer.Exit(_fail(f"{to} could not be written: {e.strerror}")) from None


@app.command("text", short_help="A document's text.")
def save_text(
    document_id: DocumentId,
    output: OutputFile = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """A Ready document's text, pages separated by a form feed.

    Example: docpipe text 8d1e0b7c-... -o invoice.txt
    """
    _save_output("text", document_id, output, api_url, api_key)


@app.command("pdf", short_help="A document's searchable PDF.")
def save_pdf(
    document_id: DocumentId,
    output: OutputFile = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """A Ready document's searchable PDF (if its tenant's outputs include pdf).

    Example: docpipe pdf 8d1e0b7c-... -o invoice.ocr.pdf
    """
    _save_output("pdf", document_id, output, api_url, api_key)


@app.command("hocr", short_help="A document's hOCR.")
def save_hocr(
    document_id: DocumentId,
    output: OutputFile = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """A Ready document's hOCR (if its tenant's outputs include hocr).

    Example: docpipe hocr 8d1e0b7c-... -o invoice.hocr
    """
    _save_output("hocr", document_id, output, api_url, api_key)


@app.command("words", short_help="A document's words and their boxes (JSON).")
def save_words(
    document_id: DocumentId,
    output: OutputFile = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """A Ready document's words with their boxes, as JSON (if its outputs include words).

    Example: docpipe words 8d1e0b7c-... -o invoice.words.json
    """
    _save_output("words", document_id, output, api_url, api_key)


@app.command("original", short_help="A document's uploaded bytes.")
def save_original(
    document_id: DocumentId,
    output: OutputFile = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """The bytes a document was uploaded as.

    Example: docpipe original 8d1e0b7c-... -o invoice.pdf
    """
    _save_output("original", document_id, output, api_url, api_key)


@app.command("cancel", short_help="Stop a batch.")
def cancel_batch_command(
    batch_id: BatchId, as_json: AsJson = False, api_url: ApiUrl = None, api_key: ApiKey = None
) -> None:
    """Stop a batch; its unfinished documents become Cancelled.

    Example: docpipe cancel 3f2c9a6e-...
    """
    with _client(api_url, api_key) as client:
        batch = client.cancel(batch_id)
    _print_batch(batch, as_json)


@app.command("retry", short_help="Reprocess a batch's failed documents.")
def retry_batch_command(
    batch_id: BatchId,
    include_invalid: Annotated[
        bool,
        typer.Option(
            "--include-invalid", metavar="", help="Check the documents that failed validation too."
        ),
    ] = False,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Reprocess a batch's documents whose OCR failed or that were cancelled.

    Example: docpipe retry 3f2c9a6e-... && docpipe status 3f2c9a6e-... --watch
    """
    with _client(api_url, api_key) as client:
        try:
            batch = client.retry(batch_id, include_invalid=include_invalid)
        except ClientError as e:  # the API's hint names its parameter; here it is a flag
            said = str(e).replace("includeInvalid=true", "--include-invalid")
            raise ClientError(said, status=e.status) from None
    _print_batch(batch, as_json)


@app.command("login", short_help="Keep an API URL and key for these commands.")
def save_login(
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            metavar="URL",
            help="The API's URL; default http://127.0.0.1 on DOCPIPE_API_PORT (8000).",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            metavar="KEY",
            help="The tenant's API key; asked for (not shown) if left out.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check an API URL and key, and keep them for the other commands in a file only you
    can read (~/.config/docpipe/client.json).

    Example: docpipe login --api-url https://ocr.example.com
    """
    key = (api_key or _ask_key()).strip()
    if not key:
        raise typer.Exit(_fail("no API key given: type it at the prompt, or give --api-key"))
    api_url = api_url or default_api_url()
    with _client(api_url, key) as client:
        client.limits()  # answers only to a valid key
    try:
        path = write_config(api_url, key)
    except OSError as e:
        raise typer.Exit(_fail(f"the login could not be saved: {e.strerror}")) from None
    typer.echo(f"the key works; saved to {path} (only you can read it)")


def _ask_key() -> str:
    """The key from the terminal, not shown; piped in, its first line (`… | docpipe login`)."""
    if sys.stdin is None:  # closed
        return ""
    if not sys.stdin.isatty():
        # As bytes: a key that is not text is refused by the client, not by a decoder.
        return sys.stdin.buffer.readline().decode(errors="replace")
    try:
        return getpass.getpass("API key: ")
    except (EOFError, KeyboardInterrupt):
        return ""


def _report(
    batch: dict[str, Any], as_json: bool, *, only_failed: bool, names: dict[str, str] | None = None
) -> int:
    """Print a batch: its counts, then its documents (only those that failed, after an
    upload); the exit status its outcome calls for."""
    ended = batch["status"] in FINAL_STATUSES
    all_ready = batch["status"] == "Completed" and batch["successCount"] == batch["totalDocuments"]
    code = 1 if ended and not all_ready else 0
    if as_json:
        _print_json(batch)
        return code
    _out.print(
        _plain(
            f"batch {batch['id']}: {batch['status']}, {batch['successCount']} of "
            f"{batch['totalDocuments']} succeeded, {batch['failureCount']} failed"
            + (f", {batch['cancelledCount']} cancelled" if batch["cancelledCount"] else "")
            + (f" ({batch['error']})" if batch.get("error") else "")
        ),
        highlight=False,
    )
    if isinstance(hook := batch.get("webhook"), dict):
        _out.print(_plain(_delivery(hook)), highlight=False)
    shown = [d for d in batch["documents"] if not only_failed or d["status"] != "Ready"]
    if shown:
        table = Table(
            Column("document", no_wrap=True, min_width=ID_WIDTH), "file", "status", "reason"
        )
        for d in shown:
            name = (names or {}).get(d["id"], d["fileName"])
            table.add_row(*map(_plain, (d["id"], name, d["status"], d.get("error") or "")))
        _out.print(table)
    return code


def _delivery(hook: dict[str, Any]) -> str:
    """How the batch's end reached its webhook, in a line."""
    tries = f"{hook.get('attempts')} attempt" + ("" if hook.get("attempts") == 1 else "s")
    said = f", last answer {hook['lastStatus']}" if hook.get("lastStatus") else ""
    if hook.get("state") == "delivered":
        return f"webhook: delivered at {hook.get('deliveredAt')} ({tries})"
    why = f" ({hook['lastError']})" if hook.get("lastError") else ""
    return f"webhook: {hook.get('state')}, {tries}{said}{why}"


BYTES = (DownloadColumn(), TransferSpeedColumn())
DOCUMENTS = (MofNCompleteColumn(), TimeElapsedColumn())


@contextmanager
def _bar(columns: tuple[ProgressColumn, ...], *, hidden: bool) -> Iterator[Progress]:
    """Bars on standard error, drawn only on a terminal (and never beside --json)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        *columns,
        console=_err,
        disable=hidden or not _err.is_terminal,
        transient=True,
    ) as progress:
        yield progress


def _documents_bar(progress: Progress) -> Any:
    """An on_progress for Client.wait: a bar of documents finished, with the counts."""
    task = progress.add_task("documents", total=None)

    def show(batch: dict[str, Any]) -> None:
        progress.update(
            task,
            completed=batch["completedDocuments"],
            total=batch["totalDocuments"],
            description=f"{batch['status']}: {batch['successCount']} succeeded, "
            f"{batch['failureCount']} failed",
        )

    return show


def _print_batch(batch: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(batch)
    else:
        _out.print(_plain(f"batch {batch['id']}: {batch['status']}"), highlight=False)


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value))


def _plain(text: str) -> Text:
    """What the API sent (a file name is whatever its uploader chose), shown as it is:
    not read as Rich's markup, and with no control character for the terminal to obey."""
    return Text(_one_line(str(text)))


def _one_line(text: str) -> str:
    """A name or reason as one line: a file name may hold a newline."""
    return text.encode("unicode_escape").decode() if not text.isprintable() else text


def _fail(message: str) -> int:
    typer.echo(f"error: {_one_line(message)}", err=True)
    return USAGE_ERROR


# Tables wide enough not to wrap a reason when written to a file or a pipe.
_out = Console(width=None if sys.stdout.isatty() else 500)
_err = Console(stderr=True)
