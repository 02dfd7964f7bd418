"""`docpipe ...`: run the service, manage tenants, deploy; and a tenant's client commands."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core
from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.exc import SQLAlchemyError
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from docpipe import client_cli
from docpipe.config import get_settings, settings_problem
from docpipe.errors import DocpipeError
from docpipe.home import AUTH_STRING_FILE, PRIVATE_UMASK
from docpipe.models import Outcomes, Tier, camel_keys

if TYPE_CHECKING:
    from docpipe.runtime.stack import Stack


def _usage_name(argument: typer.core.TyperArgument) -> str:
    return argument.display_name_raw + ("..." if argument.nargs != 1 else "")


# Typer 0.29 (pinned) shows an argument's Python type in --help ("FILES <list[Path]>") and
# braces in the usage line ("{BATCH}"); a command line's help says FILES... and BATCH.
typer.core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]
typer.core.TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign,assignment]

app = typer.Typer(
    help="docpipe: batch OCR of scanned documents on Prefect.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
tenant_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
db_app = typer.Typer(help="The database's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
# A tenant's commands (upload, status, text ...) live in their own module, under `docpipe` itself.
app.add_typer(client_cli.app)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"docpipe {version('docpipe')}")
        raise typer.Exit()


@app.callback()
def _owner_only_files(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    # Whatever a command writes under the home (database, logs, secret) is this user's alone.
    os.umask(PRIVATE_UMASK)


@app.command()
def up(
    server: Annotated[
        bool,
        typer.Option(
            help="Run the Prefect server here; --no-server uses the one at "
            "DOCPIPE_PREFECT_API_URL (with its secret in DOCPIPE_PREFECT_AUTH_STRING)."
        ),
    ] = True,
    worker: Annotated[
        bool, typer.Option(help="Run a worker here; --no-worker leaves the runs to others.")
    ] = True,
    api: Annotated[bool, typer.Option(help="Run the API here.")] = True,
) -> None:
    """Start the Prefect server, pool, deployments, a worker and the API; Ctrl-C stops all.

    Leave any of them to other machines; pool and deployments are made or updated either way.

    Example: docpipe up --no-worker
    """
    from docpipe.ocr import tesseract_version
    from docpipe.runtime.stack import Stack

    settings = get_settings()
    if not (server or worker or api):
        raise typer.Exit(_fail("nothing to run: leave at least one of server, worker and API"))
    if worker:  # only a worker reads pages
        try:
            typer.echo(f"tesseract {tesseract_version(settings.ocr_engine)}")
        except DocpipeError as e:
            raise typer.Exit(_fail(str(e))) from e
    typer.echo(f"starting docpipe in {settings.home} ...")
    ui = settings.prefect_api_url.removesuffix("/api")
    secret = (
        "your PREFECT_SERVER_API_AUTH_STRING"
        if settings.prefect_auth_string is not None
        else f"the line in {settings.home / AUTH_STRING_FILE}"
    )
    stack = Stack(settings)
    lines = [
        *([f"  API docs:   {settings.api_url}/docs"] if api else []),
        f"  Prefect UI: {ui}  (sign in with {secret})",
        *([] if worker else [f"  no worker here: runs wait for one on pool {settings.work_pool}"]),
        f"  logs:       {settings.home / 'logs'}",
    ]

    def start() -> None:
        stack.start(server=server, worker=worker, api=api)
        if api:
            _warn_if_storage_is_down(settings.api_url, stack.log_dir / "api.log")

    _run_until_stopped(
        stack,
        start,
        "docpipe is up.\n" + "\n".join(lines) + "\n"
        # The same home as this service's: a tenant made in another is not this one's.
        f"Make a tenant:  DOCPIPE_HOME={shlex.quote(str(settings.home))} "
        ".venv/bin/docpipe tenant create acme --tier vip",
    )


def _warn_if_storage_is_down(api_url: str, log: Path) -> None:
    """Say at start what /health would: a store that does not answer (or refuses the
    credentials) makes every upload a 503, though everything else is up."""
    import httpx

    with contextlib.suppress(httpx.HTTPError, ValueError):
        if httpx.get(f"{api_url}/health", timeout=10).json().get("storage") is False:
            typer.echo(
                "warning: document storage does not answer or refuses the credentials; "
                f"uploads answer 503 until it does (the reason is in {log})",
                err=True,
            )


def _run_until_stopped(stack: Stack, start: Callable[[], None] | None, banner: str) -> None:
    """Start (the whole stack by default), print the banner, wait for Ctrl-C, stop it all."""
    stopping = False

    def _stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    # SIGHUP too: a closed terminal or session would leave the services running alone.
    for stop_on in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop_on, _stop)
    try:
        (start or stack.start)()
    except (RuntimeError, DocpipeError) as e:
        stack.stop()
        raise typer.Exit(_fail(str(e))) from e
    except BaseException:  # a closed output, say: nothing started may outlive this
        stack.stop()
        raise
    try:
        typer.echo(f"\n{banner}\nCtrl-C stops everything.\n")
        while not stopping:
            if (dead := stack.check_alive()) is not None:
                log_file = next(s.log_file.name for s in stack.services if s.name == dead)
                typer.echo(f"{dead} exited; see {log_file}", err=True)
                break
            time.sleep(0.5)
    finally:
        # Stopped first: with standard output gone (a closed pipe), saying so would fail.
        with contextlib.suppress(OSError):
            typer.echo("stopping ...")
        stack.stop()
        with contextlib.suppress(OSError):
            typer.echo("stopped.")


@app.command()
def worker(
    name: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="The worker's name in Prefect; default docpipe-worker-<this host's name>. "
            "Two workers on one home need two names: the name picks the warm starter's "
            "socket and the log files.",
        ),
    ] = None,
) -> None:
    """Run one more worker (and its warm starter) on this machine; Ctrl-C stops both.

    Example: docpipe worker --name scanner-2
    """
    import socket

    from docpipe import orchestrator
    from docpipe.db import upgrade_database
    from docpipe.runtime.stack import DEFAULT_WORKER_NAME, Stack, check_existing_server

    # Not `make up`'s own worker name, so this one can run beside it on the same home.
    name = name or f"{DEFAULT_WORKER_NAME}-{socket.gethostname()}"
    stack = Stack(get_settings())

    def start() -> None:
        # Said now, in a line: not as a worker that polls a server it cannot reach.
        check_existing_server(stack.settings)
        upgrade_database()
        # Scans that fell due while no worker ran would each take a slot ahead of batches.
        if dropped := orchestrator.drop_pool_missed_runs(stack.settings.work_pool):
            typer.echo(f"{dropped} scheduled runs that fell due while no worker ran were dropped")
        stack.start_warm_starter(name)
        stack.start_worker(name)

    _run_until_stopped(stack, start, f"worker {name} is polling pool {stack.settings.work_pool}.")


@app.command()
def deploy() -> None:
    """Create the work pool, its queues and the deployments (idempotent).

    Example: DOCPIPE_PREFECT_API_URL=http://prefect:4200/api docpipe deploy
    """
    import subprocess
    import sys

    from docpipe.runtime.stack import PROJECT_DIR, check_existing_server, service_env

    settings = get_settings()
    try:
        check_existing_server(settings)  # answers, and takes this home's secret
    except RuntimeError as e:
        raise typer.Exit(_fail(str(e))) from e
    env = service_env(settings)
    code = subprocess.call(
        [sys.executable, "-m", "deployments.deploy"],
        env=env,
        cwd=PROJECT_DIR if PROJECT_DIR.exists() else Path.cwd(),
    )
    # It said why in its own line; any failure is an error here (1 means documents failed).
    raise typer.Exit(0 if code == 0 else client_cli.USAGE_ERROR)


@app.command()
def recover() -> None:
    """Submit batches Prefect never received and resubmit ones whose flow run died, once.

    Example: docpipe recover
    """
    from docpipe.recovery import run_recovery_pass

    _current_schema()
    report = run_recovery_pass()
    typer.echo(json.dumps(camel_keys(asdict(report))))
    if not report.prefect_reachable:
        raise typer.Exit(_fail("Prefect did not answer"))


@app.command()
def expire() -> None:
    """Delete what is older than the retention settings, once: batches ended more than
    DOCPIPE_RETENTION_DAYS ago (rows, files, flow runs, artifacts), and docpipe's flow runs
    ended more than DOCPIPE_PREFECT_RETENTION_DAYS ago. Prints the counts as JSON.

    Example: DOCPIPE_RETENTION_DAYS=90 docpipe expire
    """
    from docpipe.retention import retention_off, run_retention_pass

    _current_schema()
    if retention_off():
        typer.echo(
            "retention is off (DOCPIPE_RETENTION_DAYS and DOCPIPE_PREFECT_RETENTION_DAYS are "
            "0): nothing deleted",
            err=True,
        )
    report = run_retention_pass()
    typer.echo(json.dumps(camel_keys(asdict(report))))
    if not report.prefect_reachable:
        raise typer.Exit(_fail("Prefect refused or did not answer; run it again"))


# Written as one line a paragraph: the help renders a docstring's line breaks as they are.
INGEST_HELP = (
    "Scan one folder once: files unchanged since the last scan become batches.\n\n"
    "A file is taken once it is unchanged across two scans, so a first scan of new files "
    'takes none: they are "still settling"; run it again. The folder is consumed: taken '
    "files are moved away once their documents finish (removed when Ready, moved to "
    "rejected/ with the reason when not), files that fail the upload checks go to "
    "rejected/ at once, and copies of files already read into a Ready document are "
    "deleted. Names starting with a dot are never read. With --wait, the exit status is 0 "
    "if every document succeeded, 1 if some failed.\n\n"
    "Example: docpipe ingest ./scans --tenant acme --wait"
)


@app.command(help=INGEST_HELP)
def ingest(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="The folder to scan.")],
    tenant: Annotated[str, typer.Option(metavar="ID", help="Whose documents they are.")],
    settle: Annotated[
        float | None,
        typer.Option(metavar="S", help="Seconds a file must be unchanged; default from settings."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the batches made, and print their outcomes.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(metavar="S", help="With --wait: give up after this long (s).")
    ] = 900,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the scan's report as JSON.")
    ] = False,
) -> None:
    from docpipe import batches
    from docpipe.inbox import ingest_tenant_folder, safe_name
    from docpipe.tenants import get_tenant

    _current_schema()
    row = get_tenant(tenant)
    if row is None:
        raise typer.Exit(_fail(f"no tenant {tenant!r}"))
    if path.is_symlink() or not path.is_dir():
        raise typer.Exit(_fail(f"{path} is not a folder (docpipe follows no links)"))
    try:
        report = ingest_tenant_folder(path, row, settle=settle)
    except OSError as e:
        raise typer.Exit(_fail(f"{path} could not be scanned: {e.strerror}")) from e
    finished = _wait_for_batches(tenant, report.batches, timeout) if wait else []
    if as_json:
        outcomes = {b.id: b.status.value for b in finished}
        typer.echo(
            json.dumps(camel_keys(asdict(report)) | ({"outcomes": outcomes} if wait else {}))
        )
    else:
        made = ", ".join(report.batches) or "none"
        count = len(report.batches)
        typer.echo(f"{count} {'batch' if count == 1 else 'batches'} made: {made}")
        if any(batches.find_batch(tenant, b).flow_run_id is None for b in report.batches):
            typer.echo(
                "not all of them are with Prefect yet: they wait, Queued, for their turn, or "
                "for Prefect (down, or not at this CLI's DOCPIPE_PREFECT_PORT)"
            )
        if report.waiting:
            typer.echo(
                f"{len(report.waiting)} files still settling (taken once unchanged across two "
                "scans): run this again shortly"
            )
        # File names are escaped: a name is the folder user's, and may hold a newline.
        for name, reason in report.rejected.items():
            typer.echo(f"rejected {safe_name(name)}: {reason}")
        if report.duplicates:
            names = ", ".join(safe_name(n) for n in report.duplicates)
            typer.echo(f"deleted as already read into a Ready document: {names}")
        for batch in finished:
            typer.echo(f"batch {batch.id}: {batch.status.value}")
            for document in batch.documents:
                error = f": {document.error}" if document.error else ""
                typer.echo(f"  {safe_name(document.file_name)}: {document.status.value}{error}")
    if wait:
        if len(finished) < len(report.batches):
            raise typer.Exit(_fail(f"batches still unfinished after {timeout:g} s"))
        failed = sum(Outcomes.of(d.status for d in b.documents).failed for b in finished)
        raise typer.Exit(1 if failed else 0)


def _wait_for_batches(tenant_id: str, batch_ids: list[str], timeout: float) -> list[Any]:
    """The batches once each has ended, polled each second; those that ended in time."""
    from docpipe import batches

    deadline = time.monotonic() + timeout
    pending = list(batch_ids)
    while pending and time.monotonic() < deadline:
        pending = [b for b in pending if not batches.batch_status(tenant_id, b).is_final]
        if pending:
            time.sleep(1)
    return [batches.find_batch(tenant_id, b) for b in batch_ids if b not in pending]


LANGUAGES_OPTION = typer.Option(
    metavar="L",
    help="Tesseract's languages joined by '+', e.g. deu+eng; 'default' for "
    "DOCPIPE_OCR_LANGUAGE. Fixed on each batch when it is uploaded.",
)
OUTPUTS_OPTION = typer.Option(
    metavar="O",
    help="What to make of each document: text and any of pdf, hocr, words; 'default' for "
    "DOCPIPE_OCR_OUTPUTS (text,pdf). Read when a document is processed (a retry too).",
)


@tenant_app.command("create")
def tenant_create(
    tenant_id: Annotated[str, typer.Argument(metavar="ID", help="The tenant's id.")],
    tier: Annotated[
        Tier, typer.Option(help="vip batches run on the critical queue.")
    ] = Tier.STANDARD,
    languages: Annotated[str | None, LANGUAGES_OPTION] = None,
    outputs: Annotated[str | None, OUTPUTS_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a tenant and print its API key (shown only this once).

    Example: docpipe tenant create acme --tier vip --languages deu+eng --outputs text,pdf,words
    """
    from docpipe.tenants import create_tenant

    _current_schema()
    try:
        tenant, api_key = create_tenant(tenant_id, tier, languages=languages, outputs=outputs)
    except DocpipeError as e:
        raise typer.Exit(_fail(str(e))) from e
    # Its inbox folder, ready for files (the scans read only folders of tenants).
    (get_settings().inbox / tenant.id).mkdir(parents=True, exist_ok=True)
    if as_json:
        typer.echo(
            json.dumps({"tenantId": tenant.id, "tier": tenant.tier.value, "apiKey": api_key})
        )
    else:
        typer.echo(
            f"tenant {tenant.id} ({tenant.tier.value})\nAPI key: {api_key}\n"
            "Keep it: only its hash is stored."
        )


