"""P3: one drift check of 1M current rows x 20 features against a 1M-row reference.

Three figures on the same two frames (15 numeric + 5 categorical features, some of them shifted
in the current frame, a few with missing values and one new category):

1. driftloop, the way production runs it: at training time the reference summary is built
   from the reference frame (``model_input`` + ``numeric_profile`` / ``categorical_profile``,
   the per-feature part of ``tasks.reference.reference_profile``) and stored as JSON; every window,
   the current frame is checked against the stored summary (``tasks.drift.check_window`` +
   ``verdict``: PSI over the stored bins with a sample-size-calibrated threshold, chi-square for
   the categoricals). Both are timed; the check is the figure compared.
2. a plain numpy/pandas floor doing only PSI: quantile bin edges of the reference
   (``np.quantile``), counts with ``np.searchsorted`` + ``np.bincount`` for both frames,
   ``value_counts`` for the categoricals, the same bins and the same epsilon. The PSI values of
   the two must agree (max abs diff printed) so that the ratio compares like with like.
3. Evidently's data-drift preset (``Report([DataDriftPreset()]).run(current, reference)``), in
   its own virtualenv under ``.driftloop/bench-evidently`` (created on first use; Evidently's
   pins do not fit ours). A run computes the reference's statistics and builds the report's
   plots as well, so it is compared with driftloop's reference summary + check + HTML report
   (``tasks.drift_report.drift_report``, also timed on its own). Its methods differ (normed Wasserstein
   distance for numerics, Jensen-Shannon for categoricals at this size): a peer, not a
   like-for-like. ``--evidently-rows`` runs it (and driftloop again, for this ratio) on fewer
   rows; ``--evidently-timeout`` bounds the run (a time-out is reported, with no ratio).

    .venv/bin/python bench/drift.py [--rows 1000000] [--evidently-rows N] [--no-evidently]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from driftloop_config.settings import PROJECT_ROOT, quiet_telemetry

EVIDENTLY_ENV = PROJECT_ROOT / ".driftloop" / "bench-evidently"
# Evidently 0.7.23 does not import with pandas 3; pandas and pyarrow as in our lock
EVIDENTLY_PINS = ["evidently==0.7.23", "pandas==2.3.3", "pyarrow==25.0.1"]
PIP_OPTIONS = ["--quiet", "--retries", "1", "--timeout", "30", "--disable-pip-version-check"]

NUMERIC = [f"n{i:02d}" for i in range(15)]
CATEGORICAL = [f"c{i}" for i in range(5)]


def log(message: str) -> None:
    print(message, flush=True)


# ---- data ---------------------------------------------------------------------------------------


def _categories(rng: np.random.Generator, labels: list[str], p: list[float], n: int) -> np.ndarray:
    return np.asarray(labels, dtype=object)[rng.choice(len(labels), size=n, p=p)]


def make_frame(rows: int, *, current: bool, seed: int) -> pd.DataFrame:
    """One frame of the 20 features; ``current=True`` shifts n00, n01, n04, n11, c0 and c4
    enough to drift (and n09 and c1 a little, not enough to count)."""
    rng = np.random.default_rng(seed + (1 if current else 0))
    s = 1.0 if current else 0.0
    cols: dict[str, np.ndarray] = {
        "n00": rng.normal(50 + 4 * s, 10, rows),  # mean +0.4 sd
        "n01": rng.lognormal(3, 0.8 + 0.2 * s, rows),  # wider
        "n02": rng.exponential(2.0, rows),
        "n03": rng.uniform(0, 100, rows),
        "n04": rng.poisson(3 + 0.8 * s, rows).astype("float64"),  # integers, repeated quantiles
        "n05": rng.gamma(2.0, 3.0, rows),
        "n06": rng.normal(0, 1, rows),
        "n07": rng.beta(2, 5, rows),
        "n08": rng.integers(0, 1000, rows).astype("float64"),
        "n09": rng.normal(100 + 0.3 * s, 15, rows),  # a shift too small to matter
        "n10": rng.normal(0, 1, rows),
        "n11": rng.lognormal(1 + 0.5 * s, 0.5, rows),  # level shift
        "n12": rng.standard_t(5, rows),
        "n13": rng.uniform(-1, 1, rows) ** 3,
        "n14": rng.normal(10, 3, rows).round(1),
    }
    for name, share in (("n06", 0.02), ("n10", 0.05)):  # missing values
        cols[name][rng.random(rows) < share] = np.nan
    plan_p = [0.2, 0.45, 0.25, 0.10] if current else [0.3, 0.4, 0.2, 0.1]
    region_p = np.full(8, 1 / 8) + (np.linspace(-0.004, 0.004, 8) if current else 0)
    zipf = 1.0 / np.arange(1, 31) ** (1.3 if current else 1.0)
    zipf_labels = [f"z{i:02d}" for i in range(30)]
    if current:  # a category the reference never saw
        zipf = np.append(zipf, zipf.sum() * 0.005)
        zipf_labels.append("z_new")
    cats: dict[str, np.ndarray] = {
        "c0": _categories(rng, ["basic", "plus", "premium", "family"], plan_p, rows),
        "c1": _categories(rng, [f"r{i}" for i in range(8)], list(region_p), rows),
        "c2": _categories(rng, ["monthly", "annual", "biennial"], [0.6, 0.3, 0.1], rows),
        "c3": _categories(rng, ["no", "yes"], [0.7, 0.3], rows),
        "c4": _categories(rng, zipf_labels, list(zipf / zipf.sum()), rows),
    }
    cats["c2"][rng.random(rows) < 0.01] = None  # missing categories
    return pd.DataFrame({**cols, **cats})


# ---- driftloop ----------------------------------------------------------------------------------


def ours_reference(frame: pd.DataFrame) -> str:
    """The stored reference summary (JSON text), built like ``reference_profile`` builds it."""
    from tasks.model import FeatureSchema, model_input
    from tasks.reference import categorical_profile, numeric_profile

    schema = FeatureSchema(categorical=tuple(CATEGORICAL), numeric=tuple(NUMERIC), label="y")
    x = model_input(frame, schema)
    profile = {
        "numeric": {c: numeric_profile(x[c]) for c in schema.numeric},
        "categorical": {c: categorical_profile(x[c]) for c in schema.categorical},
    }
    return json.dumps(profile)


def ours_check(stored: str, frame: pd.DataFrame) -> tuple[list[Any], bool, list[str]]:
    """(scores, detected, drifted features) of one window against the stored summary."""
    from driftloop_config.usecase import DriftSpec
    from tasks.drift import check_window, verdict

    spec = DriftSpec()
    scores, prediction = check_window(json.loads(stored), frame, None, spec)
    detected, drifted = verdict(scores, prediction, spec)
    return scores, detected, drifted


# ---- the floor ----------------------------------------------------------------------------------


def floor_psi(p: np.ndarray, q: np.ndarray, eps: float) -> float:
    p = np.clip(p, eps, None)
    q = np.clip(q, eps, None)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum((p - q) * np.log(p / q)))


def floor_reference(frame: pd.DataFrame, bins: int) -> dict[str, Any]:
    ref: dict[str, Any] = {}
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    for c in NUMERIC:
        v = frame[c].to_numpy(dtype="float64")
        v = v[~np.isnan(v)]
        inner = np.unique(np.quantile(v, qs))
        counts = np.bincount(np.searchsorted(inner, v, side="left"), minlength=len(inner) + 1)
        ref[c] = (inner, counts / len(v))
    for c in CATEGORICAL:
        ref[c] = frame[c].value_counts(normalize=True, dropna=True)
    return ref


def floor_check(ref: dict[str, Any], frame: pd.DataFrame, eps: float) -> dict[str, float]:
    out = {}
    for c in NUMERIC:
        inner, p = ref[c]
        v = frame[c].to_numpy(dtype="float64")
        v = v[~np.isnan(v)]
        q = np.bincount(np.searchsorted(inner, v, side="left"), minlength=len(inner) + 1) / len(v)
        out[c] = floor_psi(p, q, eps)
    for c in CATEGORICAL:
        now = frame[c].value_counts(normalize=True, dropna=True)
        before = ref[c]
        cats = before.index.union(now.index)
        out[c] = floor_psi(
            before.reindex(cats, fill_value=0.0).to_numpy(),
            now.reindex(cats, fill_value=0.0).to_numpy(),
            eps,
        )
    return out


# ---- Evidently, in its own virtualenv -----------------------------------------------------------

EVIDENTLY_CHILD = r"""
import json, sys, time
import pandas as pd
import evidently
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

