"""Folder ingestion: settled files become batches; bad ones are set aside with a reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pypdf
import pytest
from sqlalchemy import func, select

from docpipe import inbox
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.models import Batch, Document
from docpipe.tenants import get_tenant
from tests import documents
from tests.helpers import make_tenant, prefect_http, wait_for_batch

pytestmark = pytest.mark.e2e


def drop(folder: Path, name: str, data: bytes, *, age: float = 60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def batch_count(tenant_id: str) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).where(Batch.tenant_id == tenant_id)) or 0)


def tenant_with_folder() -> tuple[str, str, Any, Path]:
    """A new tenant: (id, API key, row, its inbox folder)."""
    tenant_id, key = make_tenant()
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    return tenant_id, key, tenant, get_settings().inbox / tenant_id


def settle_and_scan(folder: Path, tenant: Any) -> inbox.IngestReport:
    """Two scans: the first only sees the files (a file is taken once it is unchanged
    across two scans); returns the second's report."""
    first = inbox.ingest_tenant_folder(folder, tenant, settle=5)
    assert first.batches == []
    assert all(reason == inbox.LINK_REASON for reason in first.rejected.values())
    return inbox.ingest_tenant_folder(folder, tenant, settle=5)


def good(i: int) -> tuple[str, bytes]:
    kind = ["png", "pdf", "jpeg", "tiff"][i % 4]
    return f"scan-{i}.{kind}", documents.document(documents.phrase(i), kind, seed=i)


def test_150_files_become_two_batches_and_bad_ones_are_rejected(
    api: httpx.Client, stack: object
) -> None:
    tenant_id, key, tenant, folder = tenant_with_folder()
    for i in range(149):
        drop(folder, *good(i))
    drop(folder, "notes.txt", b"just some text")
    drop(folder, "blank.png", b"")
    growing = drop(folder, "growing.png", good(999)[1][:100], age=0)
    writer = growing.open("ab")  # still being written: its writer holds it open

    report = settle_and_scan(folder, tenant)

    assert len(report.batches) == 2
    assert report.waiting == ["growing.png"]
    assert report.rejected == {
        "notes.txt": "not a PDF, PNG, JPEG or TIFF (judged by the file's content)",
        "blank.png": "file is empty",
    }
    rejected = folder / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == [
        "blank.png",
        "blank.png.reason.txt",
        "notes.txt",
        "notes.txt.reason.txt",
    ]
    assert (rejected / "notes.txt.reason.txt").read_text().startswith("not a PDF")
    # The originals stay until their batches have an outcome.
    assert len(visible(folder)) == 149 + 2
    sizes = []
    for batch_id in report.batches:
        batch = wait_for_batch(api, key, batch_id)
        assert batch["status"] == "Completed" and batch["failureCount"] == 0
        sizes.append(batch["totalDocuments"])
    assert sizes == [100, 49]
    names = {
        d["fileName"]: d["id"] for d in wait_for_batch(api, key, report.batches[0])["documents"]
    }
    text = api.get(f"/api/documents/{names['scan-0.png']}/text", headers={"X-API-Key": key}).text
    assert documents.words(documents.phrase(0)) <= documents.words(text)

    # Both batches are done: the next scan removes the originals of Ready documents.
    after = inbox.ingest_tenant_folder(folder, tenant, settle=5)
    assert len(after.done) == 149
    assert visible(folder) == ["growing.png", "rejected"]

    # The file finishes being written; later scans take it.
    writer.close()
    drop(folder, "growing.png", good(999)[1])
    later = settle_and_scan(folder, tenant)
    assert len(later.batches) == 1 and later.waiting == []
    assert batch_count(tenant_id) == 3


