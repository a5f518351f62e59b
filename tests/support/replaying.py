"""The `replay` and `backfill` commands run as a user runs them (``python -m driftloop.cli`` in a
process of its own), killed at random points and resumed, and what a lake holds afterwards in a
form two lakes can be compared by: the data zones' bytes, the registry's versions and aliases,
the recorded day outcomes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from driftloop.replay import OUTCOME_PREFIX
from driftloop_config.settings import PROJECT_ROOT, load_settings

ZONES = ("validated", "quarantine", "features", "predictions")
Registry = list[tuple[str, tuple[str, ...], str | None, str | None]]


def cli(
    args: list[str], env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``driftloop <args>`` in a process of its own, from the project's root."""
    return subprocess.run(
        [sys.executable, "-m", "driftloop.cli", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lake_env(
    root: Path, usecase: Path | None = None, feature_repo: Path | None = None
) -> dict[str, str]:
    """The environment of a CLI process on a new lake at ``root``, on the current Prefect API,
    with the use case and Feast repository given."""
    from prefect.settings import PREFECT_API_URL

    root.mkdir(parents=True)
    env = {
        **os.environ,
        "DRIFTLOOP_DATA_ROOT": str(root),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    if usecase is not None:
        env["DRIFTLOOP_USECASE"] = str(usecase)
    if feature_repo is not None:
        env["DRIFTLOOP_FEATURE_REPO"] = str(feature_repo)
    return env


def copy_lake(src: Path, dst: Path) -> None:
    """A file lake moved: ``src``'s folder copied to ``dst``, with the absolute paths MLflow keeps
    in its tracking store (artifact locations, model sources) pointing into the copy. Feast's
    registry needs nothing: the copy's next features run registers its sources from its own
    settings. ``src`` must not be in use."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    old, new = str(src), str(dst)
    for db in dst.rglob("mlflow.db"):
        with closing(sqlite3.connect(db)) as con, con:
            tables = con.execute("select name from sqlite_master where type='table'").fetchall()
            text = [
                (table, col[1])
                for (table,) in tables
                for col in con.execute(f'pragma table_info("{table}")').fetchall()
                if str(col[2]).upper().startswith(("VARCHAR", "TEXT"))
            ]
            for table, col in text:
                con.execute(
                    f'update "{table}" set "{col}" = replace("{col}", ?, ?) '
                    f'where instr("{col}", ?) > 0',
                    (old, new, old),
                )
            left = [
                f"{table}.{col}"
                for table, col in text
                if con.execute(
                    f'select 1 from "{table}" where instr("{col}", ?) > 0', (old,)
                ).fetchone()
            ]
            assert not left, f"{db}: {left} still name {old}"


def zones(root: Path, names: tuple[str, ...] = ZONES) -> dict[str, object]:
    """Every data file's bytes in the zones ``names`` (the build manifests by what they built:
    their input fingerprints are file stats, which differ between two lakes by nature)."""
    out: dict[str, object] = {}
    for zone in names:
        for p in sorted((root / zone).rglob("*")):
            if not p.is_file() or p.name.startswith("."):
                continue
            key = p.relative_to(root).as_posix()
            if key.startswith("features/_manifests/"):
                out[key] = {d: v["rows"] for d, v in json.loads(p.read_text())["dates"].items()}
            else:
                out[key] = p.read_bytes()
    return out


def registry(env: dict[str, str], name: str) -> Registry:
    """Every registered version: its aliases, and the gate's decision and reason tags."""
    from mlflow import MlflowClient

    settings = load_settings(data_root=env["DRIFTLOOP_DATA_ROOT"], usecase=env["DRIFTLOOP_USECASE"])
    client = MlflowClient(settings.tracking_uri)
    found = [
        client.get_model_version(name, v.version)  # with its aliases
        for v in client.search_model_versions(f"name='{name}'")
    ]
    return sorted(
        (
            v.version,
            tuple(sorted(v.aliases)),
            v.tags.get("driftloop.decision"),
            v.tags.get("driftloop.reason"),
        )
        for v in found
    )


def outcomes(root: Path, name: str) -> list[dict[str, Any]]:
    """The recorded day outcomes without their timings and the runs they started (a day killed
    after its train run registered a version is played again: the version is decided then,
    and that day's train run finds its ``as_of`` trained already)."""
    out = []
    for p in sorted((root / "reports" / OUTCOME_PREFIX / name).glob("*.json")):
        raw = json.loads(p.read_text())
        for key in ("seconds", "stage_seconds", "trainings"):
            raw.pop(key)
        out.append(raw)
    return out


def kill_twice(args: list[str], env: dict[str, str], name: str, *, seed: int) -> int:
    """Start ``driftloop <args>`` twice and kill it (the whole process group, SIGKILL) at a
    random point inside the day after the first it records; the number of kills made."""
    root = Path(env["DRIFTLOOP_DATA_ROOT"])
    rng = random.Random(seed)
    kills = 0
    for _ in range(2):
        before = len(outcomes(root, name))
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftloop.cli", *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and proc.poll() is None:
                if len(outcomes(root, name)) > before:
                    break
                time.sleep(0.2)
            time.sleep(rng.uniform(0.0, 6.0))  # somewhere inside the next day
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return kills
