"""The `docpipe` command: tenants, and `docpipe up` starting and stopping the whole service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text

from docpipe.runtime.stack import free_port
from tests import documents
from tests.helpers import wait_for_batch

pytestmark = pytest.mark.e2e

DOCPIPE = str(Path(sys.executable).parent / "docpipe")


def run_cli(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCPIPE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "DOCPIPE_HOME": str(home), **env},
    )


def test_tenant_create_prints_a_key_and_stores_only_its_hash(tmp_path: Path) -> None:
    result = run_cli("tenant", "create", "acme", "--tier", "vip", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["tenantId"] == "acme" and created["tier"] == "vip"
    assert created["apiKey"].startswith("dp_") and len(created["apiKey"]) > 40

    engine = create_engine(f"sqlite:///{tmp_path / 'docpipe.db'}")
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT id, tier, api_key_hash FROM tenants")).all()
    assert [(r[0], r[1]) for r in stored] == [("acme", "vip")]
    assert created["apiKey"] not in stored[0][2]
    assert created["apiKey"].encode() not in (tmp_path / "docpipe.db").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["acme"], "already exists", id="duplicate"),
        pytest.param(["Bad Name!"], "tenant id must be", id="bad-id"),
    ],
)
def test_tenant_create_refuses_with_a_reason(tmp_path: Path, args: list[str], message: str) -> None:
    assert run_cli("tenant", "create", "acme", home=tmp_path).returncode == 0
    result = run_cli("tenant", "create", *args, home=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.e2e
def test_up_serves_a_batch_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """`docpipe up` with settings from the environment; the CLI shares its data."""
    ports = {"DOCPIPE_API_PORT": str(free_port()), "DOCPIPE_PREFECT_PORT": str(free_port())}
    env = {**os.environ, "DOCPIPE_HOME": str(tmp_path), **ports}
    up = subprocess.Popen(
        [DOCPIPE, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert up.stdout is not None
        output = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            output.append(line)
            if "Ctrl-C stops everything" in line or not line:
                break
        text_out = "".join(output)
        api_url = f"http://127.0.0.1:{ports['DOCPIPE_API_PORT']}"
        assert f"{api_url}/docs" in text_out, text_out
        assert f"http://127.0.0.1:{ports['DOCPIPE_PREFECT_PORT']}" in text_out
        # The command to make a tenant names this service's home: run elsewhere, it would
        # make the tenant in another database, whose key this API does not know.
        assert f"DOCPIPE_HOME={tmp_path} .venv/bin/docpipe tenant create" in text_out
        started = psutil.Process(up.pid).children(recursive=True)
        assert len(started) >= 3  # server, worker, API

        created = run_cli(
            "tenant", "create", "acme", "--tier", "vip", "--json", home=tmp_path, **ports
        )
        key = json.loads(created.stdout)["apiKey"]
        with httpx.Client(base_url=api_url, timeout=60) as api:
            phrase = documents.phrase(3)
            accepted = api.post(
                "/api/documents/upload?tenantId=acme",
                headers={"X-API-Key": key},
                files={"file": ("a.png", documents.document(phrase, "png"))},
            )
            assert accepted.status_code == 202, accepted.text
            batch = wait_for_batch(api, key, accepted.json()["batchId"])
            assert batch["successCount"] == 1
            ocr = api.get(
                f"/api/documents/{accepted.json()['documentId']}/text", headers={"X-API-Key": key}
            )
            assert documents.words(phrase) <= documents.words(ocr.text)

        up.send_signal(signal.SIGINT)
        stop_started = time.monotonic()
        up.wait(timeout=15)
        assert time.monotonic() - stop_started < 10
        _, alive = psutil.wait_procs(started, timeout=0.5)
        assert alive == []
    finally:
        if up.poll() is None:  # a failed assertion: still leave nothing running
            up.send_signal(signal.SIGINT)
            try:
                up.wait(timeout=15)
            except subprocess.TimeoutExpired:
                for proc in [psutil.Process(up.pid), *psutil.Process(up.pid).children(True)]:
                    proc.kill()


def test_rotate_revoke_and_list_tenant_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotated key works and the old one is refused at once; a revoked one too; the list
    never shows a key."""
    from docpipe.config import get_settings
    from docpipe.errors import Unauthorized
    from docpipe.tenants import authenticate

    created = json.loads(run_cli("tenant", "create", "acme", "--json", home=tmp_path).stdout)
    assert run_cli("tenant", "create", "beta", "--tier", "vip", home=tmp_path).returncode == 0

    rotated = run_cli("tenant", "rotate-key", "acme", "--json", home=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert set(new) == {"tenantId", "apiKey"} and new["tenantId"] == "acme"
    assert new["apiKey"] != created["apiKey"]

    monkeypatch.setenv("DOCPIPE_HOME", str(tmp_path))
    monkeypatch.delenv("DOCPIPE_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        assert authenticate(new["apiKey"]).id == "acme"
        with pytest.raises(Unauthorized):
            authenticate(created["apiKey"])
        assert run_cli("tenant", "revoke", "acme", home=tmp_path).returncode == 0
        with pytest.raises(Unauthorized):
            authenticate(new["apiKey"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()

    listed = run_cli("tenant", "list", "--json", home=tmp_path)
    rows = json.loads(listed.stdout)
    assert [(r["tenantId"], r["tier"], r["keyActive"]) for r in rows] == [
        ("acme", "standard", False),
        ("beta", "vip", True),
    ]
    plain = run_cli("tenant", "list", home=tmp_path).stdout
    assert "acme" in plain and "key revoked" in plain
    assert "dp_" not in listed.stdout + plain
    missing = run_cli("tenant", "rotate-key", "nobody", home=tmp_path)
    assert missing.returncode == 2 and "no tenant 'nobody'" in missing.stderr
