from __future__ import annotations

import io
import json
import re
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftloop.simulate import (
    FILE_DEFECTS,
    LABEL_COLUMNS,
    ROW_DEFECTS,
    USAGE_COLUMNS,
    SimulationResult,
    days_for_first_model,
    first_model_warning,
    simulate,
    write_truth,
)
from tasks.storage import LocalStorage

EXPECTATIONS = Path(__file__).resolve().parents[2] / "expectations" / "telco_churn"
START = date(2026, 1, 1)


# ---- helpers ------------------------------------------------------------------------------------


@cache
def _suite(name: str) -> list[dict[str, Any]]:
    expectations: list[dict[str, Any]] = json.loads((EXPECTATIONS / name).read_text())[
        "expectations"
    ]
    return expectations


def _rule(suite: str, kind: str, column: str) -> dict[str, Any]:
    for exp in _suite(suite):
        if exp["type"] == kind and exp["kwargs"].get("column") == column:
            kwargs: dict[str, Any] = exp["kwargs"]
            return kwargs
    raise KeyError((kind, column))


def _read(landing: LocalStorage, key: str) -> pd.DataFrame:
    """A landed file as raw values: strings for CSV, Arrow types for Parquet, nulls as None."""
    data = landing.read_bytes(key)
    if key.endswith(".parquet"):
        frame = pq.read_table(io.BytesIO(data)).to_pandas()
        for column in ("date", "churn_date", "reported_date"):
            if column in frame:
                frame[column] = frame[column].map(lambda v: None if v is None else v.isoformat())
    else:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    frame = frame.astype(object)
    return frame.where(frame.notna() & (frame != ""), None)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in ("tenure_months", "dropped_calls", "support_tickets"):
        out[column] = pd.to_numeric(out[column]).astype("int64")
    for column in ("monthly_charge", "minutes", "data_gb", "bill_amount"):
        out[column] = pd.to_numeric(out[column]).astype("float64")
    return out


def _usage(landing: LocalStorage, result: SimulationResult) -> pd.DataFrame:
    keys = [k for k in result.objects if k.startswith("usage/")]
    return pd.concat([_typed(_read(landing, k)) for k in keys], ignore_index=True)


def _labels(landing: LocalStorage, result: SimulationResult) -> pd.DataFrame:
    keys = [k for k in result.objects if k.startswith("labels/")]
    frames = [_read(landing, k).assign(object=k) for k in keys]
    return pd.concat(frames, ignore_index=True)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _row_violations(frame: pd.DataFrame, suite: str) -> np.ndarray:
    """Which rows break any rule of a row suite (a minimal evaluator for the rule types used)."""
    bad = np.zeros(len(frame), dtype=bool)
    for exp in _suite(suite):
        kind, kw = exp["type"], exp["kwargs"]
        if kind == "expect_column_values_to_not_be_null":
            bad |= frame[kw["column"]].isna().to_numpy()
        elif kind == "expect_column_values_to_match_regex":
            pattern = re.compile(kw["regex"])
            bad |= (
                frame[kw["column"]]
                .map(lambda v, p=pattern: v is not None and not p.search(v))
                .to_numpy(bool)
            )
        elif kind == "expect_column_values_to_be_in_set":
            allowed = set(kw["value_set"])
            bad |= (
                frame[kw["column"]]
                .map(lambda v, a=allowed: v is not None and v not in a)
                .to_numpy(bool)
            )
        elif kind == "expect_column_values_to_be_between":
            lo, hi = kw["min_value"], kw["max_value"]
            bad |= (
                frame[kw["column"]]
                .map(
                    lambda v, lo=lo, hi=hi: (
                        v is not None and not (_is_number(v) and lo <= float(v) <= hi)
                    )
                )
                .to_numpy(bool)
            )
        elif kind == "expect_compound_columns_to_be_unique":
            bad |= frame.duplicated(kw["column_list"], keep=False).to_numpy()
        elif kind == "expect_column_values_to_be_unique":
            bad |= frame.duplicated([kw["column"]], keep=False).to_numpy()
        elif kind == "expect_column_pair_values_a_to_be_greater_than_b":
            bad |= (frame[kw["column_A"]] < frame[kw["column_B"]]).to_numpy()
        else:
            raise AssertionError(f"rule type {kind} not covered by the test evaluator")
    return bad


