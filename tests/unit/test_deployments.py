"""deployments/prefect.yaml describes the same deployments as deployments/deploy.py."""

from __future__ import annotations

from pathlib import Path

import yaml

from deployments.deploy import DEPLOYMENTS, TAGS
from docpipe.config import Settings

PREFECT_YAML = Path(__file__).resolve().parents[2] / "deployments" / "prefect.yaml"


def test_prefect_yaml_describes_every_deployment_as_deploy_py_does(home: Path) -> None:
    described = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
    defaults = Settings()  # the shipped defaults: `home` cleared the environment's

    def schedule(d: dict[str, object]) -> float | None:
        schedules = d.get("schedules") or []
        assert isinstance(schedules, list)
        return float(schedules[0]["interval"]) if schedules else None

    assert [
        (
            d["name"],
            d["entrypoint"],
            d["work_pool"]["work_queue_name"],
            " ".join(d["description"].split()),
            d["tags"],
            schedule(d),
        )
        for d in described
    ] == [
        (d.name, d.entrypoint, d.queue, d.description, TAGS, d.interval(defaults))
        for d in DEPLOYMENTS
    ]
    assert {d["work_pool"]["name"] for d in described} == {defaults.work_pool}
