"""Validation with Great Expectations: batch-level acceptance and row-level splitting.

Two suites guard each dataset (see ``expectations/``):

* the **batch** suite decides whether a file is accepted at all (schema, row-count bounds, null
  fractions); any failure rejects the whole file;
* the **row** suite splits rows: each failing expectation names the rows it failed on, and
  those rows go to quarantine with the names of every rule they broke.

Before the row suite runs, values are cast to the declared schema (a value that cannot be cast
is a ``wrong_type`` failure) and exact duplicate rows are removed (``duplicate_row``), so every
quarantined row carries the reason that really applies to it.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from driftloop.usecase import ColumnType

WRONG_TYPE = "wrong_type"
DUPLICATE_ROW = "duplicate_row"


@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one expectation on one batch, in plain types."""

    rule: str  # e.g. "expect_column_values_to_be_between(minutes)"
    success: bool
    unexpected_count: int = 0
    unexpected_index: tuple[int, ...] = ()
    observed: str = ""
    error: str = ""


@dataclass(frozen=True)
class RowSplit:
    """Which rows pass, and why each failing row failed."""

    valid_index: pd.Index
    reasons: dict[int, list[str]] = field(default_factory=dict)
    outcomes: list[ExpectationOutcome] = field(default_factory=list)


def rule_name(expectation: dict[str, Any]) -> str:
    """A readable name for one expectation: its type and the columns it looks at."""
    kwargs = expectation.get("kwargs", {})
    cols: list[str] = []
    for key in ("column", "column_A", "column_B"):
        if key in kwargs:
            cols.append(str(kwargs[key]))
    cols.extend(str(c) for c in kwargs.get("column_list", []))
    return f"{expectation['type']}({','.join(cols)})" if cols else str(expectation["type"])


# ---- casting ----------------------------------------------------------------------------------


def cast_column(values: pd.Series, kind: ColumnType) -> pd.Series:
    """Cast one raw column to its declared type; values that cannot be cast become null."""
    if kind == "string":
        out = values.astype("object")
        return out.where(values.notna(), None)
    if kind in ("int", "float"):
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            num = values.astype("float64")
        else:  # to_numeric trims surrounding blanks itself; anything else non-numeric → NaN
            num = pd.to_numeric(values.astype("object"), errors="coerce").astype("float64")
        if kind == "int":
            num = num.where(np.isclose(num, np.round(num)) | num.isna(), np.nan)
        return num
    if kind in ("date", "datetime"):
        if pd.api.types.is_datetime64_any_dtype(values):
            ts = pd.to_datetime(values)
        else:
            ts = pd.to_datetime(values.astype("object"), errors="coerce", format="ISO8601")
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        ts = ts.astype("datetime64[ns]")
        return ts.dt.normalize() if kind == "date" else ts
    if kind == "bool":
        mapping = {"true": True, "false": False, "1": True, "0": False}
        return values.astype("string").str.strip().str.lower().map(mapping).astype("object")
    raise ValueError(f"unknown column type {kind!r}")


def cast_frame(
    raw: pd.DataFrame, columns: dict[str, ColumnType]
) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """Cast every declared column; report rows whose non-null raw value did not cast."""
    typed = pd.DataFrame(index=raw.index)
    reasons: dict[int, list[str]] = {}
    for name, kind in columns.items():
        col = cast_column(raw[name], kind)
        bad = raw[name].notna() & col.isna()
        if kind == "string":
            bad &= False
        for idx in raw.index[bad.to_numpy()]:
            reasons.setdefault(int(idx), []).append(f"{WRONG_TYPE}({name})")
        typed[name] = col
    return typed, reasons


def exact_duplicates(raw: pd.DataFrame, key: list[str]) -> dict[int, list[str]]:
    """Rows that repeat an earlier row exactly: the first copy stays, the rest are reasons.

    An exact copy also repeats the key, so only rows with a repeated key are compared whole.
    """
    same_key = raw.duplicated(key, keep=False).to_numpy()
    candidates = raw.loc[same_key].astype("string")
    dup = candidates.duplicated(keep="first").to_numpy()
    return {int(i): [DUPLICATE_ROW] for i in candidates.index[dup]}


