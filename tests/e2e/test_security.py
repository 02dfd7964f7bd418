"""Ways in: Prefect's API needs the secret, flow runs cannot change their command, and
the home is owner-only."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import documents
from tests.helpers import files_part, make_tenant, prefect_http, wait_for_batch

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-secret"),
        pytest.param({"Authorization": "Basic ZG9jcGlwZTp3cm9uZw=="}, id="wrong-secret"),
        pytest.param({"Authorization": "Bearer x"}, id="wrong-scheme"),
    ],
)
def test_prefects_api_refuses_a_caller_without_the_secret(stack: Any, headers: Any) -> None:
    with prefect_http(stack.settings, headers) as prefect:
        assert prefect.get("/health").status_code == 200  # probes stay open
        deployment = prefect.get("/deployments/name/process-batch/process-batch")
        assert deployment.status_code == 401
        created = prefect.post("/flow_runs/", json={"flow_id": "00000000-0000-0000-0000-0000"})
        assert created.status_code == 401


def test_prefects_api_answers_a_caller_with_the_secret(stack: Any) -> None:
    with prefect_http(stack.settings) as prefect:
        assert prefect.get("/deployments/name/process-batch/process-batch").status_code == 200


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        pytest.param("https://evil.example", False, id="another-site"),
        pytest.param("http://127.0.0.1:1", False, id="another-local-port"),
        pytest.param("{ui}", True, id="the-prefect-ui"),
    ],
)
def test_only_the_prefect_ui_may_call_its_api_from_a_browser(
    stack: Any, origin: str, allowed: bool
) -> None:
    origin = origin.format(ui=stack.settings.prefect_api_url.removesuffix("/api"))
    with prefect_http(stack.settings) as prefect:
        preflight = prefect.options(
            "/flow_runs/filter",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
    granted = preflight.headers.get("access-control-allow-origin")
    if allowed:
        assert granted == origin
    else:
        assert granted not in (origin, "*")  # Prefect's default was "*": any site


@pytest.mark.parametrize(
    "job_variables",
    [
        pytest.param({"command": "touch {marker}"}, id="command"),
        pytest.param({"env": {"PYTHONPATH": "{marker}"}}, id="env"),
        pytest.param({"working_dir": "/"}, id="working-dir"),
    ],
)
def test_a_flow_run_cannot_override_what_the_worker_runs(
    stack: Any, tmp_path: Path, job_variables: dict[str, Any]
) -> None:
    """Even a caller with the secret cannot make a run execute a command of its choosing."""
    marker = tmp_path / "pwned"
    variables = {
        k: ({n: x.format(marker=marker) for n, x in v.items()} if isinstance(v, dict) else v)
        for k, v in job_variables.items()
    }
    variables = {
        k: v.format(marker=marker) if isinstance(v, str) else v for k, v in variables.items()
    }
    with prefect_http(stack.settings) as prefect:
        deployment = prefect.get("/deployments/name/process-batch/process-batch").json()
        created = prefect.post(
            f"/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": {"batch_id": "x"}, "job_variables": variables},
        )
        assert created.status_code == 422, created.text
        pool = prefect.get(f"/work_pools/{stack.settings.work_pool}").json()
    assert pool["base_job_template"]["variables"]["properties"] == {}
    assert (
        pool["base_job_template"]["job_configuration"]["command"]
        == "python -m docpipe.runtime.warm"
    )
    assert not marker.exists()


def test_the_home_is_owner_only(stack: Any, api: httpx.Client) -> None:
    """The database, originals, OCR text, logs and the Prefect secret: no other user reads."""
    tenant_id, key = make_tenant()
    phrase = documents.phrase(3)
    accepted = api.post(
        f"/api/documents/bulk-upload?tenantId={tenant_id}",
        files=files_part([("a.png", documents.document(phrase, "png"))]),
        headers={"X-API-Key": key},
    ).json()
    wait_for_batch(api, key, accepted["batchId"])
    home = stack.settings.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    checked = 0
    for path in home.rglob("*"):
        if path.is_symlink() or path.is_socket():
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, f"{path.relative_to(home)} is {oct(mode)}"
        checked += 1
    names = {p.name for p in home.rglob("*")}
    assert {"docpipe.db", "prefect-auth-string", "api.log", "worker.log"} <= names
    assert any(name.endswith(".png.txt") for name in names)  # the OCR text
    assert checked > 10
