"""What `docpipe upload` sends: a directory's documents, checked against the limits first."""

from __future__ import annotations

from pathlib import Path

import pytest

from docpipe.client import Client, InvalidFiles, Limits, check_files, document_files


def test_a_directory_gives_its_documents_by_suffix_and_no_hidden_or_linked_ones(
    tmp_path: Path,
) -> None:
    for name in ["b.PDF", "a.png", "notes.txt", ".hidden.png", "sub/c.tiff", ".git/d.png"]:
        (tmp_path / "scans" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "scans" / name).write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "e.png").write_bytes(b"x")
    (tmp_path / "scans" / "link").symlink_to(tmp_path / "elsewhere")
    named = tmp_path / "notes.txt"  # named outright: sent whatever its name

    found = document_files([tmp_path / "scans", named])

    scans = tmp_path / "scans"
    assert found == [scans / "a.png", scans / "b.PDF", scans / "sub" / "c.tiff", named]


@pytest.mark.parametrize(
    ("sizes", "message", "named"),
    [
        pytest.param({"a.png": 11}, "1 file cannot be sent", ["a.png"], id="too-large"),
        pytest.param({"a.png": 0}, "1 file cannot be sent", ["a.png"], id="empty"),
        pytest.param({"a.png": 1, "b.png": 1, "c.png": 1}, "3 files; one batch", [], id="many"),
        pytest.param({}, "no documents", [], id="none"),
    ],
)
def test_files_the_api_would_refuse_are_named(
    tmp_path: Path, sizes: dict[str, int], message: str, named: list[str]
) -> None:
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"x" * size)
    with pytest.raises(InvalidFiles, match=message) as refused:
        check_files([tmp_path / n for n in sizes], Limits(max_file_bytes=10, max_batch_documents=2))
    assert [Path(n).name for n, _ in refused.value.invalid_files] == named


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidFiles) as refused:
        check_files([tmp_path / "gone.pdf"], Limits(max_file_bytes=10, max_batch_documents=2))
    assert refused.value.invalid_files == [
        (str(tmp_path / "gone.pdf"), "No such file or directory")
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["batches", "--api-key", "ключ"],  # a key that cannot be a header
        ["upload", "/tmp/" + "x" * 300 + ".pdf", "--api-key", "k"],  # a name the system refuses
        ["text", "a" * 100_000, "--api-key", "k"],  # an id too long for any URL
    ],
)
def test_input_the_system_refuses_is_one_line_and_exit_2(args: list[str]) -> None:
    from typer.testing import CliRunner

    from docpipe.cli import app

    result = CliRunner().invoke(app, [*args, "--api-url", "http://127.0.0.1:9"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().startswith("error:"), result.output


@pytest.mark.parametrize(
    ("port", "url"),
    [("8621", "http://127.0.0.1:8621"), ("", "http://127.0.0.1:8000")],
)
def test_without_a_url_the_client_finds_the_api_on_this_machines_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, port: str, url: str
) -> None:
    """No URL given, set or saved: the API `make up` runs here, on DOCPIPE_API_PORT."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no `docpipe login` file
    monkeypatch.delenv("DOCPIPE_API_URL", raising=False)
    monkeypatch.setenv("DOCPIPE_API_PORT", port)

    with Client(api_key="key") as client:
        assert client.api_url == url


def test_the_client_reads_its_url_and_key_from_dot_env_as_the_server_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's settings live in `.env` for every command: a client run beside it
    finds the API on the port `make up` was given there, and the key."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no `docpipe login` file
    for name in ("DOCPIPE_API_URL", "DOCPIPE_API_KEY", "DOCPIPE_API_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DOCPIPE_API_PORT=8622\nDOCPIPE_API_KEY=key-from-env\n")

    with Client() as client:
        assert client.api_url == "http://127.0.0.1:8622"
        assert client._http.headers["X-API-Key"] == "key-from-env"

    monkeypatch.setenv("DOCPIPE_API_PORT", "8623")  # the environment comes first
    with Client() as client:
        assert client.api_url == "http://127.0.0.1:8623"


def test_a_file_name_reaches_the_terminal_as_text_not_as_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An uploader chooses its file names: one holding a terminal's escape sequence or
    Rich's markup is shown as written, never obeyed."""
    from docpipe import client_cli

    name = "\x1b[31mred\x1b]0;title\x07[bold]loud[/bold]\u202egnp.exe"
    document = {"id": "d1", "fileName": name, "status": "OcrFailed", "error": "[red]x[/red]"}
    batch = {
        "id": "b1", "status": "Completed", "successCount": 0, "totalDocuments": 1,
        "failureCount": 1, "cancelledCount": 0, "error": None, "documents": [document],
    }  # fmt: skip

    client_cli._report(batch, False, only_failed=False)

    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "[bold]loud[/bold]" in shown and "[red]x[/red]" in shown