ref_path, cur_path, numeric, categorical = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
reference = pd.read_parquet(ref_path)
current = pd.read_parquet(cur_path)
definition = DataDefinition(
    numerical_columns=numeric.split(","), categorical_columns=categorical.split(",")
)
print(json.dumps({"loaded": len(current)}), flush=True)
# warm-up on a small slice: lazy imports and first-call costs are not the drift computation
Report([DataDriftPreset()]).run(
    Dataset.from_pandas(current.iloc[:2000], data_definition=definition),
    Dataset.from_pandas(reference.iloc[:2000], data_definition=definition),
)
t0 = time.perf_counter()
ref = Dataset.from_pandas(reference, data_definition=definition)
cur = Dataset.from_pandas(current, data_definition=definition)
t_dataset = time.perf_counter() - t0
t0, c0 = time.perf_counter(), time.process_time()
snapshot = Report([DataDriftPreset()]).run(cur, ref)
t_run, c_run = time.perf_counter() - t0, time.process_time() - c0
drifted = None
methods = set()
for metric in snapshot.dict()["metrics"]:
    cfg = metric.get("config", {})
    if cfg.get("type", "").endswith("DriftedColumnsCount"):
        drifted = metric["value"]["count"]
    if cfg.get("method"):
        methods.add(cfg["method"])
