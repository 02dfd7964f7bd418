"""Settings as an operator gives them: in `.env`, as IPv6 addresses, or wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from docpipe.config import Settings
from docpipe.runtime.stack import free_port, service_env, ui_origins

DOCPIPE = str(Path(sys.executable).parent / "docpipe")


def refused(home: Path, command: tuple[str, ...], **settings: str) -> str:
    """`docpipe COMMAND` with only these DOCPIPE_* settings: its one line of error, after
    checking it exited 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPIPE_")}
    env |= {f"DOCPIPE_{name}": value for name, value in settings.items()}
    result = subprocess.run(
        [DOCPIPE, *command],
        env=env | {"DOCPIPE_HOME": str(home)},
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert "hunter2" not in result.stdout + result.stderr  # no test's value is ever shown
    return line


def test_every_secret_in_dot_env_reaches_the_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The services run in the checkout, not where `.env` is: a secret read from it must
    travel in their environment, or /metrics would be open though a token was set."""
    for name in list(os.environ):
        if name.startswith("DOCPIPE_"):
            monkeypatch.delenv(name)
    (tmp_path / ".env").write_text(
        "DOCPIPE_METRICS_TOKEN=metrics-sekrit\nDOCPIPE_STORAGE_SECRET=store-sekrit\n"
        "DOCPIPE_WEBHOOK_KEY=webhook-sekrit\nDOCPIPE_PREFECT_AUTH_STRING=user:pass\n"
    )
    monkeypatch.chdir(tmp_path)
    env = service_env(Settings(home=tmp_path / "home"))
    assert env["DOCPIPE_METRICS_TOKEN"] == "metrics-sekrit"
    assert env["DOCPIPE_STORAGE_SECRET"] == "store-sekrit"
    assert env["DOCPIPE_WEBHOOK_KEY"] == "webhook-sekrit"
    assert env["PREFECT_API_AUTH_STRING"] == "user:pass"
    assert "**********" not in env.values()


@pytest.mark.parametrize(
    ("host", "shown"),
    [("::1", "[::1]"), ("::", "[::1]"), ("0.0.0.0", "127.0.0.1"), ("fd00::5", "[fd00::5]")],
)
def test_an_ipv6_bind_address_makes_a_url(host: str, shown: str) -> None:
    settings = Settings(api_host=host, prefect_host=host, api_port=8001, prefect_port=4201)
    assert settings.api_url == f"http://{shown}:8001"
    assert settings.prefect_api_url == f"http://{shown}:4201/api"
    if host != "::1":  # a bound address is the UI's origin as it is, in brackets if IPv6
        bracketed = f"[{host}]" if ":" in host else host
        assert ui_origins(settings) == [f"http://{bracketed}:4201"]


@pytest.mark.parametrize("command", [("worker",), ("deploy",), ("up", "--no-server")])
def test_a_prefect_url_that_is_no_url_is_one_line(tmp_path: Path, command: tuple[str]) -> None:
    url = "http://127.0.0.1:abc/api"
    line = refused(tmp_path, command, PREFECT_API_URL=url)
    assert line == f"error: DOCPIPE_PREFECT_API_URL is not a URL: {url}"


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("STORAGE_OPTIONS", '{"secret": "hunter2"', "DOCPIPE_STORAGE_OPTIONS: not valid JSON"),
        ("STORAGE_OPTIONS", '["hunter2"]', "DOCPIPE_STORAGE_OPTIONS: Input should be a valid"),
        ("API_PORT", "hunter2", "DOCPIPE_API_PORT: Input should be a valid integer"),
        ("DATABASE_URL", "hunter2", "DOCPIPE_DATABASE_URL: Value error, not a database URL"),
        ("DATABASE_URL", "postgresql://u:hunter2@h:abc/x", "DOCPIPE_DATABASE_URL: Value error"),
        ("INBOX_URL", "s3://hunter2", "Value error, DOCPIPE_INBOX_URL is a bucket's root"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_and_never_its_value(
    tmp_path: Path, name: str, value: str, said: str
) -> None:
    for command in (("tenant", "list"), ("up", "--no-worker"), ("ingest", ".", "--tenant", "a")):
        line = refused(tmp_path, command, **{name: value})
        assert line.startswith(f"error: settings: {said}"), line


def test_a_database_that_does_not_answer_is_one_line_without_its_password(
    tmp_path: Path,
) -> None:
    for url in (
        f"postgresql+psycopg://x:hunter2@127.0.0.1:{free_port()}/db",
        "bogus://x:hunter2@h",
    ):
        line = refused(tmp_path, ("tenant", "list"), DATABASE_URL=url)
        assert line.startswith("error: the database at ") and "cannot be used: " in line, line
