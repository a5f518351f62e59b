"""P3: Great Expectations validation of one 1M-row day ÷ plain pandas doing the same checks.

The input is what ingest hands to GX: a simulated usage day (``--rows`` customers, 1% defects)
parsed and cast (``tasks.validate.cast_frame``). Timed for driftloop: the batch suite on the raw
frame (``check_batch``) plus the row suite on the typed rows that cast (``split_rows``, GX with
COMPLETE results, i.e. the unexpected row index of every expectation), through the same
``Validator`` ingest uses, after a warm-up on 1,000 rows (GX's first-call costs are not the
validation). The floor applies the same expectations by hand with pandas on the same frames: the
column set, the row count and the ``mostly`` null shares of the batch suite; then per row rule
the failing positions (nulls, range, set, regex, compound uniqueness). Both must flag the same
rows per rule (checked; a mismatch is printed).

The same two suites also run through a ``Validator(fast=False)``, GX exactly as it ships (no
configuration built once per run): ``as_shipped_s`` is its time, and both must give the same
outcomes rule by rule. Each time is the best of ``--repeat`` runs (small files are noisy).

    .venv/bin/python bench/gx_validate.py [--rows 1000000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from driftloop_config.settings import PROJECT_ROOT, quiet_telemetry
from driftloop_config.usecase import load_usecase


def rule_mask(frame: pd.DataFrame, rule: dict[str, Any]) -> np.ndarray:
    """Rows of ``frame`` that fail one row expectation (plain pandas)."""
    kw, kind = rule["kwargs"], rule["type"]
    if kind == "expect_compound_columns_to_be_unique":
        return frame.duplicated(kw["column_list"], keep=False).to_numpy()
    v = frame[kw["column"]]
    present = v.notna().to_numpy()
    if kind == "expect_column_values_to_not_be_null":
        return ~present
    if kind == "expect_column_values_to_be_between":
        out = (v < kw["min_value"]) | (v > kw["max_value"])
        return out.fillna(False).to_numpy(dtype=bool)
    if kind == "expect_column_values_to_be_in_set":
        return present & ~v.isin(kw["value_set"]).to_numpy()
    if kind == "expect_column_values_to_match_regex":
        matched = v.astype(str).str.contains(re.compile(kw["regex"]), regex=True)
        return present & ~matched.to_numpy(dtype=bool)
    raise ValueError(f"no floor for {kind}")


def floor_batch(raw: pd.DataFrame, suite: dict[str, Any]) -> list[str]:
    failures = []
    for e in suite["expectations"]:
        kw, kind = e["kwargs"], e["type"]
        if kind == "expect_table_columns_to_match_set":
            ok = set(raw.columns) == set(kw["column_set"])
        elif kind == "expect_table_row_count_to_be_between":
            ok = kw["min_value"] <= len(raw) <= kw["max_value"]
        elif kind == "expect_column_values_to_not_be_null":
            ok = raw[kw["column"]].notna().mean() >= kw.get("mostly", 1.0)
        else:
            raise ValueError(f"no floor for {kind}")
        if not ok:
            failures.append(kind)
    return failures


def floor_rows(
    typed: pd.DataFrame, suite: dict[str, Any], prior: dict[int, list[str]]
) -> dict[str, int]:
    from tasks.validate import rule_name

    candidates = typed.drop(index=list(prior))
    return {rule_name(e): int(rule_mask(candidates, e).sum()) for e in suite["expectations"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    quiet_telemetry()
    load_start = os.getloadavg()

    from driftloop.simulate import simulate
    from tasks.ingest import parse_object
    from tasks.storage import LocalStorage
    from tasks.validate import Validator, cast_frame, check_batch, default_validator, split_rows

    usecase = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
    spec = usecase.datasets["usage"]
    batch_suite = usecase.suite(spec.batch_suite)
    row_suite = usecase.suite(spec.row_suite)
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-") as tmp:
        gen = LocalStorage(Path(tmp))
        simulate(gen, days=1, customers=args.rows, defect_rate=0.01, seed=args.seed)
        [landed] = gen.list("usage")
        raw = parse_object(landed.key, gen.read_bytes(landed.key)).reset_index(drop=True)
    typed, prior = cast_frame(raw, spec.columns)

    validator = default_validator()
    as_shipped = Validator(fast=False)
    small_typed, small_prior = cast_frame(raw.iloc[:1000], spec.columns)
    for warm in (validator, as_shipped):
        check_batch(warm, raw.iloc[:1000], batch_suite)  # warm-up
        split_rows(warm, small_typed, row_suite, small_prior)

    def timed(v: Validator) -> tuple[float, float, list[str], Any]:
        t0 = time.perf_counter()
        failures = check_batch(v, raw, batch_suite)
        t_batch = time.perf_counter() - t0
        t0 = time.perf_counter()
        split = split_rows(v, typed, row_suite, prior)
        return t_batch, time.perf_counter() - t0, failures, split

    runs = [(timed(validator), timed(as_shipped)) for _ in range(max(1, args.repeat))]
    t_batch = min(ours[0] for ours, _ in runs)
    t_rows = min(ours[1] for ours, _ in runs)
    t_shipped = min(shipped[0] + shipped[1] for _, shipped in runs)
    (_, _, failures, split), (_, _, shipped_failures, shipped_split) = runs[-1]
    if failures != shipped_failures or split.outcomes != shipped_split.outcomes:
        print("warning: the fast paths and GX as it ships disagree")
    ours_counts = {o.rule: o.unexpected_count for o in split.outcomes}

    t0 = time.perf_counter()
    floor_failures = floor_batch(raw, batch_suite)
    t_floor_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    floor_counts = floor_rows(typed, row_suite, prior)
    t_floor_rows = time.perf_counter() - t0

    mismatch = {
        r: (ours_counts.get(r), floor_counts[r])
        for r in floor_counts
        if ours_counts.get(r) != floor_counts[r]
    }
    if mismatch or bool(failures) != bool(floor_failures):
        print(f"warning: GX and the floor disagree: {mismatch} {failures} {floor_failures}")
    ours, floor = t_batch + t_rows, t_floor_batch + t_floor_rows
    print(
        f"GX validation of {len(raw):,} rows: batch suite {t_batch:.2f}s + row suite "
        f"{t_rows:.2f}s = {ours:.2f}s; pandas floor {t_floor_batch:.2f}s + {t_floor_rows:.2f}s "
        f"= {floor:.2f}s; ratio {ours / floor:.1f}x; {sum(ours_counts.values()):,} unexpected "
        f"values over {len(ours_counts)} rules; GX as it ships {t_shipped:.2f}s",
        flush=True,
    )
    result = {
        "rows": len(raw),
        "row_rules": len(row_suite["expectations"]),
        "batch_rules": len(batch_suite["expectations"]),
        "driftloop_s": round(ours, 2),
        "gx_batch_s": round(t_batch, 2),
        "gx_rows_s": round(t_rows, 2),
        "floor_s": round(floor, 2),
        "as_shipped_s": round(t_shipped, 2),
        "as_shipped_agrees": failures == shipped_failures
        and split.outcomes == shipped_split.outcomes,
        "ratio": round(ours / floor, 1),
        "unexpected": sum(ours_counts.values()),
        "counts_agree": not mismatch,
        "load_avg_start": load_start,
        "load_avg": os.getloadavg(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