def to_storage_types(typed: pd.DataFrame, columns: dict[str, ColumnType]) -> pd.DataFrame:
    """Final dtypes for validated Parquet (no nulls remain in required columns)."""
    out = typed.copy()
    for name, kind in columns.items():
        if kind == "int":
            out[name] = out[name].astype("Int64")
        elif kind == "string":
            out[name] = out[name].astype("string")
        elif kind == "bool":
            out[name] = out[name].astype("boolean")
    return out.reset_index(drop=True)


# ---- Great Expectations -------------------------------------------------------------------------


class Validator:
    """Runs expectation suites on in-memory frames with an ephemeral GX context."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = self._context.data_sources.add_pandas("driftloop")
        asset = source.add_dataframe_asset("frame")
        self._batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        self._lock = threading.Lock()

    def run(
        self, frame: pd.DataFrame, suite: dict[str, Any], *, complete: bool
    ) -> list[ExpectationOutcome]:
        """Validate ``frame`` against a suite given as JSON; one outcome per expectation."""
        gx_suite = self._gx.ExpectationSuite(
            name=suite["name"], expectations=[dict(e) for e in suite["expectations"]]
        )
        result_format: dict[str, Any] = {
            "result_format": "COMPLETE" if complete else "SUMMARY",
            "return_unexpected_index_query": False,
            "partial_unexpected_count": 5,
        }
        frame = frame.reset_index(drop=True)
        with self._lock:  # the GX context is not safe to share across threads
            batch = self._batch_definition.get_batch(batch_parameters={"dataframe": frame})
            result = batch.validate(gx_suite, result_format=result_format)
        outcomes = []
        for res in result.results:
            cfg = res.expectation_config
            assert cfg is not None, "GX returned a result without its expectation"
            rule = rule_name({"type": cfg.type, "kwargs": cfg.kwargs})
            info = res.exception_info or {}
            error = str(info.get("exception_message") or "") if info.get("raised_exception") else ""
            details = res.result or {}
            observed = details.get("observed_value")
            mismatched = (details.get("details") or {}).get("mismatched")
            if isinstance(mismatched, dict):  # column-set rules: say which columns, not all
                observed = ", ".join(
                    f"{what} columns {sorted(cols)}"
                    for what, cols in sorted(mismatched.items())
                    if cols
                )
            if observed is None and details.get("unexpected_percent") is not None:
                observed = f"{details.get('unexpected_count', 0)} unexpected ({details['unexpected_percent']:.2f}%)"
            outcomes.append(
                ExpectationOutcome(
                    rule=rule,
                    success=bool(res.success),
                    unexpected_count=int(details.get("unexpected_count") or 0),
                    unexpected_index=tuple(
                        int(i) for i in details.get("unexpected_index_list") or ()
                    ),
                    observed="" if observed is None else str(observed)[:300],
                    error=error,
                )
            )
        return outcomes


@functools.cache
def default_validator() -> Validator:
    """One validator per process, built on first use (GX import is slow)."""
    return Validator()


def check_batch(validator: Validator, raw: pd.DataFrame, suite: dict[str, Any]) -> list[str]:
    """Batch-level acceptance: the failures (empty when the file is accepted)."""
    failures = []
    for out in validator.run(raw, suite, complete=False):
        if out.error:
            failures.append(f"{out.rule}: could not be evaluated: {out.error}")
        elif not out.success:
            failures.append(f"{out.rule}: failed (observed {out.observed or 'n/a'})")
    return failures


def split_rows(
    validator: Validator,
    typed: pd.DataFrame,
    suite: dict[str, Any],
    prior_reasons: dict[int, list[str]],
) -> RowSplit:
    """Row-level split. Rows already failed (wrong type, duplicate) are not re-judged by GX."""
    candidates = typed.drop(index=list(prior_reasons))
    positions = candidates.index.to_numpy()
    outcomes = validator.run(candidates, suite, complete=True) if len(candidates) else []
    order = {rule_name(e): i for i, e in enumerate(suite["expectations"])}
    reasons = {k: list(v) for k, v in prior_reasons.items()}
    for out in sorted(outcomes, key=lambda o: order.get(o.rule, len(order))):
        if out.error:
            raise RuntimeError(f"expectation {out.rule} could not be evaluated: {out.error}")
        for pos in out.unexpected_index:
            reasons.setdefault(int(positions[pos]), []).append(out.rule)
    valid = typed.index.difference(pd.Index(list(reasons), dtype=typed.index.dtype))
    return RowSplit(valid_index=valid, reasons=reasons, outcomes=outcomes)
