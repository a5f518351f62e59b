"""Run every benchmark in bench/ and print one summary table of their JSON result lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHES = {
    "P1 ingest+validate 1M rows (csv) ÷ pandas floor": ["ingest_validate.py", "--format", "csv"],
    "P1 ingest+validate 1M rows (parquet) ÷ pandas floor": [
        "ingest_validate.py",
        "--format",
        "parquet",
    ],
}


def main() -> int:
    here = Path(__file__).resolve().parent
    rows = []
    for name, (script, *args) in BENCHES.items():
        proc = subprocess.run(
            [sys.executable, str(here / script), *args], capture_output=True, text=True
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            rows.append((name, "FAILED", proc.stderr.strip().splitlines()[-1:] or [""]))
            continue
        res = json.loads(lines[-1])
        rows.append(
            (name, f"{res['ratio']}x", f"ours {res['driftloop_s']}s vs floor {res['floor_s']}s")
        )
    width = max(len(r[0]) for r in rows)
    for name, ratio, detail in rows:
        print(f"{name:<{width}}  {ratio:>8}  {detail}")
    return 0 if all(r[1] != "FAILED" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
