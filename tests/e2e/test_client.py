"""The tenant's client: `docpipe upload`, `status`, `text` ... and docpipe.client, against
the real stack."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from docpipe.runtime.stack import free_port
from tests import documents
from tests.helpers import TEST_MAX_FILE_BYTES, client, good_files, one_line_error

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def written(folder: Path, files: list[tuple[str, bytes]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files:
        (folder / name).write_bytes(data)
    return folder


def test_upload_wait_names_the_failed_document_and_its_reason_and_exits_1(
    stack: Any, tenant: tuple[str, str], tmp_path: Path
) -> None:
    _, key = tenant
    url = stack.settings.api_url
    good = good_files(2)
    folder = written(tmp_path / "scans", good)
    written(folder / "sub", [("cut.pdf", documents.truncated(documents.document("CUT", "pdf")))])
    (folder / "notes.txt").write_text("not a document: a directory's documents go by suffix")

    uploaded = client("upload", str(folder), "--wait", url=url, key=key, home=tmp_path)

    assert uploaded.returncode == 1, uploaded.stderr
    lines = uploaded.stdout.splitlines()
    assert re.fullmatch(r"batch \S+: Completed, 2 of 3 succeeded, 1 failed", lines[0])
    failed_rows = [line for line in lines if "cut.pdf" in line]
    assert len(failed_rows) == 1 and "ValidationFailed" in failed_rows[0]
    # Named as it was found here, so that sub/cut.pdf and a cut.pdf beside it stay apart.
    assert str(folder / "sub" / "cut.pdf") in failed_rows[0]
    assert "PDF does not open" in failed_rows[0]
    assert not any(name in uploaded.stdout for name, _ in good)  # only failures are listed

    batch_id = lines[0].split()[1].rstrip(":")
    status = client("status", batch_id, "--json", url=url, key=key, home=tmp_path)
    assert status.returncode == 1  # it ended with a failure
    batch = json.loads(status.stdout)
    assert [d["fileName"] for d in batch["documents"]] == [*(n for n, _ in good), "cut.pdf"]
    for document, (name, _) in zip(batch["documents"][:2], good, strict=True):
        text = client("text", document["id"], url=url, key=key, home=tmp_path)
        assert text.returncode == 0, text.stderr
        phrase = documents.phrase(int(name.split("-")[1].split(".")[0]))
        assert documents.words(text.stdout) == documents.words(phrase)
    saved = client(
        "pdf", batch["documents"][0]["id"], "-o", "out.pdf", url=url, key=key, home=tmp_path
    )
    assert saved.returncode == 0 and (tmp_path / "out.pdf").read_bytes().startswith(b"%PDF")
    # The API's hint names its query parameter; the command names its own flag.
    retried = client("retry", batch_id, url=url, key=key, home=tmp_path)
    assert one_line_error(retried).endswith("retry with --include-invalid to check them again\n")


def test_all_good_exits_0_and_json_outputs_parse(
    stack: Any, tenant: tuple[str, str], tmp_path: Path
) -> None:
    tenant_id, key = tenant
    url = stack.settings.api_url
    folder = written(tmp_path / "scans", good_files(2))

    uploaded = client(
        "upload", *map(str, sorted(folder.iterdir())), "--wait", "--json", "--tenant", tenant_id,
        "--language", "eng", url=url, key=key, home=tmp_path,
    )  # fmt: skip

    assert uploaded.returncode == 0, uploaded.stderr
    batch = json.loads(uploaded.stdout)
    assert (batch["status"], batch["successCount"], batch["tenantId"]) == (
        "Completed",
        2,
        tenant_id,
    )
    watched = client("status", batch["id"], "--watch", url=url, key=key, home=tmp_path)
    assert watched.returncode == 0, watched.stderr
    assert f"batch {batch['id']}: Completed, 2 of 2 succeeded, 0 failed" in watched.stdout
    listed = json.loads(client("batches", "--json", url=url, key=key, home=tmp_path).stdout)
    assert [b["id"] for b in listed["items"]] == [batch["id"]]
    shown = client("batches", url=url, key=key, home=tmp_path)
    assert batch["id"] in shown.stdout and "Completed" in shown.stdout
    retried = client("retry", batch["id"], url=url, key=key, home=tmp_path)
    assert "nothing to retry: every document is Ready" in one_line_error(retried)


@pytest.mark.parametrize(
    ("args", "key", "message"),
    [
        pytest.param(["batches"], "dp_wrong", "invalid API key", id="bad-key"),
        pytest.param(["batches"], None, "no API key", id="no-key"),
        pytest.param(["status", "no-such-batch"], "tenant", "batch not found", id="unknown-batch"),
        pytest.param(
            ["text", "no-such-document"], "tenant", "document not found", id="unknown-doc"
        ),
        pytest.param(["cancel", "../../health"], "tenant", "Not Found", id="path-in-an-id"),
    ],
)
def test_a_refusal_is_exit_2_and_one_line(
    stack: Any,
    tenant: tuple[str, str],
    tmp_path: Path,
    args: list[str],
    key: str | None,
    message: str,
) -> None:
    key = tenant[1] if key == "tenant" else key
    result = client(*args, url=stack.settings.api_url, key=key, home=tmp_path)
    assert message in one_line_error(result)


def test_an_unreachable_api_is_exit_2_and_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    for args in (["batches"], ["upload", "a.png", "--wait"], ["status", "x", "--watch"]):
        result = client(*args, url=url, key="dp_any", home=tmp_path)
        assert f"cannot reach docpipe at {url}" in one_line_error(result)


@pytest.fixture
def not_docpipe() -> Any:
    """Another service on loopback: it answers every request 200 with a JSON of its own."""

    class Answer(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    "args",
    [
        ["batches"],
        ["status", "x"],
        ["upload", "a.png"],
        ["cancel", "x"],
        ["retry", "x"],
        ["text", "x"],
        ["words", "x", "-o", "out"],
        ["original", "x", "-o", "out"],
    ],
)
def test_a_service_that_is_not_docpipe_is_exit_2_and_one_line(
    not_docpipe: str, tmp_path: Path, args: list[str]
) -> None:
    (tmp_path / "a.png").write_bytes(documents.document("X", "png"))
    result = client(*args, url=not_docpipe, key="dp_any", home=tmp_path)
    assert "is it docpipe's API?" in one_line_error(result)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["upload"], "Missing argument 'FILES'. (see docpipe upload --help)"),
        (["batches", "--limit", "0"], "(see docpipe batches --help)"),
        (["upload", "a.png", "--nope"], "No such option: --nope (see docpipe upload --help)"),
        (["bogus"], "No such command 'bogus'. (see docpipe --help)"),
        (["tenant", "create"], "Missing argument 'ID'. (see docpipe tenant create --help)"),
    ],
)
def test_a_usage_error_is_exit_2_and_one_line(tmp_path: Path, args: list[str], said: str) -> None:
    assert said in one_line_error(client(*args, home=tmp_path))


def test_a_file_over_the_limit_is_named_before_anything_is_sent(
    stack: Any, tenant: tuple[str, str], tmp_path: Path
) -> None:
    _, key = tenant
    url = stack.settings.api_url
    folder = written(tmp_path / "scans", good_files(1))
    big = folder / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(TEST_MAX_FILE_BYTES))

    result = client("upload", str(folder), "--wait", url=url, key=key, home=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{big}: {TEST_MAX_FILE_BYTES + 8} bytes; the limit is {TEST_MAX_FILE_BYTES}" in (
        result.stderr
    )
    assert "nothing was sent" in result.stderr
    listed = client("batches", "--json", url=url, key=key, home=tmp_path)
    assert json.loads(listed.stdout)["total"] == 0


def test_login_keeps_url_and_key_owner_only_for_later_commands(
    stack: Any, tenant: tuple[str, str], tmp_path: Path
) -> None:
    _, key = tenant
    url = stack.settings.api_url
    for nothing in ("", "\n"):  # the prompt answered with nothing, or stdin empty
        empty = client("login", "--api-url", url, stdin=nothing, home=tmp_path)
        assert empty.returncode == 2, empty.stderr
        assert one_line_error(empty).strip() == (
            "error: no API key given: type it at the prompt, or give --api-key"
        )
    # A key no header can carry is refused before it is sent, and never echoed.
    for bad in (f"{key}\x00", f"\ufeff{key}", f"{key[:6]}\x7f{key[6:]}"):
        odd = client("login", "--api-url", url, stdin=f"{bad}\n", home=tmp_path)
        assert "characters an API key cannot have" in one_line_error(odd)
        assert key[4:] not in odd.stdout + odd.stderr
    refused = client("login", "--api-url", url, stdin="dp_wrong\n", home=tmp_path)
    assert "invalid API key" in refused.stderr and refused.returncode == 2
    config = tmp_path / ".config" / "docpipe" / "client.json"
    assert not config.exists()

    logged_in = client("login", "--api-url", url, stdin=f"{key}\n", home=tmp_path)

    assert logged_in.returncode == 0, logged_in.stderr
    assert key not in logged_in.stdout + logged_in.stderr  # asked for without echo
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    listed = client("batches", "--json", home=tmp_path)  # no URL, no key: the file's
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["total"] == 0
    # A flag or the environment wins over the file.
    overridden = client("batches", "--api-key", "dp_wrong", home=tmp_path)
    assert "invalid API key" in one_line_error(overridden)


def test_the_readmes_python_client_block_uploads_and_waits(
    stack: Any, tenant: tuple[str, str], tmp_path: Path
) -> None:
    """The README's block, as it is, run in the repository root like the README's commands."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- client-python[^>]*-->\n```python\n(.*?)```", readme, re.S)
    assert block is not None

    result = subprocess.run(
        [sys.executable, "-c", block.group(1)],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "DOCPIPE_API_URL": stack.settings.api_url,
            "DOCPIPE_API_KEY": tenant[1],
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Completed [")
    for word in ("INVOICE", "RECEIPT", "DEAR", "CUSTOMER"):
        assert word in result.stdout


def test_the_python_client_reports_sending_and_progress(
    stack: Any, tenant: tuple[str, str]
) -> None:
    from docpipe.client import Client

    sent: list[tuple[int, int]] = []
    seen: list[int] = []
    with Client(stack.settings.api_url, tenant[1]) as api:
        batch = api.upload(
            [ROOT / "examples" / "receipt.png"],
            wait=True,
            on_sent=lambda done, total: sent.append((done, total)),
            on_progress=lambda b: seen.append(b["completedDocuments"]),
        )
    size = (ROOT / "examples" / "receipt.png").stat().st_size
    assert sent[-1][0] == sent[-1][1] > size  # the whole body, the file in it
    assert seen[-1] == 1 and batch["successCount"] == 1
