"""The house's shape: imports point one way, and no two layers use one name for two things."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Entry points every runnable module may have.
SHARED_NAMES = {"main"}


def layer_of(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    if parts[0] == "docpipe" and len(parts) > 2:
        return f"docpipe.{parts[1]}"  # api, runtime, migrations
    if parts[0] == "docpipe" and parts[1] in ("cli.py", "client_cli.py", "client.py"):
        return f"docpipe.{parts[1].removesuffix('.py')}"
    return "domain" if parts[0] == "docpipe" else parts[0]


def public_functions() -> dict[str, set[str]]:
    """Each module-level function name, by the layers that define it."""
    layers: dict[str, set[str]] = defaultdict(set)
    for top in ("docpipe", "flows", "tasks", "deployments"):
        for path in (ROOT / top).rglob("*.py"):
            for node in ast.parse(path.read_text()).body:
                if (
                    isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                    and not node.name.startswith("_")
                    and node.name not in SHARED_NAMES
                ):
                    layers[node.name].add(layer_of(path))
    return layers


def test_no_two_layers_define_the_same_function_name() -> None:
    shared = {name: sorted(where) for name, where in public_functions().items() if len(where) > 1}
    assert shared == {}


def test_the_import_contracts_hold() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_contracts_name_every_domain_module() -> None:
    """The exhaustive contract fails on a new module; the others must list it as well."""
    contracts = {
        c["id"]: c
        for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
            "contracts"
        ]
    }
    domain = {f"docpipe.{m}" for m in contracts["docpipe"]["layers"][-1].split(" : ")}
    client = {"docpipe.client", "docpipe.client_cli"}
    on_disk = {f"docpipe.{p.stem}" for p in (ROOT / "docpipe").glob("*.py")} - {
        "docpipe.__init__",
        "docpipe.cli",
        *client,
    }
    assert domain == on_disk
    # The client is above the domain, and barred from every module of the server.
    assert set(contracts["client"]["source_modules"]) == client
    assert domain <= set(contracts["client"]["forbidden_modules"])
    assert set(contracts["layers"]["layers"][-1].split(" : ")) == domain
    assert set(contracts["one-door"]["source_modules"]) == domain - {"docpipe.orchestrator"}