print(json.dumps({
    "version": evidently.__version__,
    "dataset_s": t_dataset,
    "run_s": t_run,
    "run_cpu_s": c_run,
    "drifted": drifted,
    "methods": sorted(methods),
}), flush=True)
"""


def evidently_python(work: Path) -> tuple[Path | None, str]:
    """The Evidently virtualenv's python (created on first use), or (None, why not)."""
    python = EVIDENTLY_ENV / "bin" / "python"
    marker = EVIDENTLY_ENV / "installed.json"
    if python.exists() and marker.exists() and json.loads(marker.read_text()) == EVIDENTLY_PINS:
        return python, "ready"
    log(f"creating {EVIDENTLY_ENV.relative_to(PROJECT_ROOT)} ({', '.join(EVIDENTLY_PINS)}) ...")
    shutil.rmtree(EVIDENTLY_ENV, ignore_errors=True)
    install_log = work / "evidently-install.log"
    t0 = time.perf_counter()
    try:
        with open(install_log, "w") as out:
            subprocess.run(
                [sys.executable, "-m", "venv", str(EVIDENTLY_ENV)],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=300,
            )
            subprocess.run(
                [str(python), "-m", "pip", "install", *PIP_OPTIONS, *EVIDENTLY_PINS],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=1200,
            )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        tail = [
            ln
            for ln in install_log.read_text(errors="replace").splitlines()
            if ln.strip() and "is ignored: it is neither a file nor a directory" not in ln
        ][-3:]
        shutil.rmtree(EVIDENTLY_ENV, ignore_errors=True)
        return None, f"{type(exc).__name__}: " + (" | ".join(tail) or str(exc))
    marker.write_text(json.dumps(EVIDENTLY_PINS))
    log(f"  installed in {time.perf_counter() - t0:.0f}s")
    return python, "created"


