"""The flow-run image (deploy/Dockerfile) holds what a flow run loads: every package the project
ships, the default Feast repository, every shipped use case's feature builders and suites, and
its build context (deploy/Dockerfile.dockerignore) lets each of them in. Read statically: no
image is built here."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest

from driftloop_config.settings import PROJECT_ROOT
from driftloop_config.usecase import load_usecase

DOCKERFILE = PROJECT_ROOT / "deploy" / "Dockerfile"
IGNORE = PROJECT_ROOT / "deploy" / "Dockerfile.dockerignore"
SHIPPED = sorted((PROJECT_ROOT / "usecases").glob("*.yaml"))


def copied() -> set[str]:
    """The top-level paths the image's COPY lines take from the build context."""
    out: set[str] = set()
    for line in DOCKERFILE.read_text("utf-8").splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            out |= {p.rstrip("/").split("/")[0] for p in parts[1:-1]}
    return out


def in_context(path: str) -> bool:
    """Whether the build context keeps ``path`` (the last matching rule wins, as in Docker)."""
    kept = True
    for raw in IGNORE.read_text("utf-8").splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern):
            kept = negated
    return kept


def needed(usecase_file: Path) -> set[str]:
    """The top-level paths a shipped use case loads: its builders' packages (the example use
    cases' Feast repositories are inside ``examples/`` too), its own folder and its suites'
    folder. The default Feast repository, ``feature_repo/``, is checked with the packages."""
    usecase = load_usecase(usecase_file)
    paths = {t.builder.split(":")[0].split(".")[0] for t in usecase.feature_tables}
    paths.add("usecases")
    paths.add("expectations")
    return paths


def test_every_shipped_package_is_copied_and_in_the_context() -> None:
    wheel = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text("utf-8"))
    packages = set(wheel["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    assert {"driftloop", "driftloop_config", "flows", "tasks", "examples"} <= packages
    base = {"feature_repo", "prefect.yaml", "pyproject.toml", "uv.lock", "README.md"}
    for path in sorted(packages | base):
        assert path in copied(), f"deploy/Dockerfile does not COPY {path}"
        assert in_context(path), f"deploy/Dockerfile.dockerignore keeps {path} out"
    # the rest stays out: a local lake, state, environments
    for path in ("data", ".driftloop", ".venv", "tests", "bench"):
        assert not in_context(path), path


@pytest.mark.parametrize("usecase", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_use_case_finds_what_it_loads_in_the_image(usecase: Path) -> None:
    for path in sorted(needed(usecase)):
        assert path in copied() and in_context(path), (usecase.name, path)
