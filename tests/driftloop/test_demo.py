"""The demo's own arguments (its loop runs in tests/flows/test_loop_decisions.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.demo import run


@pytest.mark.parametrize("play_days", [0, 31])
def test_a_part_of_the_live_days_outside_them_is_refused(
    play_days: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    with pytest.raises(ValueError, match=rf"between 1 and days \(30\), got {play_days}"):
        run(30, 100, None, 0.0, seed=1, play_days=play_days)
    assert not (tmp_path / "lake").exists()  # refused before anything was written