def run_evidently(
    python: Path, reference: pd.DataFrame, current: pd.DataFrame, work: Path, timeout: float
) -> dict[str, Any]:
    """Time Evidently's drift report in a child process; {'ok': False, 'why': ...} on failure."""
    ref_path, cur_path = work / "reference.parquet", work / "current.parquet"
    reference.to_parquet(ref_path, index=False)
    current.to_parquet(cur_path, index=False)
    script = work / "evidently_child.py"
    script.write_text(EVIDENTLY_CHILD)
    env = {**os.environ, "DO_NOT_TRACK": "1"}
    args = [str(python), str(script), str(ref_path), str(cur_path)]
    args += [",".join(NUMERIC), ",".join(CATEGORICAL)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {
            "ok": False,
            "why": f"timed out after {timeout:.0f}s (child process killed; the limit includes "
            "reading the Parquet files)",
        }
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or len(lines) < 2:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"ok": False, "why": f"exit {proc.returncode}: {tail[0]}"}
    return {"ok": True, "wall_s": time.perf_counter() - t0, **json.loads(lines[-1])}


# ---- main ---------------------------------------------------------------------------------------


def ours_report(stored: str, frame: pd.DataFrame, scores: list[Any], drifted: list[str]) -> str:
    """The check's HTML report (what a person reads), as ``tasks.drift.finish_check`` writes it."""
    from tasks.drift import DriftResult
    from tasks.drift_report import drift_report

    result = DriftResult(
        model="bench",
        model_version="1",
        window=("2026-01-01", "2026-01-01"),
        scores=scores,
        prediction=None,
        detected=bool(drifted),
        drifted=drifted,
    )
    return drift_report(result, json.loads(stored), frame)


