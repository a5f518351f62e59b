"""P1: one 1M-row day through ingest + validate + features + materialisation, against a plain
pyarrow/pandas floor.

The floor does the same work by hand: read the file, cast to the schema, find wrong types and
exact duplicates, apply the same null / range / category / pattern / uniqueness rules, write the
valid rows and the quarantined rows as Parquet, and write the day's feature rows (the rows
driftloop built, one per customer) into an online table in SQLite keyed by customer. driftloop
runs ``drain`` (GX batch and row suites, the ledger, JSON and HTML reports), then
``build_features`` (the feature table in the lake), ``apply_repo`` (Feast registry) and
``materialize`` (Feast's SQLite online store). The stages are timed apart and printed.

    .venv/bin/python bench/ingest_validate.py [--rows 1000000] [--format csv|parquet]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from driftloop_config.settings import PROJECT_ROOT, quiet_telemetry
from driftloop_config.usecase import load_usecase


def floor_online(features: pd.DataFrame, entity: str, path: Path) -> int:
    """Write one day's feature rows into a SQLite table keyed by the entity (the online floor)."""
    cols = list(features.columns)
    rows = features.astype(object).where(features.notna(), None)
    for c in rows.columns:  # timestamps as ISO text, like any hand-written store would
        if pd.api.types.is_datetime64_any_dtype(features[c]):
            rows[c] = features[c].astype(str)
    con = sqlite3.connect(path)
    try:
        con.execute(
            f"CREATE TABLE IF NOT EXISTS features ({', '.join(cols)}, PRIMARY KEY ({entity}))"
        )
        with con:
            con.executemany(
                f"INSERT OR REPLACE INTO features VALUES ({', '.join('?' * len(cols))})",
                rows.itertuples(index=False, name=None),
            )
    finally:
        con.close()
    return len(features)


