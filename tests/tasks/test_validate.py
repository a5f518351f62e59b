from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from driftloop.settings import PROJECT_ROOT
from driftloop.usecase import load_usecase
from tasks.validate import (
    cast_column,
    cast_frame,
    check_batch,
    default_validator,
    exact_duplicates,
    rule_name,
    split_rows,
    to_storage_types,
)
from tests.helpers import usage_rows

USECASE = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
USAGE = USECASE.datasets["usage"]


def test_rule_name() -> None:
    assert rule_name(
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}}
    ) == ("expect_column_values_to_not_be_null(x)")
    assert (
        rule_name(
            {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["a", "b"]}}
        )
        == "expect_compound_columns_to_be_unique(a,b)"
    )


def test_cast_column_numbers_and_dates() -> None:
    s = pd.Series(["1", " 2.5", "abc", None, "12,5"])
    out = cast_column(s, "float")
    assert out.tolist()[:2] == [1.0, 2.5] and out.isna().tolist() == [
        False,
        False,
        True,
        True,
        True,
    ]
    ints = cast_column(pd.Series(["3", "3.5", "4.0"]), "int")
    assert ints.isna().tolist() == [False, True, False]
    dates = cast_column(pd.Series(["2026-01-02", "yesterday", None]), "date")
    assert dates.iloc[0] == pd.Timestamp("2026-01-02") and dates.iloc[1:].isna().all()
    native = cast_column(pd.Series(pd.to_datetime(["2026-01-02 13:00"])), "date")
    assert native.iloc[0] == pd.Timestamp("2026-01-02")
    assert cast_column(pd.Series([1, 2]), "float").dtype == np.float64


def test_cast_frame_reports_wrong_types_only_for_non_null_values() -> None:
    raw = usage_rows(3).astype(str)
    raw.loc[1, "minutes"] = "n/a"
    raw.loc[2, "minutes"] = None
    typed, reasons = cast_frame(raw, USAGE.columns)
    assert reasons == {1: ["wrong_type(minutes)"]}
    assert typed["minutes"].isna().tolist() == [False, True, True]


def test_exact_duplicates_keep_first() -> None:
    raw = pd.concat([usage_rows(3), usage_rows(3).iloc[[1]]], ignore_index=True)
    assert exact_duplicates(raw, USAGE.key) == {3: ["duplicate_row"]}
    near = raw.copy()
    near.loc[3, "minutes"] = 99.0  # same key, different values: not an exact copy
    assert exact_duplicates(near, USAGE.key) == {}
    nulls = pd.concat([raw, raw.iloc[[0]].assign(customer_id=None)] * 2, ignore_index=True)
    assert 9 in exact_duplicates(nulls, USAGE.key), "copies with a null key are still copies"


def test_batch_suite_accepts_clean_and_rejects_structural_problems() -> None:
    v = default_validator()
    suite = USECASE.suite(USAGE.batch_suite)
    assert check_batch(v, usage_rows(20), suite) == []
    missing = check_batch(v, usage_rows(20).drop(columns=["region"]), suite)
    assert missing == [
        "expect_table_columns_to_match_set: failed (observed missing columns ['region'])"
    ]
    extra = check_batch(v, usage_rows(20).assign(surprise=1), suite)
    assert extra == [
        "expect_table_columns_to_match_set: failed (observed unexpected columns ['surprise'])"
    ]
    nulls = usage_rows(20)
    nulls.loc[:5, "plan"] = None  # 30 % nulls > the 10 % the batch suite tolerates
    assert any("not_be_null(plan)" in f for f in check_batch(v, nulls, suite))
    assert any("row_count" in f for f in check_batch(v, usage_rows(0), suite))


def test_row_split_names_every_broken_rule() -> None:
    v = default_validator()
    raw = usage_rows(6).astype(str)
    raw.loc[0, "plan"] = "platinum_x"
    raw.loc[1, "minutes"] = "-3"
    raw.loc[2, "customer_id"] = None
    raw.loc[3, "region"] = "atlantis"
    raw.loc[3, "tenure_months"] = "9999"
    typed, prior = cast_frame(raw, USAGE.columns)
    split = split_rows(v, typed, USECASE.suite(USAGE.row_suite), prior)
    assert split.valid_index.tolist() == [4, 5]
    assert split.reasons == {
        0: ["expect_column_values_to_be_in_set(plan)"],
        1: ["expect_column_values_to_be_between(minutes)"],
        2: ["expect_column_values_to_not_be_null(customer_id)"],
        3: [
            "expect_column_values_to_be_in_set(region)",
            "expect_column_values_to_be_between(tenure_months)",
        ],
    }


