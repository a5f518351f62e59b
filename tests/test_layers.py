"""Imports run downward: driftloop/ (CLI and services) → flows/ → tasks/ → driftloop_config/.

The contracts are in pyproject.toml ([tool.importlinter]) and checked by import-linter. Its
console script is run, not ``python -m importlinter.cli``: that module has no ``__main__`` block,
so it would exit 0 without checking anything.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from driftloop_config.settings import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
LAYERS = ["driftloop", "flows", "tasks", "driftloop_config"]


def _lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _layers_contract(config: dict[str, Any]) -> dict[str, Any]:
    contracts = config["tool"]["importlinter"]["contracts"]
    (layers,) = [c for c in contracts if c["type"] == "layers"]
    return dict(layers)


def test_every_import_contract_is_kept() -> None:
    out = _lint_imports()
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_layers_contract_bites(tmp_path: Path) -> None:
    """The contract names the four layers in order, and the checker sees real imports: the
    same contract with the layers upside down is broken."""
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text("utf-8"))
    contract = _layers_contract(config)
    assert contract["layers"] == LAYERS
    assert set(contract) == {"name", "type", "layers"}  # nothing loosens it: no ignore_imports

    root_packages = config["tool"]["importlinter"]["root_packages"]
    upside_down = tmp_path / "upside_down.toml"
    upside_down.write_text(
        "[tool.importlinter]\n"
        f"root_packages = {root_packages!r}\n"
        "[[tool.importlinter.contracts]]\n"
        'name = "upside down"\n'
        'type = "layers"\n'
        f"layers = {LAYERS[::-1]!r}\n",
        "utf-8",
    )
    out = _lint_imports("--config", str(upside_down))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "BROKEN" in out.stdout, out.stdout
