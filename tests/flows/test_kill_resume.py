"""kill -9 in the middle of ingest and of the features build, then a rerun: the lake ends
byte-identical to an uninterrupted run, and no temporary file is left anywhere.

The interrupted run is a real flow run in a child process (against the same Prefect API),
killed with SIGKILL as soon as its first output appears (its progress marker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from driftloop.simulate import simulate
from driftloop_config.settings import PROJECT_ROOT, load_settings
from flows.features import FeaturesParams, features_flow
from flows.ingest import IngestParams, ingest_flow
from tasks.storage import Lake, LocalStorage
from tests.support import replaying

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAYS, CUSTOMERS = 8, 300
ZONES = ("validated", "quarantine", "features")


def _lake(root: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(root))
    lake = Lake.from_settings(load_settings())
    simulate(
        lake.landing,
        days=DAYS,
        start=date(2026, 1, 1),
        customers=CUSTOMERS,
        drift_day=None,
        defect_rate=0.03,
        seed=5,
    )
    return lake


def _debris(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.tmp-*"))


def _kill_when(flow: str, root: Path, marker: str) -> None:
    """Run ``flow`` in a child process and SIGKILL it once a file matching ``marker`` exists."""
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "DRIFTLOOP_DATA_ROOT": str(root),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    code = f"from flows.{flow} import {flow}_flow; {flow}_flow()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if any(root.glob(marker)):
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"{flow} ended before its progress marker {marker}"
        assert any(root.glob(marker)), f"{flow} never reached {marker}"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_kill_during_ingest_and_features_then_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the reference: the same landing zone, uninterrupted
    ref = tmp_path / "ref"
    _lake(ref, monkeypatch)
    ingest_flow(IngestParams())
    features_flow(FeaturesParams(materialize=False))
    expected = replaying.zones(ref, ZONES)
    assert any(k.startswith("features/") for k in expected)
    assert any(k.startswith("quarantine/rows/") for k in expected)

    root = tmp_path / "killed"
    lake = _lake(root, monkeypatch)
    _kill_when("ingest", root, "validated/usage/*/*.parquet")
    partial = replaying.zones(root, ZONES)
    assert (
        0
        < len([k for k in partial if k.startswith("validated/")])
        < len([k for k in expected if k.startswith("validated/")])
    ), "the kill did not land in the middle of the ingest"
    # what a kill in the middle of a write leaves: a temporary file of a process that is gone
    leftover = root / "validated" / "usage" / f".x.parquet.tmp-{_dead_pid()}-0f0f"
    leftover.write_bytes(b"half a file")
    ingest_flow(IngestParams())
    assert _debris(root) == []

    _kill_when("features", root, "features/*/*/*.parquet")
    features_flow(FeaturesParams(materialize=False))
    assert _debris(root) == []
    assert replaying.zones(root, ZONES) == expected
    assert isinstance(lake.root, LocalStorage)


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
