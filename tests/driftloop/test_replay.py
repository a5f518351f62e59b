"""The loop driver: its own rules without running flows (which day a feed object belongs to, how
a day's outcome is recorded, settings the flows would not use are refused), and the `replay` and
`backfill` commands on the simulator and on real births data (killed anywhere and resumed, a
replay ends as an uninterrupted one; days already played change nothing; bad ranges and feeds
are named)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from driftloop.replay import (
    DayOutcome,
    TrainingRun,
    day_of_key,
    feed_by_day,
    recorded_outcomes,
    replay,
    summarise,
)
from driftloop.simulate import simulate
from driftloop_config.settings import PROJECT_ROOT, Settings, load_settings
from driftloop_config.usecase import UseCase, load_usecase
from tasks.storage import Lake, LocalStorage
from tests.support import replaying


@pytest.mark.parametrize(
    ("key", "day"),
    [
        ("usage/2026-01-05.csv", date(2026, 1, 5)),
        ("departures/2013-10-07-reexport.csv", date(2013, 10, 7)),
        ("activity/week-2026-01-04.parquet", date(2026, 1, 4)),
        ("archive/2025-12-31/births/1977-10-01.csv", date(1977, 10, 1)),  # the last one counts
        ("births/1977-09-31.csv", None),  # no such day
        ("births/1977-09-31-2026-02-03.csv", date(2026, 2, 3)),
        ("README.md", None),
    ],
)
def test_the_day_of_a_feed_object_is_the_last_date_in_its_key(key: str, day: date | None) -> None:
    assert day_of_key(key) == day


def test_feed_objects_are_grouped_by_day(tmp_path: Path) -> None:
    feed = LocalStorage(tmp_path)
    for key in ("b/2026-01-02.csv", "a/2026-01-02.csv", "a/2026-01-01.csv", "notes.txt"):
        feed.write_bytes(key, b"x\n")
    assert feed_by_day(feed) == {
        date(2026, 1, 1): ["a/2026-01-01.csv"],
        date(2026, 1, 2): ["a/2026-01-02.csv", "b/2026-01-02.csv"],
    }


def test_an_outcome_survives_its_record() -> None:
    outcome = DayOutcome(
        day=date(2013, 10, 15),
        objects=["departures/2013-10-15.csv"],
        rows_validated=977,
        rows_quarantined=4,
        champion="1",
        scored=700,
        drift_status="drift",
        drift_detected=True,
        drift_severity="severe",
        drift_signals=["prediction-drift"],
        drift_drifted=["prediction"],
        trainings=[
            TrainingRun("training.due", "new-labels", "2013-10-15", True, None, "3", False),
            TrainingRun("drift.detected", "drift", "2013-10-15", False, deferred="already"),
        ],
    )
    again = DayOutcome.from_dict(outcome.to_dict())
    assert again == outcome
    assert [t.version for t in again.trained] == ["3"]
    assert [t.deferred for t in again.deferred] == ["already"]
    counts = summarise([again, DayOutcome(day=date(2013, 10, 16), champion="1")])
    assert counts["alarm_days"] == ["2013-10-15"]
    assert (counts["trained"], counts["promoted"], counts["rejected"], counts["deferred"]) == (
        1,
        0,
        1,
        1,
    )


def test_a_replay_refuses_settings_the_flows_would_not_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    settings = load_settings()
    usecase = load_usecase(settings.usecase)
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "another"))
    with pytest.raises(ValueError, match="DRIFTLOOP_DATA_ROOT"):
        replay(
            settings, usecase, LocalStorage(tmp_path / "feed"), date(2026, 1, 1), date(2026, 1, 2)
        )
    assert not (tmp_path / "lake").exists() and not (tmp_path / "another").exists()


# ---- the replay command on the simulator and on real data: resumable, idempotent ----

HISTORY_DAYS, LIVE_DAYS, CUSTOMERS = 20, 6, 600
START_DAY = date(2026, 1, 1)
SHORT: dict[
    str, dict[str, Any]
] = {  # the telco use case with horizons short enough for a model within the live days
    "target": {"horizon_days": 3, "label_delay_days": 2},
    "model": {
        "holdout_days": 2,
        "validation_days": 2,
        "min_history_days": 7,
        "floor": 0.5,
        "bootstrap_samples": 100,
        # a few hundred customers churn a handful a day: evidence minimums to match
        "min_train_positives": 8,
        "min_validation_positives": 4,
        "min_holdout_positives": 4,
    },
    "retrain": {"min_post_change_days": 6, "new_labelled_days": 5},
}


@dataclass(frozen=True)
class History:
    """A feed, the use case it is played with, its backfilled history and its live days."""

    name: str  # the use case's name: its registered model and its outcome folder
    last_history: date
    live: tuple[date, date]

    @property
    def live_days(self) -> int:
        return (self.live[1] - self.live[0]).days + 1

    def environment(self, root: Path) -> dict[str, str]:
        from tests.support.usecases import usecase_with

        if self.name == "telco_churn":
            return {"DRIFTLOOP_USECASE": str(usecase_with(root.parent, **SHORT))}
        return {  # a real use case as shipped, with its example Feast repository
            "DRIFTLOOP_USECASE": str(PROJECT_ROOT / "usecases" / f"{self.name}.yaml"),
            "DRIFTLOOP_FEATURE_REPO": str(PROJECT_ROOT / "examples" / "feature_repos" / self.name),
        }

    def write_feed(self, feed: Path) -> None:
        if self.name == "telco_churn":
            simulate(
                LocalStorage(feed),
                days=HISTORY_DAYS + LIVE_DAYS,
                start=START_DAY,
                customers=CUSTOMERS,
                drift_day=HISTORY_DAYS + 2,
                defect_rate=0.02,
                seed=3,
                label_delay_days=2,
            )
        else:
            from examples import us_low_birth_days as births

            first = self.last_history - timedelta(days=39)
            births.write_feed(LocalStorage(feed), first, self.live[1], defects_from=self.live[0])

    def live_args(self, feed: Path) -> list[str]:
        return ["--feed", str(feed), "--from", str(self.live[0]), "--to", str(self.live[1])]


HISTORIES = {
    # the simulator: the reality change on live day 2, a champion within the live days
    "simulated-telco": History(
        "telco_churn",
        START_DAY + timedelta(days=HISTORY_DAYS - 1),
        (START_DAY + timedelta(days=HISTORY_DAYS), START_DAY + timedelta(days=HISTORY_DAYS + 5)),
    ),
    # real births per US state (few positives, defects and a rejected re-export in the live
    # days), 40 days of history: the first model is trained and promoted in the live days
    "us-births": History(
        "us_low_birth_days", date(1977, 9, 30), (date(1977, 10, 1), date(1977, 10, 15))
    ),
}


def _world(history: History, root: Path, feed: Path) -> dict[str, str]:
    """A lake at ``root`` with the history backfilled from ``feed`` (written the first time);
    the environment the CLI runs in."""
    env = {**replaying.lake_env(root), **history.environment(root)}
    if not feed.exists():
        history.write_feed(feed)
    done = replaying.cli(["backfill", "--feed", str(feed), "--to", str(history.last_history)], env)
    assert done.returncode == 0, done.stderr
    return env


class Backfilled:
    """Each history's feed written and backfilled once per module; a test takes a copy of the
    backfilled lake (:func:`replaying.copy_lake`) and plays its live days on it."""

    def __init__(self, base: pytest.TempPathFactory) -> None:
        self._base = base
        self._made: dict[str, tuple[Path, Path]] = {}

    def feed(self, which: str) -> Path:
        return self._template(which)[1]

    def world(self, which: str, root: Path) -> dict[str, str]:
        """A copy of ``which``'s backfilled lake at ``root``; the environment the CLI runs in."""
        lake, _ = self._template(which)
        env = {**replaying.lake_env(root), **HISTORIES[which].environment(root)}
        replaying.copy_lake(lake, root)
        return env

    def _template(self, which: str) -> tuple[Path, Path]:
        if which not in self._made:
            base = self._base.mktemp(f"backfilled-{which}")
            _world(HISTORIES[which], base / "lake", base / "feed")
            self._made[which] = (base / "lake", base / "feed")
        return self._made[which]


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Backfilled:
    return Backfilled(tmp_path_factory)