def floor(
    data: bytes, fmt: str, columns: dict[str, str], rules: list[dict], out: Path
) -> tuple[int, int]:
    """Hand-written validation with pandas/pyarrow; returns (valid, quarantined)."""
    if fmt == "csv":
        raw = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
    else:
        raw = pq.read_table(io.BytesIO(data)).to_pandas()
    bad = np.zeros(len(raw), dtype=bool)
    typed = {}
    for name, kind in columns.items():
        col = raw[name]
        if kind in ("int", "float"):
            num = (
                pd.to_numeric(col, errors="coerce")
                if col.dtype == object
                else col.astype("float64")
            )
            bad |= (col.notna() & num.isna()).to_numpy()
            typed[name] = num
        elif kind == "date":
            ts = pd.to_datetime(col, errors="coerce")
            bad |= (col.notna() & ts.isna()).to_numpy()
            typed[name] = ts
        else:
            typed[name] = col
    frame = pd.DataFrame(typed)
    bad |= raw.duplicated(keep="first").to_numpy()
    unique_rules = []
    for rule in rules:
        kw = rule["kwargs"]
        t = rule["type"]
        if t == "expect_column_values_to_not_be_null":
            bad |= frame[kw["column"]].isna().to_numpy()
        elif t == "expect_column_values_to_be_between":
            v = frame[kw["column"]]
            bad |= ((v < kw["min_value"]) | (v > kw["max_value"])).to_numpy()
        elif t == "expect_column_values_to_be_in_set":
            v = frame[kw["column"]]
            bad |= (v.notna() & ~v.isin(kw["value_set"])).to_numpy()
        elif t == "expect_column_values_to_match_regex":
            v = frame[kw["column"]]
            bad |= (v.notna() & ~v.astype(str).str.match(re.compile(kw["regex"]))).to_numpy()
        elif t == "expect_compound_columns_to_be_unique":
            unique_rules.append(kw["column_list"])
    for cols in unique_rules:  # judged among the rows still standing, like driftloop
        standing = ~bad
        dup = frame.loc[standing].duplicated(cols, keep=False).to_numpy()
        bad[np.flatnonzero(standing)[dup]] = True
    valid = frame[~bad]
    quarantined = raw[bad]
    pq.write_table(
        pa.Table.from_pandas(valid, preserve_index=False), out / "valid.parquet", compression="zstd"
    )
    pq.write_table(
        pa.Table.from_pandas(quarantined.astype(str), preserve_index=False),
        out / "q.parquet",
        compression="zstd",
    )
    return len(valid), len(quarantined)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    args = parser.parse_args()
    quiet_telemetry()
    load_start = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="driftloop-bench-") as tmp:
        os.environ["DRIFTLOOP_DATA_ROOT"] = str(Path(tmp) / "lake")
        os.environ["DRIFTLOOP_STATE_DIR"] = str(Path(tmp) / "state")
        from driftloop.simulate import simulate
        from driftloop_config.settings import load_settings
        from tasks.drain import drain
        from tasks.feature_store import apply_repo, materialize
        from tasks.features import build_features, feature_key, latest_feature_timestamp
        from tasks.ingest import Ledger
        from tasks.storage import Lake, LocalStorage, read_parquet
        from tasks.validate import default_validator

        settings = load_settings()
        usecase = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
        spec = usecase.datasets["usage"]
        gen = Lake(LocalStorage(Path(tmp) / "gen"))
        t0 = time.perf_counter()
        simulate(gen.landing, days=1, customers=args.rows, defect_rate=0.01, seed=3)
        t_sim = time.perf_counter() - t0
        [landed] = gen.landing.list("usage")
        frame = (
            pd.read_csv(
                io.BytesIO(gen.landing.read_bytes(landed.key)),
                dtype=str,
                keep_default_na=False,
                na_values=[""],
            )
            if landed.key.endswith(".csv")
            else pq.read_table(io.BytesIO(gen.landing.read_bytes(landed.key))).to_pandas()
        )
        day = landed.key.rsplit("/", 1)[-1][:10]
        if args.format == "csv":
            data = frame.to_csv(index=False).encode()
        else:
            buf = io.BytesIO()
            pq.write_table(
                pa.Table.from_pandas(
                    frame.astype(str).where(frame.notna(), None), preserve_index=False
                ),
                buf,
            )
            data = buf.getvalue()
        key = f"usage/{day}.{args.format}"

        lake = Lake.from_settings(settings)
        lake.landing.write_bytes(key, data)
        default_validator()  # GX import + context: a one-off per worker process, timed apart
        t = {}
        t0 = time.perf_counter()
        ledger = Ledger(lake.ledger)
        [outcome] = drain(lake, ledger, usecase, max_bytes=10**10).outcomes
        t["ingest"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        [built] = build_features(lake, usecase)
        t["features"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        store = apply_repo(settings)
        t["apply"] = time.perf_counter() - t0
        end = latest_feature_timestamp(lake, "customer_daily")
        assert end is not None
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Feast's progress lines
            materialize(store, end)
        t["materialize"] = time.perf_counter() - t0
        t_ours = sum(t.values())
        features = read_parquet(lake.zone("features"), feature_key("customer_daily", built))

        out = Path(tmp) / "floor"
        out.mkdir()
        t0 = time.perf_counter()
        valid, quarantined = floor(
            data,
            args.format,
            dict(spec.columns),
            usecase.suite(spec.row_suite)["expectations"],
            out,
        )
        t_floor_validate = time.perf_counter() - t0
        t0 = time.perf_counter()
        online_rows = floor_online(features, usecase.entity, out / "online.db")
        t_floor_online = time.perf_counter() - t0
        t_floor = t_floor_validate + t_floor_online

    result = {
        "rows": len(frame),
        "format": args.format,
        "simulate_s": round(t_sim, 2),
        "driftloop_s": round(t_ours, 2),
        "stages_s": {k: round(v, 2) for k, v in t.items()},
        "floor_s": round(t_floor, 2),
        "floor_validate_s": round(t_floor_validate, 2),
        "floor_online_s": round(t_floor_online, 2),
        "ratio": round(t_ours / t_floor, 2),
        "ratio_validate_only": round(t["ingest"] / t_floor_validate, 2),
        "driftloop_valid": outcome.rows_valid,
        "driftloop_quarantined": outcome.rows_quarantined,
        "floor_valid": valid,
        "floor_quarantined": quarantined,
        "feature_rows": online_rows,
        "load_avg_start": load_start,
        "load_avg": os.getloadavg(),
    }
    print(
        f"{result['rows']:,} rows ({args.format}): driftloop {t_ours:.2f}s ("
        + ", ".join(f"{k} {v:.2f}s" for k, v in t.items())
        + f"), floor {t_floor:.2f}s (validate {t_floor_validate:.2f}s, {online_rows:,} feature "
        f"rows into SQLite {t_floor_online:.2f}s), ratio {t_ours / t_floor:.2f}x"
    )
    print(json.dumps(result))
    if (outcome.rows_valid, outcome.rows_quarantined) != (valid, quarantined):
        print("warning: driftloop and the floor disagree on the split", file=sys.stderr)


if __name__ == "__main__":
    main()