def test_a_crash_after_commit_neither_loses_nor_doubles_a_file(
    api: httpx.Client, stack: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after its batch was committed, before it could note what it took: the next
    scan knows the files by their SHA-256, and neither drops nor ingests them again."""
    from docpipe.dispatch import submit_batch

    tenant_id, key, tenant, folder = tenant_with_folder()
    for i in range(3):
        drop(folder, *good(i))
    assert inbox.ingest_tenant_folder(folder, tenant, settle=5).waiting == [
        good(i)[0] for i in range(3)
    ]

    def crash(*_: object) -> None:
        raise KeyboardInterrupt("killed between commit and clean-up")

    monkeypatch.setattr(inbox.FolderState, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        inbox.ingest_tenant_folder(folder, tenant, settle=5)
    monkeypatch.undo()
    assert batch_count(tenant_id) == 1
    assert len(visible(folder)) == 3  # nothing lost

    again = inbox.ingest_tenant_folder(folder, tenant, settle=5)

    assert again.batches == [] and again.duplicates == []
    assert batch_count(tenant_id) == 1  # nothing ingested twice
    with session_scope() as session:
        [batch_id] = session.scalars(select(Batch.id).where(Batch.tenant_id == tenant_id)).all()
    submit_batch(batch_id)  # as recovery would: the killed scan never submitted it
    assert wait_for_batch(api, key, batch_id)["successCount"] == 3
    assert sorted(inbox.ingest_tenant_folder(folder, tenant, settle=5).done) == [
        good(i)[0] for i in range(3)
    ]
    assert visible(folder) == []


def test_a_folder_without_a_tenant_is_left_alone(stack: object) -> None:
    folder = get_settings().inbox / "nobody-by-this-name"
    dropped = drop(folder, *good(1))

    report = inbox.scan_inbox()

    assert "nobody-by-this-name" in report.unknown_tenants
    assert dropped.exists()
    assert (folder / inbox.NOTICE).exists()  # a note that a person sees, beside the files


def test_ingest_command_scans_one_folder(tmp_path: Path, stack: object) -> None:
    tenant_id, _ = make_tenant()
    for i in range(2):
        drop(tmp_path / "scans", *good(i))
    command = [
        str(Path(sys.executable).parent / "docpipe"),
        "ingest",
        str(tmp_path / "scans"),
        "--tenant",
        tenant_id,
        "--json",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert json.loads(first.stdout)["waiting"] == [good(0)[0], good(1)[0]]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["batches"]) == 1
    assert batch_count(tenant_id) == 1


def test_the_flow_takes_a_tenant_and_a_folder_inside_its_own(
    tmp_path: Path, stack: object, prefect_api: None
) -> None:
    from flows.ingest_folder import ingest_folder

    tenant_id, _ = make_tenant()
    drop(get_settings().inbox / tenant_id / "scans", *good(3))
    ingest_folder(tenant_id=tenant_id, folder="scans")  # sees the file
    result: Any = ingest_folder(tenant_id=tenant_id, folder="scans")  # takes it
    assert len(result["batches"]) == 1
    unknown: Any = ingest_folder(tenant_id="nobody-at-all")
    assert unknown["unknownTenants"] == ["nobody-at-all"]


@pytest.mark.parametrize(
    "folder",
    [
        pytest.param("{outside}", id="absolute-outside"),
        pytest.param("../{other}", id="another-tenants-folder"),
        pytest.param("../../", id="the-whole-inbox"),
        pytest.param("linked", id="link-to-another-tenant"),
    ],
)
def test_the_flow_refuses_a_folder_outside_the_tenants_own(
    tmp_path: Path, stack: object, prefect_api: None, folder: str
) -> None:
    """A run started with any parameters reads nothing but the tenant's own inbox folder."""
    from flows.ingest_folder import ingest_folder

    tenant_id, _ = make_tenant()
    other_id, _ = make_tenant()
    own = get_settings().inbox / tenant_id
    own.mkdir(parents=True)
    drop(tmp_path, *good(3))
    drop(get_settings().inbox / other_id, *good(4))
    (own / "linked").symlink_to(get_settings().inbox / other_id)
    folder = folder.format(outside=tmp_path, other=other_id)

    state = ingest_folder(tenant_id=tenant_id, folder=folder, return_state=True)

    assert (state.type.value, state.name) == ("COMPLETED", "Not run")
    assert state.message is not None and state.message.startswith("refused:")
    assert batch_count(tenant_id) == 0
    assert visible(tmp_path) == [good(3)[0]]
    assert visible(get_settings().inbox / other_id) == [good(4)[0]]


def test_one_scan_at_a_time_per_folder(stack: object) -> None:
    tenant_id, _, tenant, folder = tenant_with_folder()
    drop(folder, *good(1))
    with inbox._scan_lock(folder) as locked:  # another scan is at work
        assert locked
        assert inbox.ingest_tenant_folder(folder, tenant, settle=5) == inbox.IngestReport()
    assert visible(folder) == [good(1)[0]]
    assert len(settle_and_scan(folder, tenant).batches) == 1


def test_scheduled_deployments_exist(stack: object, prefect_api: None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import IntervalSchedule

    with get_client(sync_client=True) as client:
        for name in ("ingest-folder/ingest-folder", "recover-batches/recover-batches"):
            deployment = client.read_deployment_by_name(name)
            assert deployment.work_queue_name == "critical"
            [schedule] = deployment.schedules
            assert isinstance(schedule.schedule, IntervalSchedule)
            assert schedule.schedule.interval.total_seconds() == 86400  # as configured
        process = client.read_deployment_by_name("process-batch/process-batch")
        assert process.parameter_openapi_schema is not None
        assert process.parameter_openapi_schema["required"] == ["batch_id"]
        ingest = client.read_deployment_by_name("ingest-folder/ingest-folder")
        assert ingest.parameter_openapi_schema is not None
        described = ingest.parameter_openapi_schema["properties"]
        assert "Only this tenant" in described["tenant_id"]["description"]
        assert "inside inbox/<tenant_id>/" in described["folder"]["description"]


def test_scheduled_scans_missed_while_docpipe_was_down_run_once_not_all_at_once(
    tmp_path: Path,
) -> None:
    """Every scan that fell due while no worker ran used to run at start, ahead of batches."""
    from datetime import UTC, datetime, timedelta

    from docpipe.config import Settings
    from docpipe.runtime.stack import Stack, free_port

    settings = Settings(home=tmp_path, api_port=free_port(), prefect_port=free_port())
    stack = Stack(settings.model_copy(update={"ingest_interval_seconds": 60}))
    stack.start(worker=False, api=False)
    try:
        with prefect_http(stack.settings) as prefect:
            ingest = prefect.get("/deployments/name/ingest-folder/ingest-folder").json()["id"]
            now = datetime.now(UTC)

            def runs(**expected_start_time: str) -> list[dict[str, Any]]:
                response = prefect.post(
                    "/flow_runs/filter",
                    json={
                        "flow_runs": {
                            "deployment_id": {"any_": [ingest]},
                            "state": {"type": {"any_": ["SCHEDULED"]}},
                            "expected_start_time": expected_start_time,
                        }
                    },
                )
                response.raise_for_status()
                return list(response.json())

            # The schedule's own runs for the last ten minutes, as if docpipe had been down.
            prefect.post(
                f"/deployments/{ingest}/schedule",
                json={
                    "start_time": (now - timedelta(minutes=10)).isoformat(),
                    "end_time": (now - timedelta(seconds=30)).isoformat(),
                    "max_runs": 20,
                },
            ).raise_for_status()
            # And one run started by hand from the UI, due as long.
            by_hand = prefect.post(
                f"/deployments/{ingest}/create_flow_run",
                json={
                    "state": {
                        "type": "SCHEDULED",
                        "state_details": {
                            "scheduled_time": (now - timedelta(minutes=5)).isoformat()
                        },
                    }
                },
            ).json()["id"]
            missed = runs(before_=now.isoformat())
            assert len(missed) >= 10
            ahead = {run["id"] for run in runs(after_=now.isoformat())}

            stack.deploy()  # as every `make up` does before it starts the worker

            left = runs(before_=now.isoformat())
            assert {run["id"] for run in left if not run["auto_scheduled"]} == {by_hand}
            [newest] = [run for run in left if run["auto_scheduled"]]
            assert newest["expected_start_time"] == max(
                run["expected_start_time"] for run in missed if run["auto_scheduled"]
            )
            assert ahead <= {run["id"] for run in runs(after_=now.isoformat())}
        logged = (stack.log_dir / "deploy.log").read_text()
        assert f"ingest-folder: {len(missed) - 2} scheduled runs" in logged
    finally:
        stack.stop()


def test_links_are_never_followed_and_set_aside(tmp_path: Path, stack: object) -> None:
    """A link to another tenant's stored original, or to any file, is not ingested: it
    goes to rejected/ with its reason, as a link."""
    from docpipe.storage import get_storage

    tenant_id, _, tenant, folder = tenant_with_folder()
    # Kept, not made again to compare: a PDF's bytes hold the second it was made in.
    secret_bytes = good(5)[1]
    secret = drop(tmp_path, "secret.png", secret_bytes)
    victim_id, _ = make_tenant()
    victim = get_tenant(victim_id)
    assert victim is not None
    drop(get_settings().inbox / victim_id, *good(6))
    [batch_id] = settle_and_scan(get_settings().inbox / victim_id, victim).batches
    [stored] = get_storage().keys(f"{victim_id}/{batch_id}")
    folder.mkdir(parents=True)
    (folder / "secret.png").symlink_to(secret)
    (folder / "theirs.png").symlink_to(Path(get_storage().root) / stored)
    (folder / "loop.png").symlink_to(folder / "loop.png")

    report = inbox.ingest_tenant_folder(folder, tenant, settle=5)

    assert report.batches == []
    assert report.rejected == dict.fromkeys(
        ["loop.png", "secret.png", "theirs.png"], inbox.LINK_REASON
    )
    assert batch_count(tenant_id) == 0
    # Set aside with a note, as links: what they name is untouched.
    assert [p.name for p in folder.iterdir()] == ["rejected"]
    aside = folder / "rejected"
    for name in report.rejected:
        assert (aside / name).is_symlink()
        assert (aside / f"{name}.reason.txt").read_text() == inbox.LINK_REASON + "\n"
    assert secret.read_bytes() == secret_bytes
    assert (Path(get_storage().root) / stored).is_file()


def test_a_rejected_folder_or_reason_file_that_is_a_link_is_not_written_through(
    tmp_path: Path, stack: object
) -> None:
    tenant_id, _, tenant, folder = tenant_with_folder()
    drop(folder, "notes.txt", b"just some text")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (folder / "rejected").symlink_to(elsewhere)

    assert settle_and_scan(folder, tenant).rejected.keys() == {"notes.txt"}
    assert list(elsewhere.iterdir()) == []
    assert (folder / "notes.txt").exists()

    (folder / "rejected").unlink()
    (folder / "rejected").mkdir()
    target = tmp_path / "target.txt"
    target.write_text("untouched")
    (folder / "rejected" / "notes.txt.reason.txt").symlink_to(target)
    # Seen and unchanged since: this scan takes it (and sets it aside) at once.
    assert inbox.ingest_tenant_folder(folder, tenant, settle=5).rejected.keys() == {"notes.txt"}
    assert target.read_text() == "untouched"
    assert (folder / "rejected" / "notes.txt.reason.txt").read_text().startswith("not a PDF")
    assert not (folder / "rejected" / "notes.txt.reason.txt").is_symlink()


def test_no_docpipe_file_is_left_in_the_tenants_folder(stack: object) -> None:
    tenant_id, _, tenant, folder = tenant_with_folder()
    drop(folder, *good(7))
    assert len(settle_and_scan(folder, tenant).batches) == 1
    assert visible(folder) == [good(7)[0]] == [p.name for p in folder.iterdir()]


def test_a_file_still_being_written_is_not_taken_however_long_it_pauses(stack: object) -> None:
    """A copy that pauses longer than the settle time, or is held open for writing, waits:
    it used to be ingested cut off, and the original deleted."""
    tenant_id, _, tenant, folder = tenant_with_folder()
    name, data = good(8)
    half = drop(folder, name, data[: len(data) // 2])  # old mtime: "settled" by time alone

    assert inbox.ingest_tenant_folder(folder, tenant, settle=5).waiting == [name]  # first sight
    with half.open("ab") as writer:  # the copy goes on, after a long pause
        writer.write(data[len(data) // 2 : -100])
        writer.flush()
        then = time.time() - 60
        os.utime(half, (then, then))
        assert inbox.ingest_tenant_folder(folder, tenant, settle=5).waiting == [name]  # changed
        # Unchanged across two scans now, but its writer still holds it open.
        assert inbox.ingest_tenant_folder(folder, tenant, settle=5).waiting == [name]
        writer.write(data[-100:])
    os.utime(half, (then, then))
    inbox.ingest_tenant_folder(folder, tenant, settle=5)
    report = inbox.ingest_tenant_folder(folder, tenant, settle=5)

    assert len(report.batches) == 1
    with session_scope() as session:
        [stored] = session.scalars(select(Document).where(Document.tenant_id == tenant_id)).all()
    assert stored.size_bytes == len(data)  # the whole file, not the half seen first


def test_a_file_whose_earlier_copy_failed_or_was_cancelled_is_read_again(
    api: httpx.Client, stack: object
) -> None:
    from docpipe import batches

    tenant_id, key, tenant, folder = tenant_with_folder()
    name, data = good(9)
    drop(folder, name, data)
    [first] = settle_and_scan(folder, tenant).batches
    batches.mark_cancelled(tenant_id, first)

    after = inbox.ingest_tenant_folder(folder, tenant, settle=5)
    # The original is set aside with the outcome, not deleted as if it had been read.
    assert after.rejected == {name: "Cancelled: batch was cancelled"}
    assert (folder / "rejected" / name).read_bytes() == data

    drop(folder, name, data)  # the tenant drops it again
    again = settle_and_scan(folder, tenant)
    assert again.duplicates == [] and len(again.batches) == 1
    assert wait_for_batch(api, key, again.batches[0])["successCount"] == 1

    drop(folder, "copy-" + name, data)  # and once more, now that a copy was read
    assert settle_and_scan(folder, tenant).duplicates == ["copy-" + name]


def test_file_names_with_control_characters_are_escaped_in_logs(
    stack: object, caplog: pytest.LogCaptureFixture
) -> None:
    tenant_id, _, tenant, folder = tenant_with_folder()
    folder.mkdir(parents=True)
    evil = "x.png\n2026-01-01 ERROR forged line\x1b[31m"
    (folder / evil).symlink_to("/etc/passwd")
    with caplog.at_level("WARNING", logger="docpipe.inbox"):
        inbox.ingest_tenant_folder(folder, tenant, settle=5)
    [line] = [r.getMessage() for r in caplog.records if "forged" in r.getMessage()]
    assert "\n" not in line and "\x1b" not in line
    assert "x.png\\n2026" in line


def test_a_name_that_is_not_utf8_is_refused_and_stops_no_one(stack: object, tmp_path: Path) -> None:
    """Such a name once made every scan fail, for every tenant after it."""
    bad_id, _ = make_tenant()
    later_id, _ = make_tenant()
    name = os.fsdecode(b"bad\xff.png")  # how Python names bytes that are not UTF-8
    drop(tmp_path / bad_id, name, good(1)[1])
    drop(tmp_path / later_id, *good(2))

    (tmp_path / os.fsdecode(b"no-tenant-\xff")).mkdir()  # nor a folder so named

    inbox.scan_inbox(tmp_path)
    report = inbox.scan_inbox(tmp_path)

    assert report.rejected["bad\\udcff.png"] == inbox.BAD_NAME_REASON
    assert "no-tenant-\\udcff" in report.unknown_tenants
    assert (tmp_path / bad_id / name).exists()  # left where it is
    assert batch_count(bad_id) == 0
    assert batch_count(later_id) == 1
    assert report.failed_folders == []


def test_an_outcome_that_cannot_be_set_aside_is_not_read_again(
    api: httpx.Client, stack: object, tmp_path: Path
) -> None:
    """rejected/ unusable: the failed original stays, and is not taken as new each scan."""
    tenant_id, key, tenant, folder = tenant_with_folder()
    drop(folder, "cut.jpeg", documents.truncated(documents.document("X", "jpeg")))
    (folder / "rejected").symlink_to(tmp_path)
    [batch_id] = settle_and_scan(folder, tenant).batches
    assert wait_for_batch(api, key, batch_id)["failureCount"] == 1
    for _ in range(3):
        report = inbox.ingest_tenant_folder(folder, tenant, settle=5)
        assert report.batches == []
        assert report.rejected["cut.jpeg"].startswith("ValidationFailed: ")
    assert batch_count(tenant_id) == 1
    assert (folder / "cut.jpeg").exists() and list(tmp_path.iterdir()) == []


def test_a_folder_batch_hands_back_its_texts_and_every_files_outcome(
    api: httpx.Client, stack: object
) -> None:
    """The folder's user never needs the API: texts and searchable PDFs in the outbox, and
    a file that failed the deep checks set aside in rejected/ with its reason, like one
    refused at once."""
    tenant_id, key, tenant, folder = tenant_with_folder()
    cut = documents.truncated(documents.document("X", "pdf"))  # passes the cheap checks
    drop(folder, *good(0))
    drop(folder, "cut.pdf", cut)
    (batch_id,) = settle_and_scan(folder, tenant).batches

    batch = wait_for_batch(api, key, batch_id)
    assert (batch["successCount"], batch["failureCount"]) == (1, 1)
    outbox = get_settings().outbox / tenant_id
    deadline = time.monotonic() + 30  # written just after the batch's summary
    while not (outbox / f"batch-{batch_id}.json").exists():
        assert time.monotonic() < deadline
        time.sleep(0.5)

    name, _ = good(0)
    text = (outbox / f"{name}.txt").read_text()
    assert documents.words(documents.phrase(0)) <= documents.words(text)
    summary = json.loads((outbox / f"batch-{batch_id}.json").read_text())
    assert (summary["status"], summary["succeeded"], summary["failed"]) == ("Completed", 1, 1)
    outcomes = {d["fileName"]: (d["status"], d["text"], d["pdf"]) for d in summary["documents"]}
    assert outcomes == {
        name: ("Ready", f"{name}.txt", f"{name}.ocr.pdf"),
        "cut.pdf": ("ValidationFailed", None, None),
    }
    searchable = pypdf.PdfReader(outbox / f"{name}.ocr.pdf").pages[0].extract_text()
    assert documents.words(documents.phrase(0)) <= documents.words(searchable)
    assert not (outbox / "cut.pdf.txt").exists() and not (outbox / "cut.pdf.ocr.pdf").exists()

    after = inbox.ingest_tenant_folder(folder, tenant, settle=5)  # the next scan settles both
    assert after.done == [name] and set(after.rejected) == {"cut.pdf"}
    assert visible(folder) == ["rejected"]
    assert (folder / "rejected" / "cut.pdf").read_bytes() == cut
    reason = (folder / "rejected" / "cut.pdf.reason.txt").read_text()
    assert reason.startswith("ValidationFailed: PDF does not open")


def test_a_folder_no_tenant_has_says_so_inside_it_until_the_tenant_exists(stack: object) -> None:
    from docpipe.models import Tier
    from docpipe.tenants import create_tenant

    name = f"later-{os.getpid()}-{time.monotonic_ns()}"
    folder = get_settings().inbox / name
    drop(folder, *good(1))

    inbox.scan_inbox()

    notice = (folder / inbox.NOTICE).read_text()
    assert f"no tenant is named '{name}'" in notice
    assert visible(folder) == sorted([good(1)[0], inbox.NOTICE])
    tenant, _ = create_tenant(name, Tier.STANDARD)
    report = inbox.ingest_tenant_folder(folder, tenant, settle=5)
    assert not (folder / inbox.NOTICE).exists() and inbox.NOTICE not in report.rejected


def test_scan_runs_are_named_by_tenant_and_time(stack: object, prefect_api: None) -> None:
    from prefect.client.orchestration import get_client

    tenant_id, _ = make_tenant()
    settings = stack.settings  # type: ignore[attr-defined]
    with prefect_http(settings) as prefect:  # Deployments -> ingest-folder -> Run
        deployment = prefect.get("/deployments/name/ingest-folder/ingest-folder").json()
        made = prefect.post(
            f"/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": {"tenant_id": tenant_id}, "state": {"type": "SCHEDULED"}},
        ).json()
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while not (run := client.read_flow_run(made["id"])).state.is_final():  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert run.state is not None and run.state.is_completed()
    assert re_fullmatch(rf"ingest-{tenant_id}-\d{{8}}-\d{{6}}", run.name)


def re_fullmatch(pattern: str, text: str) -> bool:
    import re

    return re.fullmatch(pattern, text) is not None


def test_ingest_says_what_still_settles_and_waits_for_the_outcomes(
    tmp_path: Path, stack: object
) -> None:
    tenant_id, _ = make_tenant()
    drop(tmp_path / "scans", *good(2))
    drop(tmp_path / "scans", "cut.pdf", documents.truncated(documents.document("X", "pdf")))
    command = [str(Path(sys.executable).parent / "docpipe"), "ingest", str(tmp_path / "scans")]
    command += ["--tenant", tenant_id]

    first = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    assert "0 batches made" in first.stdout
    assert "2 files still settling" in first.stdout

    waited = subprocess.run(
        [*command, "--wait"], capture_output=True, text=True, timeout=300, check=False
    )
    assert waited.returncode == 1, waited.stderr  # one document failed
    assert re_fullmatch(r"1 batch made: \S+", waited.stdout.splitlines()[0])
    assert re_fullmatch(r"batch \S+: Completed", waited.stdout.splitlines()[1])
    assert f"  {good(2)[0]}: Ready" in waited.stdout.splitlines()
    assert "  cut.pdf: ValidationFailed: PDF does not open" in waited.stdout
    helped = subprocess.run(
        [*command[:2], "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "moved away once" in " ".join(helped.stdout.split())