def _settings(env: dict[str, str]) -> Settings:
    return load_settings(data_root=env["DRIFTLOOP_DATA_ROOT"], usecase=env["DRIFTLOOP_USECASE"])


def _usecase(env: dict[str, str]) -> UseCase:
    return load_usecase(Path(env["DRIFTLOOP_USECASE"]))


@pytest.mark.slow
@pytest.mark.timeout(1500)  # four replays of the history, two of them killed and resumed
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("which", sorted(HISTORIES))
def test_a_replay_killed_anywhere_and_resumed_ends_as_an_uninterrupted_one(
    which: str, tmp_path: Path, backfilled: Backfilled
) -> None:
    history = HISTORIES[which]
    name = history.name
    feed = backfilled.feed(which)
    whole = backfilled.world(which, tmp_path / "whole" / "lake")
    done = replaying.cli(["replay", *history.live_args(feed)], whole)
    assert done.returncode == 0, done.stderr
    print(done.stdout, done.stderr[-3000:])
    expected = replaying.zones(Path(whole["DRIFTLOOP_DATA_ROOT"]))
    registry = replaying.registry(whole, name)
    outcomes = replaying.outcomes(Path(whole["DRIFTLOOP_DATA_ROOT"]), name)
    # the loop did decide things in these days: a champion, scores, a drift verdict
    assert len(outcomes) == history.live_days
    assert any(v[1] == ("champion",) for v in registry), registry
    played = [o for o in recorded_outcomes(Lake.from_settings(_settings(whole)), _usecase(whole))]
    assert any(o.trained for o in played), played
    assert any(o.drift_status in ("drift", "no-drift") for o in played), played
    assert any(k.startswith("predictions/") for k in expected)

    killed = backfilled.world(which, tmp_path / "killed" / "lake")
    root = Path(killed["DRIFTLOOP_DATA_ROOT"])
    kills = replaying.kill_twice(["replay", *history.live_args(feed)], killed, name, seed=5)
    assert kills >= 2 and len(replaying.outcomes(root, name)) < history.live_days, (
        "the kills came too late"
    )
    done = replaying.cli(["replay", *history.live_args(feed)], killed)
    assert done.returncode == 0, done.stderr
    assert replaying.zones(root) == expected
    assert replaying.registry(killed, name) == registry
    assert replaying.outcomes(root, name) == outcomes

    # a replay over days already played changes nothing and trains nothing
    again = replaying.cli(["replay", *history.live_args(feed)], killed)
    assert again.returncode == 0, again.stderr
    assert replaying.zones(root) == expected and replaying.registry(killed, name) == registry
    assert f"{history.live_days} days" in again.stdout


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.usefixtures("prefect_harness")
def test_a_replay_lands_the_history_before_its_first_day_in_bulk(
    tmp_path: Path, backfilled: Backfilled
) -> None:
    """Replayed from a live day with no backfill, the feed's 20 earlier days are landed in one
    ingest run and one features run first: the lake, the registry and the day outcomes are
    those of an explicit backfill followed by the same replay; run again, nothing is landed."""
    history = HISTORIES["simulated-telco"]
    live = (history.live[0], history.live[0] + timedelta(days=2))
    feed = backfilled.feed("simulated-telco")
    args = ["--feed", str(feed), "--from", str(live[0]), "--to", str(live[1])]
    explicit = backfilled.world("simulated-telco", tmp_path / "explicit" / "lake")
    assert replaying.cli(["replay", *args], explicit).returncode == 0

    root = tmp_path / "auto" / "lake"
    root.mkdir(parents=True)
    auto = {**explicit, "DRIFTLOOP_DATA_ROOT": str(root)}
    done = replaying.cli(["replay", *args], auto)
    assert done.returncode == 0, done.stderr
    before = START_DAY + timedelta(days=HISTORY_DAYS - 1)
    days = [day_of_key(p.name) for p in feed.rglob("*") if p.is_file()]
    history_files = sum(1 for d in days if d is not None and d <= before)
    assert f"history {START_DAY} → {before}: {history_files} files landed in one ingest run" in (
        done.stderr
    )
    built = re.search(r"(\d+) feature days built", done.stderr)
    feature_days = [  # the history's days with feature rows (whole-day defects have none)
        p
        for p in (root / "features" / "customer_daily").glob("date=*")
        if p.name[5:] <= str(before)
    ]
    assert built is not None and int(built[1]) == len(feature_days) > HISTORY_DAYS // 2
    explicit_root = Path(explicit["DRIFTLOOP_DATA_ROOT"])
    assert replaying.zones(root) == replaying.zones(explicit_root)
    assert replaying.outcomes(root, history.name) == replaying.outcomes(explicit_root, history.name)
    assert replaying.registry(auto, history.name) == replaying.registry(explicit, history.name)

    again = replaying.cli(["replay", *args], auto)
    assert again.returncode == 0 and "history" not in again.stderr
    assert replaying.zones(root) == replaying.zones(explicit_root)


def test_a_replay_names_a_feed_without_days_and_a_backwards_range(tmp_path: Path) -> None:
    env = {**os.environ, "DRIFTLOOP_DATA_ROOT": str(tmp_path / "lake")}
    (tmp_path / "lake").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("no days here")
    out = replaying.cli(["replay", "--feed", str(tmp_path / "empty")], env, timeout=120)
    assert out.returncode == 2
    assert "holds no file named with a day (YYYY-MM-DD)" in out.stderr
    assert "Traceback" not in out.stderr
    out = replaying.cli(
        ["replay", "--feed", str(tmp_path / "empty"), "--from", "2026-02-02", "--to", "2026-02-01"],
        env,
        timeout=120,
    )
    assert out.returncode == 2 and "--to 2026-02-01 is before --from 2026-02-02" in out.stderr
    out = replaying.cli(["backfill", "--feed", str(tmp_path / "nowhere")], env, timeout=120)
    assert out.returncode == 2 and "no such folder" in out.stderr
