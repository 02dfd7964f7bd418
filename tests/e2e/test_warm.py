"""Flow runs start warm, forked from the warm starter; without it they still start, cold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import documents
from tests.helpers import cli, files_part, wait_for_batch

pytestmark = pytest.mark.e2e


def one_page_batch(stack: Any, key: str, seed: int, timeout: float = 300) -> dict[str, Any]:
    files = [("a.png", documents.document(documents.phrase(seed), "png", seed=seed))]
    with httpx.Client(base_url=stack.settings.api_url, timeout=60) as api:
        response = api.post(
            "/api/documents/bulk-upload?tenantId=acme",
            headers={"X-API-Key": key},
            files=files_part(files),
        )
        assert response.status_code == 202, response.text
        return wait_for_batch(api, key, response.json()["batchId"], timeout=timeout)


def autogroup_nice(pid: int) -> int:
    """The nice value of a process's autogroup: what its whole session gets of the CPU."""
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


def test_flow_runs_start_warm_and_still_start_cold_without_the_warm_starter(
    own_stack: Any,
) -> None:
    key = json.loads(cli(own_stack, "tenant", "create", "acme", "--json"))["apiKey"]
    log_dir = own_stack.log_dir

    warm = one_page_batch(own_stack, key, seed=1)

    assert warm["status"] == "Completed" and warm["successCount"] == 1
    assert (
        f"flow run {warm['flowRunId']}: started warm" in (log_dir / "warm-starter.log").read_text()
    )

    own_stack.stop_service("warm-starter")
    worker = next(s for s in own_stack.services if s.name == "worker")
    cold = one_page_batch(own_stack, key, seed=2)

    assert cold["status"] == "Completed" and cold["successCount"] == 1
    # The standard run lowered its own priority, not the worker's and every later run's.
    assert autogroup_nice(worker.process.pid) == 0
    assert cold["flowRunId"] not in (log_dir / "warm-starter.log").read_text()
    assert (
        "no warm starter answered; starting the flow run cold"
        in (log_dir / "worker.log").read_text()
    )


def test_the_launcher_trusts_only_a_socket_in_a_folder_of_its_users_alone(tmp_path: Path) -> None:
    """A socket planted in a folder others may write to would be handed the run's
    environment, the Prefect secret included: the launcher starts the run cold instead."""
    import socket

    from docpipe.runtime.warm import trusted

    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    path = folder / "warm.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        assert trusted(str(path))
        folder.chmod(0o777)  # as the shared temporary folder is
        assert not trusted(str(path))
        folder.chmod(0o700)
    path.unlink()
    path.write_text("not a socket")
    assert not trusted(str(path))
    assert not trusted(str(folder / "missing.sock"))
