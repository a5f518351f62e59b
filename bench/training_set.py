"""P2: point-in-time training set, training and online reads at 1M entity rows.

Four figures on one simulated telco lake:

1. the point-in-time training set of ``--entities`` entity rows (customers x snapshot days, plus
   rows with no feature row in the TTL window) through the feature service, with the DuckDB
   offline store driftloop configures (``tasks.training_set.training_frame``);
2. the same entity rows against Feast's ``file`` (Dask) offline store on the same feature data,
   like for like with a plain DuckDB join (both in a fresh process, timed around
   ``get_historical_features(...).to_df()``): the ratio duckdb / file and the rows each returns.
   The file store is first measured on a ``--probe-entities`` sample; all rows are attempted
   only when the probe projects them to finish within ``--file-timeout`` and ``--max-rss-gb``
   (a join is killed at either), otherwise the largest sample that fits ``--file-budget``
   seconds is measured and the full size projected from the two;
3. ``tasks.model.fit`` on the training set of step 1 (real churn labels) with the following
   snapshot days as the validation split;
4. online reads after materialising into SQLite: p50/p99 of ``online_features`` for 1 and for
   100 customers.

The lake is built the way the pipeline builds it, minus Great Expectations: the simulator's daily
files are parsed and cast like ingest does, written to validated/, and the feature table is built
by ``build_features``.

    .venv/bin/python bench/training_set.py [--customers 35000] [--entities 1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from driftloop_config.settings import quiet_telemetry

SERVICE = "churn_v1"
ROW_ID = "__bench_row"
NO_ROW_KINDS = ("before_first_row", "unknown_id")


def log(message: str) -> None:
    print(message, flush=True)


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000.0, q)), 2)


# ---- the lake -----------------------------------------------------------------------------------


def land_as_validated(gen: Any, lake: Any, usecase: Any) -> int:
    """Parse and cast every simulated file like ingest does and write it to validated/."""
    from tasks.ingest import output_name, parse_object
    from tasks.storage import write_parquet
    from tasks.validate import cast_frame, to_storage_types

    rows = 0
    for info in gen.list():
        spec = usecase.dataset_for_key(info.key)
        raw = parse_object(info.key, gen.read_bytes(info.key))
        if spec is None or raw.empty:
            continue
        typed, reasons = cast_frame(raw, spec.columns)
        if reasons:
            raise RuntimeError(f"{info.key}: {len(reasons)} rows do not cast")
        valid = to_storage_types(typed, spec.columns)
        name = output_name(spec, info.key)
        for day, part in valid.groupby(valid[spec.partition_by].dt.strftime("%Y-%m-%d")):
            key = f"{spec.name}/{spec.partition_by}={day}/{name}.parquet"
            write_parquet(lake.validated, key, part.reset_index(drop=True))
        rows += len(valid)
    return rows


def entity_rows(
    lake: Any, usecase: Any, *, entities: int, validation_days: int, missing: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(entity rows of the training set, entity rows of the validation split).

    Training rows: labelled snapshots from ``entity_frame`` (every customer active on ``s - 1``
    at snapshot ``s``, real churn labels), whole snapshot days from the first on, the last day
    cut to make ``entities`` rows together with the rows that have no feature row in the TTL
    window: customers at a snapshot taken before their first feature row (``before_first_row``)
    and ids the lake has never seen (``unknown_id``), half each, label 0. Validation rows: the
    ``validation_days`` snapshot days after the training rows' last day. A ``kind`` column says
    which rows are which.
    """
    from tasks.ingest import read_validated
    from tasks.training import latest_day
    from tasks.training_set import entity_frame

    target = usecase.target
    usage = usecase.datasets[usecase.features.source_dataset]
    active = read_validated(lake, usage, columns=[usecase.entity, usage.partition_by])
    active = active.rename(columns={usecase.entity: "customer_id", usage.partition_by: "date"})
    labels = read_validated(lake, usecase.datasets[target.labels_dataset])
    as_of = latest_day(lake, usecase)
    assert as_of is not None, "the lake holds no delivered file"
    snaps = entity_frame(
        active,
        labels,
        as_of=as_of,
        horizon_days=target.horizon_days,
        label_delay_days=target.label_delay_days,
    ).rename(columns={"churned": target.name})
    snaps["kind"] = "snapshot"

    rng = np.random.default_rng(seed)
    n_missing = round(entities * missing)
    n_snap = entities - n_missing
    days = snaps["event_timestamp"].drop_duplicates().sort_values().to_list()
    per_day = snaps.groupby("event_timestamp").size()
    cum = per_day.cumsum()
    if cum.iloc[-1] < n_snap:
        raise SystemExit(
            f"the lake holds {cum.iloc[-1]:,} labelled snapshot rows, fewer than {n_snap:,}: "
            "raise --days or --customers"
        )
    last_train = days[int(np.searchsorted(cum.to_numpy(), n_snap))]
    train = snaps.loc[snaps["event_timestamp"] <= last_train].iloc[:n_snap]
    val_days = [d for d in days if d > last_train][:validation_days]
    if len(val_days) < validation_days:
        raise SystemExit(f"no room for {validation_days} validation snapshot days: raise --days")
    validation = snaps.loc[snaps["event_timestamp"].isin(val_days)]

    # customers at a snapshot on or before their first usage day: their first feature row
    # (event_timestamp = first day + 1) is still in the future
    first_day = active.groupby("customer_id")["date"].min()
    first_ts = (pd.to_datetime(first_day) + timedelta(days=1)).dt.tz_localize("UTC")
    train_days = pd.DatetimeIndex([d for d in days if d <= last_train])
    late = first_ts[first_ts > train_days[0]]
    pairs = [(cid, ts) for cid, joined in late.items() for ts in train_days[train_days < joined]]
    n_before = min(len(pairs), n_missing // 2)
    picked: np.ndarray | list[int] = (
        rng.choice(len(pairs), size=n_before, replace=False) if n_before else []
    )
    before = pd.DataFrame([pairs[i] for i in picked], columns=["customer_id", "event_timestamp"])
    before["kind"] = NO_ROW_KINDS[0]
    n_unknown = n_missing - n_before
    unknown = pd.DataFrame(
        {
            "customer_id": [f"X{i:07d}" for i in range(n_unknown)],
            "event_timestamp": rng.choice(np.asarray(train_days), size=n_unknown),
            "kind": NO_ROW_KINDS[1],
        }
    )
    extra = pd.concat([before, unknown], ignore_index=True)
    extra["event_timestamp"] = pd.to_datetime(extra["event_timestamp"], utc=True)
    extra[target.name] = 0
    out = pd.concat([train, extra], ignore_index=True)
    out = out.sort_values(["event_timestamp", "customer_id"], ignore_index=True)
    return out, validation.reset_index(drop=True)


# ---- offline joins in a fresh process -----------------------------------------------------------


def _join_child(config: dict[str, Any], entity_path: str, out_path: str) -> None:
    """Time Feast's point-in-time join of the entity rows in ``entity_path``; write the result."""
    from feast import FeatureStore, RepoConfig

    store = FeatureStore(config=RepoConfig(**config))
    entities = pd.read_parquet(entity_path)
    service = store.get_feature_service(SERVICE)
    t0 = time.perf_counter()
    try:
        result = store.get_historical_features(entity_df=entities, features=service).to_df()
    except Exception as exc:  # reported, not raised: the parent decides what it means
        Path(out_path).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return
    seconds = time.perf_counter() - t0
    np.save(out_path + ".rows.npy", result[ROW_ID].to_numpy(dtype=np.int64))
    nulls = int(result["features_asof"].isna().sum()) if "features_asof" in result else -1
    Path(out_path).write_text(
        json.dumps({"seconds": seconds, "rows": len(result), "null_rows": nulls})
    )


def _rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def _available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return math.inf


def offline_join(
    config: dict[str, Any], entities: pd.DataFrame, work: Path, *, timeout: float, max_rss: float
) -> dict[str, Any]:
    """Run one join in a spawned process, bounded by time and memory."""
    tag = f"{config['offline_store']['type']}-{len(entities)}-{time.monotonic_ns()}"
    entity_path = work / f"entities-{tag}.parquet"
    out_path = work / f"join-{tag}.json"
    entities.drop(columns="kind").to_parquet(entity_path, index=False)
    proc = mp.get_context("spawn").Process(
        target=_join_child, args=(config, str(entity_path), str(out_path))
    )
    proc.start()
    pid = proc.pid
    assert pid is not None  # set by start()
    started, peak, stopped = time.monotonic(), 0.0, None
    while proc.is_alive():
        proc.join(0.5)
        peak = max(peak, _rss_gb(pid))
        if time.monotonic() - started > timeout:
            stopped = f"timeout after {timeout:.0f}s"
        elif peak > max_rss:
            stopped = f"memory above {max_rss:g} GB"
        if stopped and proc.is_alive():
            proc.kill()
            proc.join()
    entity_path.unlink()
    if stopped or proc.exitcode != 0 or not out_path.exists():
        return {
            "ok": False,
            "why": stopped or f"exit code {proc.exitcode}",
            "peak_rss_gb": round(peak, 2),
        }
    result = json.loads(out_path.read_text())
    if "error" in result:
        return {"ok": False, "why": result["error"], "peak_rss_gb": round(peak, 2)}
    returned = np.load(str(out_path) + ".rows.npy")
    kinds = entities["kind"].to_numpy()
    dropped = np.ones(len(entities), dtype=bool)
    dropped[np.searchsorted(entities[ROW_ID].to_numpy(), np.unique(returned))] = False
    result.update(
        ok=True,
        peak_rss_gb=round(peak, 2),
        dropped={k: int((dropped & (kinds == k)).sum()) for k in ("snapshot", *NO_ROW_KINDS)},
    )
    return result


def flat_file_store(settings: Any, work: Path) -> dict[str, Any]:
    """A ``file`` offline store over the same feature files, laid out flat.

    Dask cannot read the partitioned table (the ``date`` column is also the hive partition
    key), so the day files are hard-linked into one folder and a registry of its own points the
    source there. Returns the store's RepoConfig as a dict.
    """
    from feast import FeatureStore, RepoConfig

    from tasks.feature_store import load_repo_objects, repo_config_dict

    flat = work / "flat" / "customer_daily"
    flat.mkdir(parents=True)
    for part in sorted(
        (settings.local_root / "features" / "customer_daily").glob("date=*/*.parquet")
    ):
        os.link(part, flat / f"{part.parent.name.removeprefix('date=')}.parquet")
    state = work / "file_state"
    state.mkdir()
    config = {
        **repo_config_dict(settings),
        "repo_path": str(settings.feature_repo),
        "registry": {"registry_type": "file", "path": str(state / "registry.db")},
        "offline_store": {"type": "file"},
        "online_store": {"type": "sqlite", "path": str(state / "online.db")},
    }
    objects = load_repo_objects(settings.feature_repo)
    for source in objects.data_sources:
        source.file_options.uri = str(flat / "*.parquet")
    FeatureStore(config=RepoConfig(**config)).apply(objects.all())
    return config


def compare_stores(
    settings: Any, entities: pd.DataFrame, label: str, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """DuckDB vs the file store on a probe sample, then on all rows when the probe projects
    that to fit the time and memory limits, else on the largest sample that fits the budget."""
    from tasks.feature_store import repo_config_dict

    duckdb = {**repo_config_dict(settings), "repo_path": str(settings.feature_repo)}
    configs = {"duckdb": duckdb, "file": flat_file_store(settings, work)}
    rows = entities.assign(**{ROW_ID: np.arange(len(entities), dtype=np.int64)})
    rows = rows[["customer_id", "event_timestamp", label, ROW_ID, "kind"]]
    probe = min(args.probe_entities, len(rows))
    runs: dict[int, dict[str, Any]] = {}
    max_rss = min(args.max_rss_gb, 0.8 * _available_gb())  # the machine is shared
    partitioned = offline_join(
        {**duckdb, "offline_store": {"type": "file"}},
        rows.iloc[:1000],
        work,
        timeout=args.file_timeout,
        max_rss=max_rss,
    )
    log(
        "  file offline store on the partitioned feature table: "
        + ("reads it" if partitioned["ok"] else f"fails ({partitioned['why'].splitlines()[-1]})")
    )

    def measure(size: int) -> None:
        sample = (
            rows
            if size == len(rows)
            else rows.sample(n=size, random_state=args.seed).sort_values(ROW_ID)
        )
        runs[size] = {}
        for name in ("duckdb", "file"):
            res = offline_join(
                configs[name], sample, work, timeout=args.file_timeout, max_rss=max_rss
            )
            runs[size][name] = res
            if res["ok"]:
                log(
                    f"  {name:6} offline store, {size:,} entity rows: {res['seconds']:.1f}s, "
                    f"{res['rows']:,} rows out (dropped: {res['dropped']}), "
                    f"peak RSS {res['peak_rss_gb']:.1f} GB"
                )
            else:
                log(f"  {name:6} offline store, {size:,} entity rows: stopped ({res['why']})")

    measure(probe)
    full = len(rows)
    first = runs[probe]["file"]
    if full > probe and first["ok"]:
        scale = full / probe
        fits = (
            first["seconds"] * scale <= args.file_timeout
            and first["peak_rss_gb"] * scale <= max_rss
        )
        if fits:
            measure(full)
        else:
            room = min(args.file_budget / first["seconds"], 0.8 * max_rss / first["peak_rss_gb"])
            step = max(1, probe // 2)
            size = int(probe * room) // step * step
            log(
                f"  the {probe:,}-row probe projects the file store at {full:,} rows to "
                f"~{first['seconds'] * scale:.0f}s and ~{first['peak_rss_gb'] * scale:.0f} GB "
                f"(limits {args.file_timeout:.0f}s, {max_rss:.0f} GB): "
                + (f"measuring {size:,} rows instead" if size > probe else "not attempted")
            )
            if size > probe:
                measure(size)
    done = sorted(n for n, r in runs.items() if r["file"]["ok"])
    projection: dict[str, float] = {}
    if len(done) >= 2 and done[-1] < full:  # straight line through the two largest sizes
        a, b = done[-2], done[-1]
        for key in ("seconds", "peak_rss_gb"):
            for name in ("duckdb", "file"):
                ya, yb = runs[a][name][key], runs[b][name][key]
                projection[f"{name}_{key}"] = round(yb + (yb - ya) / (b - a) * (full - b), 1)
        log(
            f"  projected to {full:,} rows (linear in entity rows): file "
            f"~{projection['file_seconds']:.0f}s / ~{projection['file_peak_rss_gb']:.0f} GB, "
            f"duckdb ~{projection['duckdb_seconds']:.0f}s"
        )
    out: dict[str, Any] = {str(size): run for size, run in sorted(runs.items())}
    out["projected_at_entities"] = projection
    out["max_rss_gb"] = round(max_rss, 1)
    out["file_on_partitioned_table"] = partitioned.get("why", "ok").splitlines()[-1]
    return out


# ---- online reads -------------------------------------------------------------------------------


def online_latency(
    store: Any, ids: np.ndarray, *, batch: int, calls: int, seed: int
) -> dict[str, Any]:
    from tasks.feature_store import online_features

    rng = np.random.default_rng(seed)
    for _ in range(5):  # warm-up: registry cache, SQLite connection
        online_features(
            store, list(rng.choice(ids, size=batch, replace=False)), SERVICE, entity="customer_id"
        )
    samples = []
    nulls = 0
    for _ in range(calls):
        wanted = list(rng.choice(ids, size=batch, replace=False))
        t0 = time.perf_counter()
        df = online_features(store, wanted, SERVICE, entity="customer_id")
        samples.append(time.perf_counter() - t0)
        nulls += int(df["plan"].isna().sum())
    return {
        "entities": batch,
        "calls": calls,
        "p50_ms": percentile_ms(samples, 50),
        "p99_ms": percentile_ms(samples, 99),
        "null_vectors": nulls,
    }


# ---- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=35_000, help="simulated population")
    parser.add_argument("--entities", type=int, default=1_000_000, help="training entity rows")
    parser.add_argument(
        "--days", type=int, default=None, help="simulated days (default: enough for --entities)"
    )
    parser.add_argument("--validation-days", type=int, default=3)
    parser.add_argument(
        "--missing", type=float, default=0.03, help="share of rows with no feature row"
    )
    parser.add_argument("--probe-entities", type=int, default=100_000)
    parser.add_argument("--file-timeout", type=float, default=600.0, help="seconds per join")
    parser.add_argument(
        "--file-budget",
        type=float,
        default=300.0,
        help="seconds for the file store when all rows do not fit the limits",
    )
    parser.add_argument("--max-rss-gb", type=float, default=12.0, help="memory cap per join")
    parser.add_argument("--online-calls", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    quiet_telemetry()
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="driftloop-bench-") as tmp:
        work = Path(tmp)
        os.environ["DRIFTLOOP_DATA_ROOT"] = str(work / "lake")
        os.environ["DRIFTLOOP_STATE_DIR"] = str(work / "state")

        from driftloop.simulate import simulate
        from driftloop_config.settings import load_settings
        from driftloop_config.usecase import load_usecase
        from tasks.feature_store import apply_repo, materialize
        from tasks.features import build_features, latest_feature_timestamp
        from tasks.model import boosting_iterations, fit, predict_scores
        from tasks.storage import Lake, LocalStorage
        from tasks.training import feature_schema
        from tasks.training_set import training_frame

        settings = load_settings()
        usecase = load_usecase(settings.usecase)
        target = usecase.target
        assert target is not None, f"use case {usecase.name!r} defines no target"
        lake = Lake(LocalStorage(settings.local_root))

        # ---- data ----
        label_lag = target.horizon_days - 1 + target.label_delay_days
        snapshot_days = math.ceil(args.entities / (0.95 * args.customers)) + args.validation_days
        days = args.days or snapshot_days + label_lag + 1
        t0 = time.perf_counter()
        gen = LocalStorage(work / "gen")
        simulate(
            gen,
            days=days,
            customers=args.customers,
            seed=args.seed,
            label_delay_days=target.label_delay_days,
        )
        t_sim = time.perf_counter() - t0
        t0 = time.perf_counter()
        validated_rows = land_as_validated(gen, lake, usecase)
        t_land = time.perf_counter() - t0
        t0 = time.perf_counter()
        built = build_features(lake, usecase)
        t_build = time.perf_counter() - t0
        feature_rows = sum(
            int(e["rows"])
            for e in json.loads(
                (
                    settings.local_root / "features" / "_manifests" / "customer_daily.json"
                ).read_text()
            )["dates"].values()
        )
        log(
            f"lake: {args.customers:,} customers x {days} days simulated in {t_sim:.1f}s, "
            f"{validated_rows:,} validated rows in {t_land:.1f}s, {feature_rows:,} feature rows "
            f"({len(built)} days) built in {t_build:.1f}s"
        )
        t0 = time.perf_counter()
        store = apply_repo(settings)
        t_apply = time.perf_counter() - t0

        entities, validation_entities = entity_rows(
            lake,
            usecase,
            entities=args.entities,
            validation_days=args.validation_days,
            missing=args.missing,
            seed=args.seed,
        )
        kinds = {str(k): int(v) for k, v in entities["kind"].value_counts().items()}
        n_days = entities["event_timestamp"].nunique()
        log(
            f"entity rows: {len(entities):,} over {n_days} snapshot days "
            f"({kinds.get('snapshot', 0):,} labelled snapshots, "
            f"{kinds.get(NO_ROW_KINDS[0], 0):,} before the customer's first row, "
            f"{kinds.get(NO_ROW_KINDS[1], 0):,} unknown ids); "
            f"{len(validation_entities):,} validation rows"
        )

        # ---- 1. point-in-time training set through driftloop (DuckDB) ----
        t0 = time.perf_counter()
        frame = training_frame(store, entities.drop(columns="kind"), SERVICE, entity="customer_id")
        t_tf = time.perf_counter() - t0
        rows_out = len(frame)
        null_rows = int(frame["features_asof"].isna().sum())
        log(
            f"training set (duckdb, training_frame): {len(entities):,} rows in -> "
            f"{len(frame):,} out in {t_tf:.1f}s ({null_rows:,} rows without features, as nulls)"
        )

        # ---- 2. duckdb vs file offline store ----
        compared = compare_stores(settings, entities, target.name, work, args)
        largest = max(
            (int(s) for s, r in compared.items() if s.isdigit() and r.get("file", {}).get("ok")),
            default=None,
        )
        ratio = None
        if largest is not None:
            at = compared[str(largest)]
            ratio = round(at["duckdb"]["seconds"] / at["file"]["seconds"], 3)
            log(
                f"offline stores at {largest:,} entity rows: duckdb {at['duckdb']['seconds']:.1f}s "
                f"({at['duckdb']['rows']:,} out) / file {at['file']['seconds']:.1f}s "
                f"({at['file']['rows']:,} out) = ratio {ratio:.3f}"
            )

        # ---- 3. training ----
        t0 = time.perf_counter()
        validation = training_frame(
            store, validation_entities.drop(columns="kind"), SERVICE, entity="customer_id"
        )
        t_val = time.perf_counter() - t0
        schema = feature_schema(store, SERVICE, target.name)
        t0 = time.perf_counter()
        model = fit(frame, validation, schema, seed=args.seed)
        t_fit = time.perf_counter() - t0
        from sklearn.metrics import roc_auc_score

        val_auc = roc_auc_score(validation[target.name], predict_scores(model, validation, schema))
        log(
            f"fit: {len(frame):,} training rows ({frame[target.name].mean():.2%} positive) + "
            f"{len(validation):,} validation rows in {t_fit:.1f}s "
            f"({boosting_iterations(model)} boosting iterations, validation AUC {val_auc:.3f})"
        )
        del frame, validation, model

        # ---- 4. online reads ----
        end = latest_feature_timestamp(lake, "customer_daily")
        assert end is not None, "no feature rows were built"
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Feast's progress lines
            loaded = materialize(store, end)
        t_mat = time.perf_counter() - t0
        last_day = pd.Timestamp(end).tz_localize(None) - pd.Timedelta(days=1)
        from tasks.ingest import read_validated

        assert usecase.features is not None
        usage = usecase.datasets[usecase.features.source_dataset]
        recent = read_validated(lake, usage, first=last_day.date(), columns=["customer_id"])
        ids = recent["customer_id"].astype(str).unique()
        log(f"materialised {len(loaded)} views up to {end:%Y-%m-%d} in {t_mat:.1f}s")
        online = [
            online_latency(store, ids, batch=b, calls=args.online_calls, seed=args.seed)
            for b in (1, 100)
        ]
        for o in online:
            log(
                f"online_features, {o['entities']} entit{'y' if o['entities'] == 1 else 'ies'}: "
                f"p50 {o['p50_ms']} ms, p99 {o['p99_ms']} ms over {o['calls']} calls"
            )

    result = {
        "customers": args.customers,
        "days": days,
        "validated_rows": validated_rows,
        "feature_rows": feature_rows,
        "simulate_s": round(t_sim, 2),
        "land_s": round(t_land, 2),
        "build_features_s": round(t_build, 2),
        "apply_s": round(t_apply, 2),
        "entity_rows": len(entities),
        "entity_kinds": kinds,
        "snapshot_days": n_days,
        "training_frame_s": round(t_tf, 2),
        "training_frame_rows_out": rows_out,
        "training_frame_null_rows": null_rows,
        "stores": compared,
        "ratio_duckdb_over_file": ratio,
        "ratio_at_entities": largest,
        "validation_frame_s": round(t_val, 2),
        "fit_s": round(t_fit, 2),
        "fit_train_rows": len(entities),
        "fit_validation_rows": len(validation_entities),
        "validation_auc": round(float(val_auc), 4),
        "materialize_s": round(t_mat, 2),
        "online": online,
        "load_avg": os.getloadavg(),
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
