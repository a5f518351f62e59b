"""What a flow run pays before its first task: the import of its flow module, in a fresh
interpreter, against the floor of importing Prefect alone (which every flow run needs).

For each flow module: the median wall time of ``import flows.<name>`` over ``--repeat`` fresh
interpreters, its ratio to ``import prefect``, and the heaviest packages it pulls in (cumulative
microseconds from ``python -X importtime``). Prints one table and a JSON line; asserts nothing.

    .venv/bin/python bench/import_times.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ("ingest", "features", "train", "score", "drift", "reconcile")
TIMED = "import time, sys; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def timed_import(module: str) -> float:
    """Seconds to import ``module`` in a fresh interpreter (interpreter start excluded)."""
    out = subprocess.run(
        [sys.executable, "-c", TIMED.format(module=module)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def heaviest(module: str, n: int = 5) -> list[tuple[str, float]]:
    """The ``n`` third-party top-level packages with the largest cumulative import time."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    ours = {"flows", "tasks", "driftloop", "driftloop_config", "examples"}
    found: dict[str, float] = {}
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if not cumulative.strip().isdigit():
            continue
        package = name.strip().split(".")[0]
        if package in ours or package.startswith("_"):
            continue
        found[package] = max(found.get(package, 0.0), int(cumulative) / 1e6)
    return sorted(found.items(), key=lambda kv: -kv[1])[:n]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    floor = statistics.median(timed_import("prefect") for _ in range(args.repeat))
    rows: list[dict[str, Any]] = []
    for name in FLOWS:
        module = f"flows.{name}"
        seconds = statistics.median(timed_import(module) for _ in range(args.repeat))
        rows.append(
            {
                "flow": name,
                "import_s": round(seconds, 2),
                "ratio": round(seconds / floor, 2),
                "heaviest": [(p, round(s, 2)) for p, s in heaviest(module)],
            }
        )
    print(f"import prefect (the floor): {floor:.2f} s, median of {args.repeat}")
    print(f"{'flow module':<18}{'import s':>9}{'÷ prefect':>11}  heaviest packages (cumulative s)")
    for r in rows:
        packages = ", ".join(f"{p} {s}" for p, s in r["heaviest"])
        print(f"flows.{r['flow']:<12}{r['import_s']:>9.2f}{r['ratio']:>10.2f}x  {packages}")
    print(
        json.dumps(
            {
                "prefect_s": round(floor, 2),
                "flows": rows,
                "worst": max(rows, key=lambda r: r["ratio"]),
                "load": round(os.getloadavg()[0], 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