def timed_ours(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, Any]:
    t0 = time.perf_counter()
    stored = ours_reference(reference)
    t_ref = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    scores, detected, drifted = ours_check(stored, current)
    t_check, c_check = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    ours_report(stored, current, scores, drifted)
    t_report = time.perf_counter() - t0
    return {
        "reference_s": t_ref,
        "check_s": t_check,
        "check_cpu_s": c_check,
        "report_s": t_report,
        "scores": scores,
        "detected": detected,
        "drifted": drifted,
        "stored": stored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per frame")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--no-evidently", action="store_true", help="skip the Evidently peer")
    parser.add_argument(
        "--evidently-timeout", type=float, default=900.0, help="seconds for the Evidently run"
    )
    parser.add_argument(
        "--evidently-rows",
        type=int,
        default=None,
        help="run Evidently (and, for its ratio, driftloop again) on the first N rows of each "
        "frame instead of all of them",
    )
    args = parser.parse_args()
    quiet_telemetry()
    load_start = os.getloadavg()

    from tasks.drift_stats import EPS
    from tasks.reference import PROFILE_BINS

    t0 = time.perf_counter()
    reference = make_frame(args.rows, current=False, seed=args.seed)
    current = make_frame(args.rows, current=True, seed=args.seed)
    log(
        f"data: {args.rows:,} reference + {args.rows:,} current rows x "
        f"{len(NUMERIC)} numeric + {len(CATEGORICAL)} categorical features, generated in "
        f"{time.perf_counter() - t0:.1f}s"
    )

    # warm-up on a small slice: imports and first-call costs are not the check's
    timed_ours(reference.iloc[:1000], current.iloc[:1000])
    ours = timed_ours(reference, current)
    log(
        f"driftloop: reference summary {ours['reference_s']:.2f}s, check {ours['check_s']:.2f}s, "
        f"HTML report {ours['report_s']:.2f}s -> drift {'detected' if ours['detected'] else 'not detected'}, "
        f"drifted: {', '.join(ours['drifted']) or 'none'}"
    )

    t0 = time.perf_counter()
    fref = floor_reference(reference, PROFILE_BINS)
    t_floor_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    fpsi = floor_check(fref, current, EPS)
    t_floor = time.perf_counter() - t0
    diffs = {s.feature: abs(s.psi - fpsi[s.feature]) for s in ours["scores"]}
    max_diff = max(diffs.values())
    worst = max(diffs, key=lambda k: diffs[k])
    log(
        f"numpy floor: reference {t_floor_ref:.2f}s, check {t_floor:.2f}s; "
        f"PSI max abs diff vs driftloop {max_diff:.2e} ({worst}) over {len(diffs)} features"
    )
    if max_diff > 1e-9:
        print("warning: driftloop and the floor disagree on PSI", file=sys.stderr)
    log(
        f"ratio driftloop/floor: check {ours['check_s'] / t_floor:.2f}x, "
        f"reference summary {ours['reference_s'] / t_floor_ref:.2f}x"
    )

    ev: dict[str, Any] = {"ok": False, "why": "skipped (--no-evidently)"}
    ev_rows = min(args.evidently_rows or args.rows, args.rows)
    ours_at_ev = ours
    if not args.no_evidently:
        with tempfile.TemporaryDirectory(prefix="driftloop-bench-") as tmp:
            python, status = evidently_python(Path(tmp))
            if python is None:
                ev = {
                    "ok": False,
                    "why": f"Evidently environment could not be created (no network?): {status}",
                }
            else:
                ref_ev, cur_ev = reference, current
                if ev_rows < args.rows:
                    ref_ev, cur_ev = reference.iloc[:ev_rows], current.iloc[:ev_rows]
                    ours_at_ev = timed_ours(ref_ev, cur_ev)
                log(f"Evidently DataDriftPreset on {ev_rows:,} + {ev_rows:,} rows ...")
                ev = run_evidently(python, ref_ev, cur_ev, Path(tmp), args.evidently_timeout)
    ratio_ev = None
    if ev["ok"]:
        ours_total = ours_at_ev["reference_s"] + ours_at_ev["check_s"] + ours_at_ev["report_s"]
        ratio_ev = round(ours_total / ev["run_s"], 3)
        log(
            f"Evidently {ev['version']} at {ev_rows:,} rows: report.run {ev['run_s']:.2f}s "
            f"({ev['run_cpu_s']:.1f}s CPU) "
            f"(+ Dataset.from_pandas {ev['dataset_s']:.2f}s; {ev['drifted']:.0f} columns drifted, "
            f"methods: {', '.join(ev['methods'])}); driftloop reference + check + report at that "
            f"size "
            f"{ours_total:.2f}s -> ratio driftloop/Evidently {ratio_ev:.3f}"
        )
    else:
        log(f"Evidently: no figure ({ev['why']})")

    scores = {
        s.feature: {
            "psi": round(s.psi, 5),
            "threshold": round(s.threshold, 5),
            "drifted": s.drifted,
        }
        for s in ours["scores"]
    }
    result = {
        "rows": args.rows,
        "features": len(NUMERIC) + len(CATEGORICAL),
        "ours_s": round(ours["check_s"], 3),
        "ours_cpu_s": round(ours["check_cpu_s"], 3),
        "ours_reference_s": round(ours["reference_s"], 3),
        "ours_report_s": round(ours["report_s"], 3),
        "floor_s": round(t_floor, 3),
        "floor_reference_s": round(t_floor_ref, 3),
        "ratio_floor": round(ours["check_s"] / t_floor, 3),
        "ratio_floor_reference": round(ours["reference_s"] / t_floor_ref, 3),
        "psi_max_abs_diff": max_diff,
        "detected": ours["detected"],
        "drifted": ours["drifted"],
        "scores": scores,
        "stored_reference_bytes": len(ours["stored"]),
        "evidently_rows": ev_rows if ev["ok"] else None,
        "evidently_s": round(ev["run_s"], 3) if ev["ok"] else None,
        "evidently_cpu_s": round(ev["run_cpu_s"], 3) if ev["ok"] else None,
        "evidently_dataset_s": round(ev["dataset_s"], 3) if ev["ok"] else None,
        "evidently_drifted": ev.get("drifted"),
        "evidently_version": ev.get("version"),
        "evidently_note": None if ev["ok"] else ev["why"],
        "ours_total_at_evidently_rows_s": (
            round(sum(ours_at_ev[k] for k in ("reference_s", "check_s", "report_s")), 3)
            if ev["ok"]
            else None
        ),
        "ratio_evidently": ratio_ev,
        "load_avg_start": load_start,
        "load_avg": os.getloadavg(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
