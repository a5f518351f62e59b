"""Run every benchmark in bench/ and print one summary table of their JSON result lines.

.venv/bin/python bench/run_all.py [--quick] [--only P1 P4]    (BENCH_QUICK=1 = --quick)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from driftloop_config.settings import TELEMETRY_OFF

#: One table row from a bench's JSON result: (ratio column, detail column).
Row = Callable[[dict[str, Any]], tuple[str, str]]


def ingest(res: dict[str, Any]) -> tuple[str, str]:
    stages = ", ".join(f"{k} {v}s" for k, v in res["stages_s"].items())
    return (
        f"{res['ratio']}x",
        f"{res['rows']:,} rows: ours {res['driftloop_s']}s ({stages}) vs floor {res['floor_s']}s "
        f"(validate {res['floor_validate_s']}s, {res['feature_rows']:,} rows into SQLite "
        f"{res['floor_online_s']}s); ingest alone ÷ validate floor {res['ratio_validate_only']}x",
    )


def drift(res: dict[str, Any]) -> tuple[str, str]:
    peer = (
        f"Evidently {res['evidently_version']} {res['evidently_s']}s "
        f"at {res['evidently_rows']:,} rows (ours/Evidently {res['ratio_evidently']}x)"
        if res.get("evidently_s") is not None
        else f"Evidently: {res.get('evidently_note')}"
    )
    return (
        f"{res['ratio_floor']}x",
        f"{res['rows']:,} rows: check {res['ours_s']}s vs numpy PSI {res['floor_s']}s "
        f"(reference summary {res['ours_reference_s']}s); {peer}",
    )


def gx(res: dict[str, Any]) -> tuple[str, str]:
    return (
        f"{res['ratio']}x",
        f"{res['rows']:,} rows, {res['batch_rules']} batch + {res['row_rules']} row rules: GX "
        f"{res['driftloop_s']}s (batch {res['gx_batch_s']}s, rows {res['gx_rows_s']}s) vs pandas "
        f"{res['floor_s']}s; same rows flagged: {res['counts_agree']}",
    )


def events(res: dict[str, Any]) -> tuple[str, str]:
    return (
        f"{res['p50_s']}s",
        f"p50 {res['p50_s']}s / p95 {res['p95_s']}s over {res['events']} events "
        f"({res['event']} → {res['deployment']} run Running); automation created the run p50 "
        f"{res['to_created']['p50']}s, worker took it p50 {res['to_pending']['p50']}s",
    )


def training_set(res: dict[str, Any]) -> tuple[str, str]:
    rows_in, rows_out = res["entity_rows"], res["training_frame_rows_out"]
    file_store = (
        f"; duckdb ÷ Feast file store {res['ratio_duckdb_over_file']}x at "
        f"{res['ratio_at_entities']:,} rows"
        if res.get("ratio_duckdb_over_file") is not None
        else ""
    )
    return (
        f"{res['training_frame_s']}s",
        f"rows in {rows_in:,} / out {rows_out:,} / dropped {rows_in - rows_out:,} "
        f"({res['training_frame_null_rows']:,} without features kept as nulls){file_store}; "
        f"fit {res['fit_s']}s",
    )


def online_predict(res: dict[str, Any]) -> tuple[str, str]:
    return (
        f"{res['p99_ms']} ms",
        f"POST /predict p50 {res['p50_ms']} ms / p99 {res['p99_ms']} ms (in process p50 "
        f"{res['inprocess_p50_ms']} ms / p99 {res['inprocess_p99_ms']} ms); batch of "
        f"{res['batch_size']} p50 {res['batch' + str(res['batch_size']) + '_p50_ms']} ms",
    )


def overhead(res: dict[str, Any]) -> tuple[str, str]:
    per = ", ".join(f"{k} {v['flow_s']}s vs {v['plain_s']}s" for k, v in res["per_flow"].items())
    return (
        f"{res['ratio']}x",
        f"{res['rows']:,} rows: flows {res['flows_s']}s vs plain functions {res['plain_s']}s "
        f"(+{res['overhead_s']}s; {per})",
    )


def stack_e2e(res: dict[str, Any]) -> tuple[str, str]:
    spans = "; ".join(
        f"{d} last end +{s['last_end_s']}s" for d, s in res["spans"].items() if s.get("runs")
    )
    return (
        f"{res['total_s']}s",
        f"{res['customers']:,}-row day landed → challenger v{res['decision']['version']} "
        f"{res['decision']['decision']} ({spans})",
    )


def loop_quality(res: dict[str, Any]) -> tuple[str, str]:
    def days(value: int | None) -> str:
        return "-" if value is None else f"{value}d"

    parts = []
    for r in res["scenarios"]:
        change = (
            f"detect {days(r['days_to_detect'])}, recovered "
            f"{days(r['days_to_recovered_champion'])}, alarms before "
            f"{r['alarm_days_before_change']} / after recovery "
            f"{'-' if r['alarm_days_after_recovery'] is None else r['alarm_days_after_recovery']}"
            if r["change"]
            else f"alarm days {r['alarm_days']}"
        )
        parts.append(
            f"{r['scenario']} ({r['live_days']} d): {change}; trained {r['trained']} "
            f"(promoted {r['promoted']}, rejected {r['rejected']}), deferred {r['deferred']}"
        )
    return (f"{len(res['scenarios'])} feeds", "; ".join(parts))


def cli_api(res: dict[str, Any]) -> tuple[str, str]:
    extra = (
        f"; ephemeral server per command (before) {res['ephemeral_s']}s"
        + (f" ({res['ephemeral_error']})" if res.get("ephemeral_error") else "")
        + f", reuse ÷ ephemeral {res['ratio_reuse_ephemeral']}x"
        if "ephemeral_s" in res
        else ""
    )
    stack = f"; with the stack running {res['stack_s']}s" if "stack_s" in res else ""
    return (
        f"{res['ratio_reuse_first']}x",
        f"{res['command']}: first {res['first_s']}s (starts the local API server), reuse "
        f"{res['reuse_s']}s{extra}{stack}",
    )


def import_times(res: dict[str, Any]) -> tuple[str, str]:
    flows = ", ".join(f"{r['flow']} {r['import_s']}s" for r in res["flows"])
    worst = res["worst"]
    heavy = ", ".join(f"{p} {s}s" for p, s in worst["heaviest"][:3])
    return (
        f"{worst['ratio']}x",
        f"import prefect {res['prefect_s']}s; flows: {flows}; slowest {worst['flow']} pulls in "
        f"{heavy}",
    )


#: row name -> (script and full-size arguments, quick arguments, formatter)
BENCHES: dict[str, tuple[list[str], list[str], Row]] = {
    "P1 ingest+validate+materialise 1M-row day ÷ raw floor": (
        ["ingest_validate.py", "--format", "csv"],
        ["--rows", "20000"],
        ingest,
    ),
    "P2 drift 1M x 20 ÷ numpy PSI floor": (
        ["drift.py", "--evidently-rows", "200000"],
        ["--rows", "50000", "--no-evidently"],
        drift,
    ),
    "P3 GX validation ÷ pandas, same checks": (["gx_validate.py"], ["--rows", "50000"], gx),
    "P4 event → flow run Running (p50)": (
        ["events.py", "--events", "20"],
        ["--events", "3", "--warmup", "1"],
        events,
    ),
    "P5 point-in-time training set 1M rows": (
        ["training_set.py", "--file-budget", "120", "--file-timeout", "300"],
        ["--customers", "3000", "--entities", "20000", "--probe-entities", "5000"],
        training_set,
    ),
    "P6 online features + predict p99": (
        ["online_predict.py"],
        ["--customers", "500", "--calls", "100", "--batch-calls", "20", "--warmup", "10"],
        online_predict,
    ),
    "P7 orchestration overhead ÷ stage compute": (
        ["overhead.py"],
        ["--rows", "20000"],
        overhead,
    ),
    "P8 100k-row day landed → challenger decided": (
        ["stack_e2e.py"],
        ["--customers", "2000"],
        stack_e2e,
    ),
    "P9 loop quality: detection, recovery, alarms, trainings": (
        ["loop_quality.py"],
        ["--quick"],
        loop_quality,
    ),
    "P10 CLI command with nothing to do: reuse ÷ first": (
        ["cli_api.py"],
        ["--repeat", "1", "--no-ephemeral"],
        cli_api,
    ),
    "P11 flow module import ÷ import prefect (slowest flow)": (
        ["import_times.py"],
        ["--repeat", "1"],
        import_times,
    ),
}
TIMEOUT = 3600.0  # seconds per bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
        help="small sizes, to check that every bench runs (also BENCH_QUICK=1)",
    )
    parser.add_argument("--only", nargs="*", default=None, help="row prefixes, e.g. P1 P4")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    env = {**os.environ, **TELEMETRY_OFF}
    rows = []
    for name, ((script, *full), quick, row) in BENCHES.items():
        if args.only and not any(name.startswith(p) for p in args.only):
            continue
        argv = [sys.executable, str(here / script), *(quick if args.quick else full)]
        print(f"{name}: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            rows.append((name, "FAILED", f"timed out after {TIMEOUT:.0f}s"))
            continue
        took = time.perf_counter() - t0
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            rows.append((name, "FAILED", (proc.stderr.strip().splitlines()[-1:] or [""])[0]))
            print(proc.stderr[-3000:], file=sys.stderr)
            continue
        print(f"  done in {took:.0f}s: {lines[-1]}", file=sys.stderr, flush=True)
        try:
            rows.append((name, *row(json.loads(lines[-1]))))
        except (KeyError, TypeError, ValueError) as exc:  # keep the other rows
            rows.append((name, "FAILED", f"unreadable result ({exc!r}): {lines[-1][:200]}"))
    width = max(len(r[0]) for r in rows)
    print(
        f"driftloop benchmarks ({'quick' if args.quick else 'full'}), "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end"
    )
    for name, ratio, detail in rows:
        print(f"{name:<{width}}  {ratio:>9}  {detail}")
    return 0 if all(r[1] != "FAILED" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