def test_conflicting_duplicates_are_all_quarantined() -> None:
    v = default_validator()
    raw = usage_rows(3).astype(str)
    conflict = raw.iloc[[0]].copy()
    conflict["minutes"] = "99.0"
    raw = pd.concat([raw, conflict], ignore_index=True)
    typed, prior = cast_frame(raw, USAGE.columns)
    prior.update(exact_duplicates(raw, USAGE.key))
    split = split_rows(v, typed, USECASE.suite(USAGE.row_suite), prior)
    assert sorted(split.reasons) == [0, 3]
    assert all("unique(customer_id,date)" in r[0] for r in split.reasons.values())


def test_prior_reasons_are_not_judged_twice() -> None:
    v = default_validator()
    raw = usage_rows(3).astype(str)
    raw.loc[0, "minutes"] = "abc"
    typed, prior = cast_frame(raw, USAGE.columns)
    split = split_rows(v, typed, USECASE.suite(USAGE.row_suite), prior)
    assert split.reasons == {0: ["wrong_type(minutes)"]}


def test_storage_types() -> None:
    typed, _ = cast_frame(usage_rows(2).astype(str), USAGE.columns)
    out = to_storage_types(typed, USAGE.columns)
    assert str(out["tenure_months"].dtype) == "Int64"
    assert str(out["customer_id"].dtype) == "string"
    assert out["date"].dtype == "datetime64[ns]"


@pytest.mark.parametrize("bad", ["", "not-a-type"])
def test_unknown_column_type(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown column type"):
        cast_column(pd.Series(["x"]), bad)  # type: ignore[arg-type]


def test_casting_never_raises_and_marks_exactly_the_bad_cells() -> None:
    import datetime as dt

    ints = pd.Series(["12", "12.000001", "1e30", "inf", "x", None, " 7 ", "-3"])
    out = cast_column(ints, "int")
    assert out.isna().tolist() == [False, True, True, True, True, True, False, False]
    assert to_storage_types(pd.DataFrame({"n": out}), {"n": "int"})["n"].tolist() == [
        12,
        pd.NA,
        pd.NA,
        pd.NA,
        pd.NA,
        pd.NA,
        7,
        -3,
    ]
    mixed = pd.Series(
        [
            "2026-03-02",
            "2026-03-02T10:00:00+05:00",
            "2026-03-02T23:00:00-05:00",
            "9999-12-31",
            "junk",
            None,
        ]
    )
    assert cast_column(mixed, "date").tolist()[:3] == [
        pd.Timestamp("2026-03-02"),
        pd.Timestamp("2026-03-02"),
        pd.Timestamp("2026-03-03"),
    ]
    assert cast_column(mixed, "date").isna().tolist()[3:] == [True, True, True]
    nested = pd.Series([[1.0, 2.0], "3.5", 4, None, dt.date(2026, 1, 1)], dtype=object)
    assert cast_column(nested, "float").isna().tolist() == [True, False, False, True, True]
    assert cast_column(pd.Series([["a"], "b", 3], dtype=object), "string").tolist() == [
        None,
        "b",
        None,
    ]


def test_batch_failures_lead_with_the_missing_column() -> None:
    raw = usage_rows(5).drop(columns=["minutes", "plan"]).astype(str)
    failures = check_batch(default_validator(), raw, USECASE.suite(USAGE.batch_suite))
    assert len(failures) == 1, failures
    assert failures[0].startswith("expect_table_columns_to_match_set: failed")
    assert "minutes" in failures[0] and "plan" in failures[0]


def test_implausible_dates_use_the_file_day_and_today() -> None:
    from datetime import date

    from driftloop.usecase import DateWindow
    from tasks.validate import implausible_dates

    typed = pd.DataFrame(
        {
            "d": pd.to_datetime(
                ["2026-03-02", "2026-03-02", "2026-03-09", "2199-12-31", "2026-03-01", "1901-01-01"]
            )
        }
    )
    window = DateWindow(max_days_after_today=1, max_days_from_file_day=3)
    got = implausible_dates(typed, {"d": "date"}, "d", window, today=date(2026, 3, 3))
    assert got == {
        2: ["implausible_date(d)"],
        3: ["implausible_date(d)"],
        5: ["implausible_date(d)"],
    }


def test_a_validator_does_not_announce_its_temporary_docs_folder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tasks.validate import Validator

    caplog.set_level(logging.INFO)
    Validator()
    Validator()
    assert [r.getMessage() for r in caplog.records if "temporary directory" in r.getMessage()] == []
