"""Data tests: every injected defect is caught exactly where it was injected, nothing more,
and nothing defective reaches validated/. Compared row by row with the simulator's truth."""

from __future__ import annotations

import io
from datetime import date, timedelta

import pandas as pd
import pytest

from driftloop.simulate import SimulationResult, simulate
from driftloop_config.settings import PROJECT_ROOT
from driftloop_config.usecase import load_usecase
from tasks.drain import drain
from tasks.ingest import Ledger
from tasks.storage import Lake, LocalStorage, read_parquet
from tasks.validate import cast_frame, default_validator, split_rows

USECASE = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
FILE_REASON = {
    "missing_column": "expect_table_columns_to_match_set",
    "extra_column": "expect_table_columns_to_match_set",
    "empty_file": "empty file",
    "corrupt_parquet": "unreadable Parquet",
    "non_utf8_csv": "not valid UTF-8",
}
ROW_REASON = {
    "null_required": "expect_column_values_to_not_be_null({column})",
    "out_of_range": "expect_column_values_to_be_between({column})",
    "unknown_category": "expect_column_values_to_be_in_set({column})",
    "wrong_type": "wrong_type({column})",
    "duplicate_row": "duplicate_row",
}


def run_world(lake: Lake, days: int, customers: int) -> tuple[SimulationResult, dict[str, dict]]:
    result = simulate(
        lake.landing,
        days=days,
        start=date(2026, 1, 1),
        customers=customers,
        drift_day=days // 2,
        defect_rate=0.05,
        seed=11,
    )
    drain(lake, Ledger(lake.ledger), USECASE, max_bytes=10**9)
    return result, {r["key"]: r for r in Ledger(lake.ledger).all_records()}


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Lake, SimulationResult, dict[str, dict]]:
    from tasks.storage import LocalStorage

    lake = Lake(LocalStorage(tmp_path_factory.mktemp("lake")))
    result, records = run_world(lake, days=12, customers=400)
    return lake, result, records


def _quarantine(lake: Lake) -> pd.DataFrame:
    parts = [read_parquet(lake.quarantine, o.key) for o in lake.quarantine.list("rows")]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def test_every_defect_kind_was_injected(world) -> None:
    _, result, _ = world
    kinds = {t["kind"] for t in result.truth}
    assert kinds == set(FILE_REASON) | set(ROW_REASON)


def test_every_object_is_in_the_ledger(world) -> None:
    lake, result, records = world
    assert set(records) == set(result.objects) == {o.key for o in lake.landing.list()}


def test_file_level_defects_reject_exactly_those_files(world) -> None:
    lake, result, records = world
    file_truth = {t["object"]: t["kind"] for t in result.truth if "row" not in t}
    rejected = {k for k, r in records.items() if r["status"] == "rejected"}
    assert rejected == set(file_truth)
    for key, kind in file_truth.items():
        assert FILE_REASON[kind] in records[key]["reasons"][0], (key, kind, records[key]["reasons"])
        assert lake.quarantine.read_bytes(f"files/{key}") == lake.landing.read_bytes(key)


def test_row_level_quarantine_matches_truth_row_by_row(world) -> None:
    lake, result, _ = world
    q = _quarantine(lake)
    got = {(r["_source_object"], int(r["_row"])): r for r in q.to_dict("records")}
    truth = {(t["object"], t["row"]): t for t in result.truth if "row" in t}
    assert set(got) == set(truth), (
        f"missed {sorted(set(truth) - set(got))[:5]}, false alarms {sorted(set(got) - set(truth))[:5]}"
    )
    for pos, t in truth.items():
        row = got[pos]
        assert row["_reason"] == ROW_REASON[t["kind"]].format(column=t.get("column")), (
            t,
            row["_reason"],
        )
        if t.get("column") != "customer_id":
            assert row["customer_id"] == t["customer_id"], (t, row)
        if t.get("column") != "date":
            assert str(row["date"])[:10] == t["date"], (t, row)


def test_nothing_defective_reaches_validated(world) -> None:
    lake, _, records = world
    spec = USECASE.datasets["usage"]
    parts = [read_parquet(lake.validated, o.key) for o in lake.validated.list("usage")]
    valid = pd.concat(parts, ignore_index=True)
    accepted = [
        r for r in records.values() if r["dataset"] == "usage" and r["status"] != "rejected"
    ]
    assert len(valid) == sum(r["rows_valid"] for r in accepted)
    assert sum(r["rows_total"] for r in accepted) == len(valid) + sum(
        r["rows_quarantined"] for r in accepted
    )
    assert not valid.duplicated(["customer_id", "date"]).any()
    # the row suite, run again over everything in validated/, finds nothing
    typed, wrong = cast_frame(valid.astype("object"), spec.columns)
    assert wrong == {}
    split = split_rows(default_validator(), typed, USECASE.suite(spec.row_suite), {})
    assert split.reasons == {}


def test_labels_arrive_after_the_delay(world, tmp_path) -> None:
    """A labels file is delivered every day, named by its report day, listing the churns of
    exactly ``label_delay_days`` (the default, 14) before it: before the delay has passed the
    files are empty."""
    _, _, records = world
    delay = 14
    labels = {k: r for k, r in records.items() if r["dataset"] == "labels"}
    assert sorted(labels) == [f"labels/2026-01-{d:02d}.csv" for d in range(1, 13)]
    # 12 simulated days, delay 14: no churn can be known yet
    assert {k: r["rows_total"] for k, r in labels.items()} == dict.fromkeys(labels, 0)
    later = Lake(LocalStorage(tmp_path))
    simulate(
        later.landing,
        days=30,
        start=date(2026, 1, 1),
        customers=400,
        seed=11,
        label_delay_days=delay,
    )
    rows = {}
    for info in later.landing.list("labels/"):
        frame = pd.read_csv(io.BytesIO(later.landing.read_bytes(info.key)))
        reported = date.fromisoformat(info.key[len("labels/") : -len(".csv")])
        rows[reported] = len(frame)
        if len(frame):
            assert set(frame["reported_date"]) == {reported.isoformat()}, info.key
            assert set(frame["churn_date"]) == {(reported - timedelta(days=delay)).isoformat()}
    first_known = date(2026, 1, 1) + timedelta(days=delay)
    assert all(n == 0 for d, n in rows.items() if d < first_known)
    assert sum(n for d, n in rows.items() if d >= first_known) > 0


def test_same_outcome_on_s3(lake: Lake, world) -> None:
    """The lake fixture is file:// and s3://; a smaller world gives identical results on both."""
    local_lake, _, _ = world
    result, records = run_world(lake, days=8, customers=120)
    from tasks.storage import LocalStorage

    ref_lake = Lake(LocalStorage(local_lake.root.uri[len("file://") :] + "-ref"))
    ref_result, ref_records = run_world(ref_lake, days=8, customers=120)
    assert result.truth == ref_result.truth

    def strip(rs: dict[str, dict]) -> dict[str, tuple]:
        return {
            k: (r["sha256"], r["status"], r["rows_valid"], r["rows_quarantined"], r["partitions"])
            for k, r in rs.items()
        }

    assert strip(records) == strip(ref_records)
    assert [o.key for o in lake.validated.list()] == [o.key for o in ref_lake.validated.list()]
