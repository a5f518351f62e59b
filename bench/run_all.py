"""Run every benchmark in bench/ and print one summary table of their JSON result lines."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: One table row from a bench's JSON result: (ratio column, detail column).
Row = Callable[[dict[str, Any]], tuple[str, str]]


def vs_floor(res: dict[str, Any]) -> tuple[str, str]:
    return f"{res['ratio']}x", f"ours {res['driftloop_s']}s vs floor {res['floor_s']}s"


def drift(res: dict[str, Any]) -> tuple[str, str]:
    peer = (
        f"Evidently {res['evidently_version']} {res['evidently_s']}s "
        f"at {res['evidently_rows']:,} rows (ours/Evidently {res['ratio_evidently']}x)"
        if res.get("evidently_s") is not None
        else f"Evidently: {res.get('evidently_note')}"
    )
    return (
        f"{res['ratio_floor']}x",
        f"check {res['ours_s']}s vs numpy PSI {res['floor_s']}s (reference summary "
        f"{res['ours_reference_s']}s); {peer}",
    )


def online_predict(res: dict[str, Any]) -> tuple[str, str]:
    return (
        f"{res['ratio_http_over_inprocess']}x",
        f"p50 {res['p50_ms']} ms / p99 {res['p99_ms']} ms (in process p50 "
        f"{res['inprocess_p50_ms']} ms); batch of 100 p50 {res['batch100_p50_ms']} ms / "
        f"p99 {res['batch100_p99_ms']} ms",
    )


BENCHES: dict[str, tuple[list[str], Row]] = {
    "P1 ingest+validate 1M rows (csv) ÷ pandas floor": (
        ["ingest_validate.py", "--format", "csv"],
        vs_floor,
    ),
    "P1 ingest+validate 1M rows (parquet) ÷ pandas floor": (
        ["ingest_validate.py", "--format", "parquet"],
        vs_floor,
    ),
    "P3 drift check 1M x 20 features ÷ numpy PSI floor": (["drift.py"], drift),
    "P4 POST /predict, 1 customer: HTTP ÷ in process": (["online_predict.py"], online_predict),
}


def main() -> int:
    here = Path(__file__).resolve().parent
    rows = []
    for name, ((script, *args), row) in BENCHES.items():
        proc = subprocess.run(
            [sys.executable, str(here / script), *args], capture_output=True, text=True
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            rows.append((name, "FAILED", (proc.stderr.strip().splitlines()[-1:] or [""])[0]))
            continue
        rows.append((name, *row(json.loads(lines[-1]))))
    width = max(len(r[0]) for r in rows)
    for name, ratio, detail in rows:
        print(f"{name:<{width}}  {ratio:>8}  {detail}")
    return 0 if all(r[1] != "FAILED" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
