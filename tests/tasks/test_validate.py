from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from driftloop_config.settings import PROJECT_ROOT
from driftloop_config.usecase import load_usecase
from tasks.validate import (
    ExpectationOutcome,
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


def test_an_empty_csv_cell_keeps_a_date_column_on_the_vectorised_cast(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pandas reads an empty CSV cell of a text column as NaN; that is a missing date, not a
    reason to cast 200k dates one by one."""
    import tasks.validate as validate

    def one_by_one(values: pd.Series, kind: str) -> pd.Series:
        raise AssertionError(f"the value-by-value cast ran for a {kind} column")

    monkeypatch.setattr(validate, "_cast_each", one_by_one)
    raw = pd.Series(["2026-01-02", np.nan, "2026-01-03", "not a date"], dtype=object)
    dates = cast_column(raw, "date")
    assert dates.tolist()[0] == pd.Timestamp("2026-01-02")
    assert dates.tolist()[2] == pd.Timestamp("2026-01-03")
    assert dates.isna().tolist() == [False, True, False, True]


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

    from driftloop_config.usecase import DateWindow
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


# ---- the outcomes, rule by rule -----------------------------------------------------------------


def _defective_usage() -> pd.DataFrame:
    """12 usage rows as delivered (text), with one known defect or two in most rows."""
    raw = usage_rows(12).astype(str)
    raw.loc[0, "plan"] = "platinum_x"
    raw.loc[1, "minutes"] = "-3"
    raw.loc[2, "customer_id"] = None
    raw.loc[3, "region"] = "atlantis"
    raw.loc[3, "tenure_months"] = "9999"
    raw.loc[4, "customer_id"] = "X123"
    raw.loc[5, "minutes"] = "abc"  # does not cast: not judged by GX
    raw.loc[6, "bill_amount"] = None
    raw.loc[6, "data_gb"] = "250"
    raw.loc[7, "customer_id"] = "C0000008"  # row 8's key, other values
    raw.loc[9, "payment_method"] = "cash"
    raw.loc[9, "contract"] = None
    raw.loc[10, "plan"] = None
    return raw


def _outcome(
    rule: str, success: bool, count: int = 0, index: tuple[int, ...] = (), observed: str = ""
) -> ExpectationOutcome:
    return ExpectationOutcome(rule, success, count, index, observed)


def _fine(rule: str) -> ExpectationOutcome:
    return _outcome(rule, True, observed="0 unexpected (0.00%)")


def _one(rule: str, index: int, share: str = "9.09%") -> ExpectationOutcome:
    return _outcome(rule, False, 1, (index,), f"1 unexpected ({share})")


NULL, BETWEEN, IN_SET = (
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
)


def test_row_suite_outcomes_rule_by_rule() -> None:
    """Every row rule's success, unexpected count, row positions (among the 11 rows that cast)
    and observed text, in the order GX reports them (grouped by column), pinned."""
    raw = _defective_usage()
    typed, prior = cast_frame(raw, USAGE.columns)
    split = split_rows(default_validator(), typed, USECASE.suite(USAGE.row_suite), prior)
    assert split.outcomes == [
        _one(f"{NULL}(customer_id)", 2),
        _one("expect_column_values_to_match_regex(customer_id)", 4, "10.00%"),
        _fine(f"{NULL}(date)"),
        _one(f"{NULL}(plan)", 9),
        _one(f"{IN_SET}(plan)", 0, "10.00%"),
        _one(f"{NULL}(contract)", 8),
        _fine(f"{IN_SET}(contract)"),
        _fine(f"{NULL}(tenure_months)"),
        _one(f"{BETWEEN}(tenure_months)", 3),
        _fine(f"{NULL}(region)"),
        _one(f"{IN_SET}(region)", 3),
        _fine(f"{NULL}(payment_method)"),
        _one(f"{IN_SET}(payment_method)", 8),
        _fine(f"{NULL}(monthly_charge)"),
        _fine(f"{BETWEEN}(monthly_charge)"),
        _fine(f"{NULL}(minutes)"),
        _one(f"{BETWEEN}(minutes)", 1),
        _fine(f"{NULL}(data_gb)"),
        _one(f"{BETWEEN}(data_gb)", 5),
        _fine(f"{NULL}(dropped_calls)"),
        _fine(f"{BETWEEN}(dropped_calls)"),
        _fine(f"{NULL}(support_tickets)"),
        _fine(f"{BETWEEN}(support_tickets)"),
        _one(f"{NULL}(bill_amount)", 5),
        _fine(f"{BETWEEN}(bill_amount)"),
        _outcome(
            "expect_compound_columns_to_be_unique(customer_id,date)",
            False,
            2,
            (6, 7),
            "2 unexpected (18.18%)",
        ),
    ]
    assert split.reasons == {
        0: [f"{IN_SET}(plan)"],
        1: [f"{BETWEEN}(minutes)"],
        2: [f"{NULL}(customer_id)"],
        3: [f"{IN_SET}(region)", f"{BETWEEN}(tenure_months)"],
        4: ["expect_column_values_to_match_regex(customer_id)"],
        5: ["wrong_type(minutes)"],
        6: [f"{NULL}(bill_amount)", f"{BETWEEN}(data_gb)"],
        7: ["expect_compound_columns_to_be_unique(customer_id,date)"],
        8: ["expect_compound_columns_to_be_unique(customer_id,date)"],
        9: [f"{NULL}(contract)", f"{IN_SET}(payment_method)"],
        10: [f"{NULL}(plan)"],
    }
    assert split.valid_index.tolist() == [11]


def test_batch_suite_outcomes_rule_by_rule() -> None:
    v = default_validator()
    suite = USECASE.suite(USAGE.batch_suite)
    raw = _defective_usage()
    columns = sorted(USAGE.columns)
    share = "1 unexpected (8.33%)"
    assert v.run(raw, suite, complete=False) == [
        _outcome("expect_table_columns_to_match_set", True, observed=str(columns)),
        _outcome("expect_table_row_count_to_be_between", True, observed="12"),
        _outcome(f"{NULL}(customer_id)", False, 1, observed=share),  # mostly 0.95
        _fine(f"{NULL}(date)"),
        _outcome(f"{NULL}(plan)", True, 1, observed=share),
        _fine(f"{NULL}(minutes)"),
        _outcome(f"{NULL}(bill_amount)", True, 1, observed=share),
    ]
    # a rule about a missing column fails without a count (and comes first)
    reshaped = raw.drop(columns=["plan"]).assign(extra=1)
    assert v.run(reshaped, suite, complete=False)[:2] == [
        _outcome(f"{NULL}(plan)", False),
        _outcome(
            "expect_table_columns_to_match_set",
            False,
            observed="missing columns ['plan'], unexpected columns ['extra']",
        ),
    ]


MIXED_SUITE: dict[str, object] = {
    "name": "mixed",
    "expectations": [
        {"type": BETWEEN, "kwargs": {"column": "minutes", "min_value": 0, "max_value": 35}},
        {
            "type": "expect_column_pair_values_a_to_be_greater_than_b",
            "kwargs": {"column_A": "minutes", "column_B": "tenure_months", "or_equal": True},
        },
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "plan"}},
        {
            "type": "expect_compound_columns_to_be_unique",
            "kwargs": {"column_list": ["plan", "contract"]},
        },
        {"type": IN_SET, "kwargs": {"column": "plan", "value_set": ["basic"], "mostly": 0.2}},
        {"type": NULL, "kwargs": {"column": "contract"}},
    ],
}
MIXED_OUTCOMES = [
    _outcome(f"{BETWEEN}(minutes)", False, 7, (1, 5, 6, 7, 8, 9, 10), "7 unexpected (63.64%)"),
    _outcome(
        "expect_column_pair_values_a_to_be_greater_than_b(minutes,tenure_months)",
        False,
        2,
        (1, 3),
        "2 unexpected (18.18%)",
    ),
    _outcome(
        "expect_compound_columns_to_be_unique(plan,contract)",
        False,
        7,
        (2, 3, 4, 5, 6, 7, 10),
        "7 unexpected (63.64%)",
    ),
    _outcome(
        "expect_column_values_to_be_unique(plan)",
        False,
        9,
        (1, 2, 3, 4, 5, 6, 7, 8, 10),
        "9 unexpected (90.00%)",
    ),
    _outcome(f"{IN_SET}(plan)", True, 8, (0, 1, 2, 3, 5, 6, 8, 10), "8 unexpected (80.00%)"),
    _one(f"{NULL}(contract)", 8),
]


def test_a_run_by_column_is_one_run_over_the_whole_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Column pairs, column lists, ``mostly``, several rules on one column: validated one column
    set at a time, the outcomes (and their order) are those of one run over every column."""
    from tasks.validate import Validator

    v = default_validator()
    typed, prior = cast_frame(_defective_usage(), USAGE.columns)
    candidates = typed.drop(index=list(prior))
    whole = v.run(candidates, MIXED_SUITE, complete=True)
    runs: list[list[str]] = []
    validate = Validator._validate

    def counted(self: Validator, frame: pd.DataFrame, *args: object) -> list[object]:
        runs.append(list(frame.columns))
        return validate(self, frame, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Validator, "_validate", counted)
    assert v.run(candidates, MIXED_SUITE, complete=True, by_column=True) == whole
    assert whole == MIXED_OUTCOMES
    assert runs == [
        ["minutes"],
        ["minutes", "tenure_months"],
        ["plan"],
        ["plan", "contract"],
        ["contract"],
    ]


def test_a_run_by_column_falls_back_to_one_run_when_a_rule_needs_more() -> None:
    """A table rule, or a rule about a column the frame lacks: one run over the whole frame."""
    v = default_validator()
    typed, prior = cast_frame(_defective_usage(), USAGE.columns)
    candidates = typed.drop(index=list(prior))
    expectations = list(MIXED_SUITE["expectations"])  # type: ignore[call-overload]
    table = {
        "type": "expect_table_row_count_to_be_between",
        "kwargs": {"min_value": 1, "max_value": 5},
    }
    missing = {"type": NULL, "kwargs": {"column": "nowhere"}}
    suite = {"name": "more", "expectations": [table, *expectations, missing]}
    outcomes = v.run(candidates, suite, complete=True, by_column=True)
    assert outcomes == v.run(candidates, suite, complete=True)
    # GX reports the rule it could not evaluate first, then the rules without a ``column``;
    # its error text is empty today: GX files a failed metric as a dict of per-metric
    # infos, without the top-level ``raised_exception`` that ExpectationOutcome reads
    assert outcomes[:2] == [
        _outcome(f"{NULL}(nowhere)", False),
        _outcome("expect_table_row_count_to_be_between", False, observed="11"),
    ]


def test_a_fast_run_gives_what_gx_as_it_ships_gives() -> None:
    """Each expectation's configuration built once per run: the shipped telco suites (batch on
    the delivered rows, row suite on the rows that cast, with and without the run by column) and
    the mixed suite give GX's own outcomes rule by rule, with 4x (up to 9x) fewer builds; GX's property
    is back after every run."""
    from great_expectations.expectations.expectation import Expectation

    from tasks.validate import Validator

    shipped = Expectation.__dict__["configuration"]
    builds = [0]

    def counted(expectation: Expectation) -> object:
        builds[0] += 1
        return shipped.fget(expectation)

    raw = _defective_usage()
    typed, prior = cast_frame(raw, USAGE.columns)
    candidates = typed.drop(index=list(prior))
    labels = USECASE.datasets["labels"]
    cases = [
        (raw, USECASE.suite(USAGE.batch_suite), False, False),
        (candidates, USECASE.suite(USAGE.row_suite), True, False),
        (candidates, USECASE.suite(USAGE.row_suite), True, True),
        (candidates, MIXED_SUITE, True, True),
        (raw.iloc[:0], USECASE.suite(labels.batch_suite), False, False),  # missing columns
    ]
    fast, as_shipped = Validator(), Validator(fast=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Expectation, "configuration", property(counted))
        counting = Expectation.__dict__["configuration"]
        for frame, suite, complete, by_column in cases:
            builds[0] = 0
            expected = as_shipped.run(frame, suite, complete=complete, by_column=by_column)
            slow_builds = builds[0]
            builds[0] = 0
            assert fast.run(frame, suite, complete=complete, by_column=by_column) == expected
            assert Expectation.__dict__["configuration"] is counting
            rules = len(suite["expectations"])
            assert builds[0] <= 16 * rules and 4 * builds[0] < slow_builds, (suite["name"], builds)
    assert Expectation.__dict__["configuration"] is shipped
    assert len(expected) == 3 and not expected[0].success  # the labels batch suite failed


def test_concurrent_first_calls_share_one_validator(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow's tasks ask for the process's validator at once: one is built, all get it."""
    import threading
    import time

    import tasks.validate as validate

    built: list[int] = []

    class Slow(validate.Validator):
        def __init__(self) -> None:
            built.append(threading.get_ident())
            time.sleep(0.3)  # the others ask while it is being built
            super().__init__()

    monkeypatch.setattr(validate, "Validator", Slow)
    validate._default_validator.cache_clear()
    got: list[validate.Validator] = []
    try:
        threads = [
            threading.Thread(target=lambda: got.append(default_validator())) for _ in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        validate._default_validator.cache_clear()  # later tests build a plain one
    assert len(built) == 1 and len(got) == 6
    assert all(v is got[0] for v in got) and isinstance(got[0], Slow)