def _run(
    tmp_path: Path, name: str = "landing", **kwargs: Any
) -> tuple[LocalStorage, SimulationResult]:
    landing = LocalStorage(tmp_path / name)
    return landing, simulate(landing, **kwargs)


def _day(key: str) -> date:
    return date.fromisoformat(key.rsplit("/", 1)[1].split(".")[0])


# ---- tests --------------------------------------------------------------------------------------


def test_same_arguments_give_byte_identical_files(tmp_path: Path) -> None:
    args = {"days": 10, "customers": 150, "drift_day": 5, "defect_rate": 0.05, "seed": 3}
    first_landing, first = _run(tmp_path, "a", **args)
    second_landing, second = _run(tmp_path, "b", **args)
    assert first == second
    for key in first.objects:
        assert first_landing.read_bytes(key) == second_landing.read_bytes(key), key
    write_truth(first, tmp_path / "a.jsonl")
    write_truth(second, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_a_different_seed_gives_a_different_world(tmp_path: Path) -> None:
    landing_a, a = _run(tmp_path, "a", days=2, customers=50, seed=1)
    landing_b, b = _run(tmp_path, "b", days=2, customers=50, seed=2)
    assert _usage(landing_a, a).minutes.tolist() != _usage(landing_b, b).minutes.tolist()


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"days": 0}, "days"),
        ({"days": 5, "customers": 9}, "customers"),
        ({"days": 5, "defect_rate": -0.1}, "defect_rate"),
        ({"days": 5, "defect_rate": 0.6}, "defect_rate"),
        ({"days": 5, "drift_day": 5}, "drift_day"),
        ({"days": 5, "drift_day": -1}, "drift_day"),
        ({"days": 5, "label_delay_days": -1}, "label_delay_days"),
        ({"days": 5, "seed": -1}, "seed"),
    ],
)
def test_invalid_arguments_are_rejected(
    tmp_path: Path, kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        simulate(LocalStorage(tmp_path), **kwargs)
    assert not any(tmp_path.iterdir())


def test_one_file_per_day_per_dataset_with_the_declared_columns(tmp_path: Path) -> None:
    calls: list[int] = []
    landing, result = _run(tmp_path, days=6, customers=100, progress=calls.append)
    assert calls == [1, 2, 3, 4, 5, 6]
    assert (result.days, result.drift_day) == (6, None)
    days = [(START + timedelta(days=d)).isoformat() for d in range(6)]
    usage = [k for k in result.objects if k.startswith("usage/")]
    labels = [k for k in result.objects if k.startswith("labels/")]
    assert [k.split("/")[1].split(".")[0] for k in usage] == days
    assert labels == [f"labels/{d}.csv" for d in days]
    assert {k.rsplit(".", 1)[1] for k in usage} == {"csv", "parquet"}
    assert sorted(result.objects) == [o.key for o in landing.list()]
    rows = 0
    for key in usage:
        frame = _read(landing, key)
        assert tuple(frame.columns) == USAGE_COLUMNS
        assert (frame.date == _day(key).isoformat()).all()
        assert frame.customer_id.is_unique
        rows += len(frame)
    for key in labels:
        frame = _read(landing, key)
        assert tuple(frame.columns) == LABEL_COLUMNS
        assert frame.empty  # the default 14-day delay reveals nothing within 6 days
        rows += len(frame)
    assert result.rows_written == rows


def test_parquet_files_carry_the_declared_types(tmp_path: Path) -> None:
    landing, result = _run(tmp_path, days=4, customers=50)
    key = next(k for k in result.objects if k.endswith(".parquet"))
    schema = pq.read_schema(io.BytesIO(landing.read_bytes(key)))
    assert schema.names == list(USAGE_COLUMNS)
    assert schema.field("date").type == pa.date32()
    assert schema.field("customer_id").type == pa.string()
    assert schema.field("tenure_months").type == pa.int64()
    assert schema.field("minutes").type == pa.float64()


@pytest.mark.parametrize("seed", range(6))
def test_both_formats_occur_in_four_days(tmp_path: Path, seed: int) -> None:
    _, result = _run(tmp_path, days=4, customers=10, seed=seed)
    assert {k.rsplit(".", 1)[1] for k in result.objects if k.startswith("usage/")} == {
        "csv",
        "parquet",
    }


def test_churned_customers_stop_and_their_label_arrives_after_the_delay(tmp_path: Path) -> None:
    delay = 5
    landing, result = _run(tmp_path, days=30, customers=1000, label_delay_days=delay)
    usage = _usage(landing, result)
    labels = _labels(landing, result)
    assert len(labels) > 20
    last_seen = usage.groupby("customer_id").date.max()
    first_seen = usage.groupby("customer_id").date.min()
    for label in labels.to_dict("records"):
        churn = date.fromisoformat(label["churn_date"])
        reported = date.fromisoformat(label["reported_date"])
        assert label["object"] == f"labels/{reported.isoformat()}.csv"
        assert reported - churn == timedelta(days=delay)
        # a row on the churn date, none after
        assert last_seen[label["customer_id"]] == churn.isoformat()
    # every disappearance that can already be revealed is labelled
    final = START + timedelta(days=29)
    gone = last_seen[last_seen.map(date.fromisoformat) <= final - timedelta(days=delay)]
    assert set(gone.index) == set(labels.customer_id)
    # ids are never reused: a customer's rows cover one unbroken stretch of days
    span = (last_seen.map(date.fromisoformat) - first_seen.map(date.fromisoformat)).map(
        lambda d: d.days + 1
    )
    assert (usage.groupby("customer_id").size() == span).all()


def test_label_files_before_the_first_reveal_are_header_only(tmp_path: Path) -> None:
    landing, result = _run(tmp_path, days=5, customers=2000, label_delay_days=3)
    for key in [k for k in result.objects if k.startswith("labels/")]:
        frame = _read(landing, key)
        if _day(key) < START + timedelta(days=3):
            assert landing.read_bytes(key) == b"customer_id,churn_date,reported_date\n"
        else:
            assert len(frame) > 0


def test_population_is_stable_and_churn_rate_is_in_band(tmp_path: Path) -> None:
    customers = 2000
    landing, result = _run(tmp_path, days=60, customers=customers, label_delay_days=0, seed=11)
    usage = _usage(landing, result)
    labels = _labels(landing, result)
    active = usage.groupby("date").size()
    assert active.between(0.7 * customers, 1.3 * customers).all()
    churned = labels.groupby("churn_date").size().reindex(active.index, fill_value=0)
    rate = float((churned / active).mean())
    assert 0.003 <= rate <= 0.006, rate


def test_churn_follows_the_documented_risk_factors(tmp_path: Path) -> None:
    landing, result = _run(tmp_path, days=60, customers=2000, label_delay_days=0, seed=5)
    usage = _usage(landing, result)
    churned = set(_labels(landing, result).customer_id)
    first = usage.drop_duplicates("customer_id").set_index("customer_id")
    first["churned"] = first.index.isin(churned)
    by_contract = first.groupby("contract").churned.mean()
    assert by_contract["month_to_month"] > 1.5 * by_contract["two_year"]
    by_payment = first.groupby("payment_method").churned.mean()
    assert by_payment["electronic_check"] > by_payment["bank_transfer"]


def test_reality_change_shifts_usage_and_introduces_flex5g(tmp_path: Path) -> None:
    drift_day = 20
    landing, result = _run(tmp_path, days=40, customers=1000, drift_day=drift_day)
    assert result.drift_day == drift_day
    usage = _usage(landing, result)
    after = usage.date >= (START + timedelta(days=drift_day)).isoformat()
    assert usage.data_gb[after].mean() > 1.2 * usage.data_gb[~after].mean()
    assert usage.minutes[after].mean() < 0.9 * usage.minutes[~after].mean()
    assert not (usage.plan[~after] == "flex5g").any()
    assert (usage.plan[after] == "flex5g").any()
    assert (
        usage[usage.date == (START + timedelta(days=drift_day)).isoformat()].plan == "flex5g"
    ).any()


def test_without_drift_there_is_no_flex5g(tmp_path: Path) -> None:
    landing, result = _run(tmp_path, days=20, customers=500)
    assert not (_usage(landing, result).plan == "flex5g").any()


def test_every_defect_kind_is_injected_and_recorded(tmp_path: Path) -> None:
    landing, result = _run(tmp_path, days=12, customers=300, defect_rate=0.05)
    assert {t["kind"] for t in result.truth} == set(ROW_DEFECTS) | set(FILE_DEFECTS)
    file_level = [t for t in result.truth if t["kind"] in FILE_DEFECTS]
    assert sorted(t["kind"] for t in file_level) == sorted(FILE_DEFECTS)
    broken = {t["object"] for t in file_level}
    assert len(broken) == len(FILE_DEFECTS)
    assert all(t.keys() == {"object", "kind"} for t in file_level)
    assert not any(t["object"] in broken for t in result.truth if t["kind"] in ROW_DEFECTS)
    assert all(o.startswith("usage/") for o in broken)
    for t in file_level:
        _assert_file_defect(landing, t["object"], t["kind"])


def _assert_file_defect(landing: LocalStorage, key: str, kind: str) -> None:
    data = landing.read_bytes(key)
    if kind == "empty_file":
        assert data == b""
    elif kind == "corrupt_parquet":
        assert key.endswith(".parquet") and data
        with pytest.raises(pa.ArrowException):
            pq.read_table(io.BytesIO(data))
    elif kind == "non_utf8_csv":
        assert key.endswith(".csv")
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
    else:
        columns = set(_read(landing, key).columns)
        if kind == "missing_column":
            assert len(columns) == len(USAGE_COLUMNS) - 1 and columns < set(USAGE_COLUMNS)
        else:
            assert len(columns) == len(USAGE_COLUMNS) + 1 and columns > set(USAGE_COLUMNS)


def test_truth_points_at_the_defective_rows(tmp_path: Path) -> None:
    landing, result = _run(tmp_path, days=12, customers=300, defect_rate=0.05, seed=21)
    row_truth = [t for t in result.truth if t["kind"] in ROW_DEFECTS]
    assert len(row_truth) > 50
    broken = {t["object"] for t in result.truth if t["kind"] in FILE_DEFECTS}
    for key in [k for k in result.objects if k.startswith("usage/") and k not in broken]:
        frame = _read(landing, key)
        here = [t for t in row_truth if t["object"] == key]
        for t in here:
            _assert_row_defect(frame, t)
        # the defects are the only rows that break the rules (a duplicate also flags its original)
        expected = {t["row"] for t in here} | {
            t["row"] - 1 for t in here if t["kind"] == "duplicate_row"
        }
        assert set(np.flatnonzero(_row_violations(frame, "usage.rows.json"))) == expected, key


def _assert_row_defect(frame: pd.DataFrame, truth: dict[str, Any]) -> None:
    row = frame.iloc[truth["row"]]
    column, kind = truth["column"], truth["kind"]
    if column != "customer_id":
        assert row.customer_id == truth["customer_id"]
    if column != "date":
        assert row.date == truth["date"] == _day(truth["object"]).isoformat()
    if kind == "duplicate_row":
        assert column is None
        assert frame.iloc[truth["row"] - 1].tolist() == row.tolist()
        return
    value = row[column]
    if kind == "null_required":
        assert value is None
    elif kind == "out_of_range":
        rule = _rule("usage.rows.json", "expect_column_values_to_be_between", column)
        assert not rule["min_value"] <= float(value) <= rule["max_value"]
    elif kind == "unknown_category":
        rule = _rule("usage.rows.json", "expect_column_values_to_be_in_set", column)
        assert value is not None and value not in rule["value_set"]
    elif kind == "wrong_type":
        assert isinstance(value, str) and not _is_number(value)
    else:
        raise AssertionError(kind)


def test_clean_run_passes_every_rule(tmp_path: Path) -> None:
    landing, result = _run(tmp_path, days=10, customers=300, drift_day=4)
    assert result.truth == []
    batch = _suite("usage.batch.json")[0]["kwargs"]["column_set"]
    for key in result.objects:
        frame = _read(landing, key)
        if key.startswith("usage/"):
            assert list(frame.columns) == batch and len(frame) > 0
            assert not _row_violations(frame, "usage.rows.json").any(), key
            assert key.endswith(".parquet") or re.fullmatch(
                r"-?\d+(\.\d{1,4})?", str(frame.minutes.iloc[0])
            )
        else:
            assert not _row_violations(frame, "labels.rows.json").any(), key


def test_write_truth_writes_sorted_json_lines(tmp_path: Path) -> None:
    _, result = _run(tmp_path, days=8, customers=50, defect_rate=0.1)
    path = tmp_path / "out" / "truth.jsonl"
    write_truth(result, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(result.truth) > 0
    for line, entry in zip(lines, result.truth, strict=True):
        assert json.loads(line) == entry
        assert list(json.loads(line)) == sorted(entry)


# ---- how many days a first model needs -----------------------------------------------------------


def test_the_telco_use_case_needs_53_days_for_a_first_model() -> None:
    from driftloop_config.settings import PROJECT_ROOT
    from driftloop_config.usecase import load_usecase

    telco = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
    # 30 days of feature history (first snapshot on day 30), a 7-day horizon and a 7-day label
    # delay (day d knows the labels of snapshots up to d - 13), and 4 + 3 + 3 labelled snapshot
    # days for holdout, validation and training: due on day 52 (0-based), the 53rd day delivered
    assert days_for_first_model(telco) == 53
    assert first_model_warning(53, telco) is None
    assert first_model_warning(60, telco) is None
    warning = first_model_warning(35, telco)
    assert warning is not None
    assert warning.startswith("35 days are too few for a first telco_churn model")
    assert warning.endswith("simulate --days 53 or more")


def test_days_for_a_first_model_agree_with_the_policy_day_by_day(tmp_path: Path) -> None:
    from driftloop_config.usecase import load_usecase
    from tasks.loop_state import LoopState
    from tasks.policy import should_train
    from tests.support.stack import SMALL_LOOP, due_day
    from tests.support.usecases import usecase_with

    small = load_usecase(usecase_with(tmp_path, **SMALL_LOOP))
    assert small.target and small.model
    needed = days_for_first_model(small)
    # the stack tests' first training day is the last of these days
    assert needed == (due_day(small) - START).days + 1
    state = LoopState(first_snapshot=START + timedelta(days=1))
    decide = {
        d: should_train(
            START + timedelta(days=d),
            state,
            target=small.target,
            model=small.model,
            retrain=small.retrain,
        ).train
        for d in (needed - 2, needed - 1)
    }
    assert decide == {needed - 2: False, needed - 1: True}
    assert first_model_warning(needed - 1, small) is not None
    assert first_model_warning(needed, small) is None