@tenant_app.command("set")
def tenant_set(
    tenant_id: Annotated[str, typer.Argument(metavar="ID", help="The tenant's id.")],
    tier: Annotated[Tier | None, typer.Option(help="vip or standard.")] = None,
    languages: Annotated[str | None, LANGUAGES_OPTION] = None,
    outputs: Annotated[str | None, OUTPUTS_OPTION] = None,
) -> None:
    """Change a tenant's tier, OCR languages or outputs.

    Example: docpipe tenant set acme --languages fra --outputs text,pdf,hocr,words
    """
    from docpipe.tenants import configure_tenant

    _current_schema()
    try:
        tenant = configure_tenant(tenant_id, tier=tier, languages=languages, outputs=outputs)
    except DocpipeError as e:
        raise typer.Exit(_fail(str(e))) from e
    settings = get_settings()
    typer.echo(
        f"tenant {tenant.id} ({tenant.tier.value}): languages "
        f"{tenant.languages or settings.ocr_language}, outputs "
        f"{tenant.outputs or settings.ocr_outputs}"
    )


@tenant_app.command("rotate-key")
def tenant_rotate_key(
    tenant_id: Annotated[str, typer.Argument(metavar="ID", help="The tenant's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Give a tenant a new API key (shown only this once); the old key is refused at once.

    Example: docpipe tenant rotate-key acme --json
    """
    from docpipe.tenants import rotate_key

    _current_schema()
    try:
        api_key = rotate_key(tenant_id)
    except DocpipeError as e:
        raise typer.Exit(_fail(str(e))) from e
    if as_json:
        typer.echo(json.dumps({"tenantId": tenant_id, "apiKey": api_key}))
    else:
        typer.echo(f"tenant {tenant_id}\nnew API key: {api_key}\nThe old key no longer works.")


@tenant_app.command("revoke")
def tenant_revoke(
    tenant_id: Annotated[str, typer.Argument(metavar="ID", help="The tenant's id.")],
) -> None:
    """Refuse a tenant's API key from now on (`rotate-key` issues a new one).

    Example: docpipe tenant revoke acme
    """
    from docpipe.tenants import revoke_key

    _current_schema()
    try:
        revoke_key(tenant_id)
    except DocpipeError as e:
        raise typer.Exit(_fail(str(e))) from e
    typer.echo(f"tenant {tenant_id}: API key revoked")


SIGNING_NOTE = (
    "Each delivery is signed: X-Docpipe-Signature: sha256=<hex HMAC-SHA256 of "
    "'<X-Docpipe-Timestamp>.<body>' under this secret> (docs/operations.md#webhooks)."
)


@tenant_app.command("set-webhook")
def tenant_set_webhook(
    tenant_id: Annotated[str, typer.Argument(metavar="ID", help="The tenant's id.")],
    url: Annotated[
        str,
        typer.Argument(
            metavar="URL", help="http(s) URL each batch's end is POSTed to; 'none' for none."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """POST each of the tenant's batches, when it ends, to URL, signed; the first time, print
    the signing secret (shown only this once).

    Example: docpipe tenant set-webhook acme https://hooks.example.com/docpipe
    """
    from docpipe.tenants import set_webhook

    _current_schema()
    try:
        secret = set_webhook(tenant_id, url)
    except DocpipeError as e:
        raise typer.Exit(_fail(str(e))) from e
    if as_json:
        typer.echo(json.dumps({"tenantId": tenant_id, "webhookSecret": secret}))
    elif url == "none":
        typer.echo(f"tenant {tenant_id}: no webhook")
    elif secret is None:
        typer.echo(
            f"tenant {tenant_id}: webhook {url}\nits secret is unchanged "
            "(rotate-webhook-secret makes a new one)"
        )
    else:
        typer.echo(
            f"tenant {tenant_id}: webhook {url}\nwebhook secret: {secret}\n"
            f"Keep it: it is not shown again. {SIGNING_NOTE}"
        )


@tenant_app.command("rotate-webhook-secret")
def tenant_rotate_webhook_secret(
    tenant_id: Annotated[str, typer.Argument(metavar="ID", help="The tenant's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Give a tenant a new webhook secret (shown only this once); deliveries are signed with
    it from now on.

    Example: docpipe tenant rotate-webhook-secret acme
    """
    from docpipe.tenants import rotate_webhook_secret

    _current_schema()
    try:
        secret = rotate_webhook_secret(tenant_id)
    except DocpipeError as e:
        raise typer.Exit(_fail(str(e))) from e
    if as_json:
        typer.echo(json.dumps({"tenantId": tenant_id, "webhookSecret": secret}))
    else:
        typer.echo(
            f"tenant {tenant_id}\nnew webhook secret: {secret}\n"
            f"The old one signs nothing more. {SIGNING_NOTE}"
        )


@tenant_app.command("list")
def tenant_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every tenant with its tier and whether its key works; keys are never shown.

    Example: docpipe tenant list --json
    """
    from docpipe.tenants import list_tenants

    _current_schema()
    tenants = list_tenants()
    if as_json:
        rows = [
            {
                "tenantId": t.id,
                "tier": t.tier.value,
                "createdAt": t.created_at.isoformat(),
                "keyActive": t.key_active,
                "languages": t.languages,
                "outputs": t.outputs.split(","),
                "webhookUrl": t.webhook_url,
            }
            for t in tenants
        ]
        typer.echo(json.dumps(rows))
        return
    for t in tenants:
        key = "key active" if t.key_active else "key revoked"
        typer.echo(
            f"{t.id}\t{t.tier.value}\t{t.created_at:%Y-%m-%d}\t{key}\t{t.languages}\t{t.outputs}"
            f"\t{t.webhook_url or 'no webhook'}"
        )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database's schema to this release's (make up, the worker and the API do this
    at start); a database made before migrations existed is upgraded in place.

    Example: DOCPIPE_DATABASE_URL=postgresql+psycopg://docpipe@db/docpipe docpipe db upgrade
    """
    from docpipe.db import upgrade_database

    settings = get_settings()
    try:
        revision = upgrade_database(settings.database_url)
    except DocpipeError as e:
        raise typer.Exit(_fail(str(e))) from e
    typer.echo(f"database {_shown_url(settings.database_url)} is at revision {revision}")


@db_app.command("revision")
def db_revision(
    message: Annotated[str, typer.Argument(metavar="MESSAGE", help="What the migration changes.")],
) -> None:
    """Write the next migration, from how docpipe/models.py differs from the newest one (for
    docpipe's developers; read the file before committing it).

    Example: docpipe db revision "documents: add language"
    """
    from docpipe.db import write_revision

    typer.echo(f"wrote {write_revision(message)}")


def _current_schema() -> None:
    """Commands other than up, worker and db upgrade make the schema of a new, empty
    database, but never change one that holds data: processes of another release may be
    using it."""
    from docpipe.db import ensure_schema

    try:
        ensure_schema()
    except DocpipeError as e:
        raise typer.Exit(_fail(str(e))) from e


def _database_problem(error: SQLAlchemyError) -> str:
    """Why the database cannot be used, in a line, its password never shown."""
    # The settings checked the URL parses, and filled it in where it was left out.
    where = _shown_url(get_settings().database_url)
    # The driver's words (or SQLAlchemy's first line): never the statement or its values.
    reason = (str(getattr(error, "orig", None) or error).splitlines() or [""])[0]
    return f"the database at {where} cannot be used: {reason}"


def _shown_url(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _fail(message: str) -> int:
    typer.echo(f"error: {message}", err=True)
    return client_cli.USAGE_ERROR  # 1 says documents failed


def main() -> None:
    """`docpipe`: as the app, but a usage error is one line too, as every other error."""
    try:
        code = typer.main.get_command(app).main(standalone_mode=False, prog_name="docpipe")
    except NoArgsIsHelpError as e:  # `docpipe tenant`: its help
        e.show()
        code = e.exit_code
    except UsageError as e:
        path = e.ctx.command_path if e.ctx else "docpipe"
        typer.echo(f"error: {e.format_message()} (see {path} --help)", err=True)
        code = e.exit_code
    except ClickException as e:
        e.show()
        code = e.exit_code
    except typer.Abort:  # end of input at a prompt
        code = client_cli.INTERRUPTED
    except (ValidationError, SettingsError) as e:  # read by the command, not by Click
        typer.echo(f"error: settings: {settings_problem(e)}", err=True)
        code = client_cli.USAGE_ERROR
    except SQLAlchemyError as e:  # a database that does not answer, or a URL that is none
        typer.echo(f"error: {_database_problem(e)}", err=True)
        code = client_cli.USAGE_ERROR
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
