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

import contextlib
import copy
import functools
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from driftloop_config.usecase import ColumnType, DateWindow

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


INT64_LIMIT = 2.0**63  # |value| of an int column must stay below this to be stored


def cast_column(values: pd.Series, kind: ColumnType) -> pd.Series:
    """Cast one raw column to its declared type; values that cannot be cast become null.

    Never raises on data: a column the vectorised cast cannot handle (mixed time-zone offsets,
    nested Parquet values, …) is cast value by value, and what still fails becomes null (the
    caller reports it as ``wrong_type``).
    """
    if kind not in ("string", "int", "float", "date", "datetime", "bool"):
        raise ValueError(f"unknown column type {kind!r}")
    try:
        return _cast_vectorised(values, kind)
    except (TypeError, ValueError, OverflowError, AttributeError, pd.errors.OutOfBoundsDatetime):
        return _cast_each(values, kind)


def _cast_vectorised(values: pd.Series, kind: ColumnType) -> pd.Series:
    if kind == "string":
        out = values.astype("object")
        ok = out.map(lambda v: isinstance(v, str))
        return out.where(ok & values.notna(), None)
    if kind in ("int", "float"):
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            num = values.astype("float64")
        elif values.dtype == object and not values.map(_is_text_or_number).all():
            raise TypeError("values that are neither text nor numbers")
        else:  # to_numeric trims surrounding blanks itself; anything else non-numeric → NaN
            num = pd.to_numeric(values.astype("object"), errors="coerce").astype("float64")
        num = num.where(np.isfinite(num), np.nan)  # "inf", "1e999": not a measurement
        if kind == "int":  # exactly integral and storable as int64 (12.000001 is not)
            num = num.where((num == np.floor(num)) & (num.abs() < INT64_LIMIT), np.nan)
        return num
    if kind in ("date", "datetime"):
        if pd.api.types.is_datetime64_any_dtype(values):
            ts = pd.to_datetime(values)
            if getattr(ts.dt, "tz", None) is not None:
                ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        else:
            if values.dtype == object and not values.map(_is_text_or_time).all():
                raise TypeError("values that are neither text nor timestamps")
            # utc=True: mixed offsets, and naive next to aware values, parse as one UTC column
            ts = pd.to_datetime(
                values.astype("object"), errors="coerce", format="ISO8601", utc=True
            ).dt.tz_localize(None)
        ts = ts.astype("datetime64[ns]")
        return ts.dt.normalize() if kind == "date" else ts
    if kind == "bool":
        mapping = {"true": True, "false": False, "1": True, "0": False}
        return values.astype("string").str.strip().str.lower().map(mapping).astype("object")
    raise ValueError(f"unknown column type {kind!r}")


def _is_text_or_number(v: Any) -> bool:
    if v is None or v is pd.NA:
        return True
    return isinstance(v, str | int | float | np.number) and not isinstance(v, bool | np.bool_)


def _is_text_or_time(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v)):
        return True  # missing (an empty CSV cell reads as NaN)
    return isinstance(v, str | date | pd.Timestamp | np.datetime64)  # datetime is a date


def _cast_each(values: pd.Series, kind: ColumnType) -> pd.Series:
    """The slow path: every value cast on its own; any failure is a null."""
    empty = {"int": np.nan, "float": np.nan, "date": pd.NaT, "datetime": pd.NaT}.get(kind)

    def one(v: Any) -> Any:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return empty
        try:
            out = _cast_vectorised(pd.Series([v], dtype="object"), kind).iloc[0]
        except (
            TypeError,
            ValueError,
            OverflowError,
            AttributeError,
            pd.errors.OutOfBoundsDatetime,
        ):
            return empty
        return empty if out is None else out

    cast = [one(v) for v in values.to_numpy(dtype=object)]
    if kind in ("int", "float"):
        return pd.Series(cast, index=values.index, dtype="float64")
    if kind in ("date", "datetime"):
        return pd.Series(pd.to_datetime(cast), index=values.index).astype("datetime64[ns]")
    return pd.Series(cast, index=values.index, dtype="object")


def cast_frame(
    raw: pd.DataFrame, columns: dict[str, ColumnType]
) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """Cast every declared column; report rows whose non-null raw value did not cast."""
    typed = pd.DataFrame(index=raw.index)
    reasons: dict[int, list[str]] = {}
    for name, kind in columns.items():
        col = cast_column(raw[name], kind)
        bad = raw[name].notna() & col.isna()
        for idx in raw.index[bad.to_numpy()]:
            reasons.setdefault(int(idx), []).append(f"{WRONG_TYPE}({name})")
        typed[name] = col
    return typed, reasons


IMPLAUSIBLE_DATE = "implausible_date"


def implausible_dates(
    typed: pd.DataFrame,
    columns: dict[str, ColumnType],
    partition_by: str,
    window: DateWindow,
    today: date,
) -> dict[int, list[str]]:
    """Rows whose dates lie outside the dataset's plausibility window (see
    :class:`driftloop_config.usecase.DateWindow`): ``implausible_date(<column>)``.

    The file's own day is the (lower) median of its partition column among the dates the
    absolute bounds allow, so a few outliers cannot move it.
    """
    reasons: dict[int, list[str]] = {}

    def outside_absolute(days: pd.Series) -> pd.Series:
        bad = pd.Series(False, index=days.index)
        if window.max_days_after_today is not None:
            latest = pd.Timestamp(today) + pd.Timedelta(days=window.max_days_after_today)
            bad |= days > latest
        if window.earliest is not None:
            bad |= days < pd.Timestamp(window.earliest)
        return bad

    # the file's own day: the median partition date among the dates the absolute bounds allow
    part = typed[partition_by].dt.normalize()
    part = part[part.notna() & ~outside_absolute(part)].sort_values()
    file_day = part.iloc[(len(part) - 1) // 2] if len(part) else None
    for name, kind in columns.items():
        if kind not in ("date", "datetime"):
            continue
        days = typed[name].dt.normalize()
        bad = outside_absolute(days)
        if window.max_days_from_file_day is not None and file_day is not None:
            bad |= (days - file_day).abs() > pd.Timedelta(days=window.max_days_from_file_day)
        for idx in typed.index[(bad & days.notna()).to_numpy()]:
            reasons.setdefault(int(idx), []).append(f"{IMPLAUSIBLE_DATE}({name})")
    return reasons


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
            out[name] = out[name].round().astype("Int64")
        elif kind == "string":
            out[name] = out[name].astype("string")
        elif kind == "bool":
            out[name] = out[name].astype("boolean")
    return out.reset_index(drop=True)


# ---- Great Expectations -------------------------------------------------------------------------


@contextlib.contextmanager
def _no_batch_fingerprint() -> Iterator[None]:
    """GX's pandas engine hashes every frame it loads (``pandas_data_fingerprint``, a batch
    marker in the result's metadata) unless the frame is over ``HASH_THRESHOLD`` bytes. Nothing
    here reads that marker, and hashing the text columns of a 1M-row frame costs more than
    validating them: while inside, every frame counts as over the threshold, as a >1 GB one does
    in GX itself. The rules, their metrics and their results do not depend on the marker.
    """
    from great_expectations.execution_engine import pandas_execution_engine as engine

    before = getattr(engine, "HASH_THRESHOLD", None)
    if before is None:  # a GX without the threshold: leave it alone
        yield
        return
    engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        engine.HASH_THRESHOLD = before


@contextlib.contextmanager
def _configurations_built_once() -> Iterator[None]:
    """GX rebuilds an expectation's configuration on every read of ``Expectation.configuration``
    (a pydantic ``dict()`` of the expectation, a regular expression on its class name and a new
    ``ExpectationConfiguration``), and reads it once per domain, success and runtime key of
    every metric it plans: over 100 builds per rule per run, a quarter of the time a small
    file's validation takes. While inside, each expectation builds it once; every read gets a
    new configuration holding deep copies of that build's values, so a reader that changes its
    copy changes no other. The expectations GX reads it from are made from the suite's
    configurations during one run and are not changed while it runs, so every read sees what
    GX's own property would have built.
    """
    from great_expectations.expectations.expectation import Expectation

    built_by_gx = Expectation.__dict__.get("configuration")
    if not isinstance(built_by_gx, property) or built_by_gx.fget is None:
        yield  # a GX without the property: leave it alone
        return
    build = built_by_gx.fget
    built: dict[int, tuple[Any, Any]] = {}  # id -> (the expectation, kept alive; its build)

    def configuration(expectation: Any) -> Any:
        entry = built.get(id(expectation))
        if entry is None or entry[0] is not expectation:
            entry = built[id(expectation)] = (expectation, build(expectation))
        made = entry[1]  # each read a new one, made as GX's property makes it
        return type(made)(
            type=made.type,
            kwargs=copy.deepcopy(made.kwargs),
            meta=copy.deepcopy(made.meta),
            notes=copy.deepcopy(made.notes),
            description=made.description,
            severity=made.severity,
            id=made.id,
            rendered_content=copy.deepcopy(made.rendered_content),
        )

    Expectation.configuration = property(configuration)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        Expectation.configuration = built_by_gx  # type: ignore[method-assign,assignment]


class Validator:
    """Runs expectation suites on in-memory frames with an ephemeral GX context.

    ``fast`` (the default) builds each expectation's configuration once per run (see
    :func:`_configurations_built_once`); ``fast=False`` runs GX exactly as it ships, which the
    tests compare with, rule by rule.
    """

    def __init__(self, *, fast: bool = True) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.validator.v1_validator import Validator as V1Validator

        # an ephemeral context announces its temporary docs folder at INFO, once per validator
        # (one line per landed object in a flow run's log): keep warnings only
        logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
        self._gx = gx
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = self._context.data_sources.add_pandas("driftloop")
        asset = source.add_dataframe_asset("frame")
        self._batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        self._v1_validator = V1Validator
        self._lock = threading.Lock()
        self._fast = fast

    def run(
        self,
        frame: pd.DataFrame,
        suite: dict[str, Any],
        *,
        complete: bool,
        by_column: bool = False,
    ) -> list[ExpectationOutcome]:
        """Validate ``frame`` against a suite given as JSON; one outcome per expectation.

        With ``by_column``, each set of expectations about the same column(s) is validated on a
        frame of just those columns (see :meth:`_validate_by_column`); the outcomes are the same
        as from one run over the whole frame, in the same order.
        """
        result_format: dict[str, Any] = {
            "result_format": "COMPLETE" if complete else "SUMMARY",
            "return_unexpected_index_query": False,
            "partial_unexpected_count": 5,
        }
        expectations = [dict(e) for e in suite["expectations"]]
        results = None
        if by_column:
            results = self._validate_by_column(frame, suite["name"], expectations, result_format)
        if results is None:
            results = self._validate(
                frame.reset_index(drop=True), suite["name"], expectations, result_format
            )
        return [_outcome(res) for res in results]

    def _validate(
        self,
        frame: pd.DataFrame,
        name: str,
        expectations: list[dict[str, Any]],
        result_format: dict[str, Any],
    ) -> list[Any]:
        """One GX run: the ``ExpectationValidationResult`` of every expectation, in GX's order."""
        gx_suite = self._gx.ExpectationSuite(name=name, expectations=expectations)
        fast_paths = _configurations_built_once() if self._fast else contextlib.nullcontext()
        # the GX context is not thread-safe, and the fast paths change a GX class while inside
        with self._lock, _no_batch_fingerprint(), fast_paths:
            # what ``Batch.validate`` does, minus the batch it loads first and then drops (the
            # validator loads its own): one load of the frame per run instead of two
            validator = self._v1_validator(
                batch_definition=self._batch_definition,
                batch_parameters={"dataframe": frame},
                result_format=result_format,
            )
            return list(validator.validate_expectation_suite(gx_suite).results)

    def _validate_by_column(
        self,
        frame: pd.DataFrame,
        name: str,
        expectations: list[dict[str, Any]],
        result_format: dict[str, Any],
    ) -> list[Any] | None:
        """The results of one run over ``frame``, got from one run per column set instead.

        GX filters the whole batch frame (every column) several times per column rule (the
        non-null rows, then the unexpected ones, for the condition, the index list and the
        value list), so on a wide frame most of a row suite's time is spent copying columns
        the rule does not read. A column rule's result depends only on its own columns, the
        row count and the row positions, which a frame of just those columns (same rows, same
        order, same dtypes) keeps.

        ``None`` (the caller then makes the one run) when a rule may need more than its own
        columns (no column named, a ``row_condition``, a column the frame lacks), or when any
        rule did not evaluate cleanly: GX orders a run's results with failed evaluations first,
        and a general failure fails every rule of the run, which only the one run reproduces.
        """
        groups: dict[tuple[bool, tuple[str, ...]], list[int]] = {}
        for i, exp in enumerate(expectations):
            key = _own_columns(exp, frame)
            if key is None:
                return None
            groups.setdefault(key, []).append(i)
        if not groups:
            return None
        by_position: dict[int, Any] = {}
        for (_, columns), positions in groups.items():
            part = frame[list(columns)].reset_index(drop=True)
            group = [expectations[i] for i in positions]
            results = self._validate(part, name, group, result_format)
            if len(results) != len(group):
                return None
            for i, res in zip(positions, results, strict=True):
                # one column set per run, so GX keeps the suite's order (see _gx_result_order)
                cfg = res.expectation_config
                info = res.exception_info or {}
                if (
                    cfg is None
                    or rule_name({"type": cfg.type, "kwargs": cfg.kwargs})
                    != rule_name(expectations[i])
                    or info.get("raised_exception") is not False
                ):
                    return None
                by_position[i] = res
        return [by_position[i] for i in _gx_result_order(expectations)]


_NO_COLUMN = "_nocolumn"  # GX's own key for expectations without a ``column``


def _gx_result_order(expectations: list[dict[str, Any]]) -> list[int]:
    """The order of a clean GX run's results: GX (``Validator.process_expectations_for_validation``)
    groups a suite's expectations by their ``column`` (first appearance first), with one group
    for those without one, and keeps the suite's order within a group."""
    groups: dict[str, list[int]] = {}
    for i, exp in enumerate(expectations):
        column = exp.get("kwargs", {}).get("column")
        groups.setdefault(column if isinstance(column, str) else _NO_COLUMN, []).append(i)
    return [i for positions in groups.values() for i in positions]


def _own_columns(
    expectation: dict[str, Any], frame: pd.DataFrame
) -> tuple[bool, tuple[str, ...]] | None:
    """The columns one expectation reads, when those alone decide its result: (whether it is
    a ``column`` rule, the columns in order); ``None`` when it may need the whole frame."""
    kwargs = expectation.get("kwargs", {})
    if kwargs.get("row_condition") or kwargs.get("table"):
        return None
    columns: list[Any] = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
    columns.extend(kwargs.get("column_list") or ())
    present = set(frame.columns)
    if not columns or not all(isinstance(c, str) and c in present for c in columns):
        return None
    return isinstance(kwargs.get("column"), str), tuple(dict.fromkeys(columns))


def _outcome(res: Any) -> ExpectationOutcome:
    """One GX ``ExpectationValidationResult`` in plain types."""
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
            f"{what} columns {sorted(cols)}" for what, cols in sorted(mismatched.items()) if cols
        )
    if observed is None and details.get("unexpected_percent") is not None:
        observed = f"{details.get('unexpected_count', 0)} unexpected ({details['unexpected_percent']:.2f}%)"
    return ExpectationOutcome(
        rule=rule,
        success=bool(res.success),
        unexpected_count=int(details.get("unexpected_count") or 0),
        unexpected_index=tuple(int(i) for i in details.get("unexpected_index_list") or ()),
        observed="" if observed is None else str(observed)[:300],
        error=error,
    )


_DEFAULT_VALIDATOR_LOCK = threading.Lock()


@functools.cache
def _default_validator() -> Validator:
    return Validator()


def default_validator() -> Validator:
    """One validator per process, built on first use (GX import is slow). A flow's concurrent
    tasks ask for it at once: the first builds it while the others wait, instead of each
    importing GX and building a context of its own."""
    with _DEFAULT_VALIDATOR_LOCK:
        return _default_validator()


def check_batch(validator: Validator, raw: pd.DataFrame, suite: dict[str, Any]) -> list[str]:
    """Batch-level acceptance: the failures (empty when the file is accepted), cause first.

    Table-level rules (the column set, the row count) come first; a rule about a column the
    file does not have is not repeated (the column-set failure already names it).
    """
    failures: list[tuple[int, str]] = []
    for out in validator.run(raw, suite, complete=False):
        about_missing_column = any(
            f"({c})" in out.rule or f"({c}," in out.rule or f",{c})" in out.rule
            for c in suite_columns(suite) - set(map(str, raw.columns))
        )
        first = 0 if out.rule.startswith("expect_table_") else 1
        if out.error:
            if not about_missing_column:
                failures.append((first, f"{out.rule}: could not be evaluated: {out.error}"))
        elif not out.success and not about_missing_column:
            failures.append((first, f"{out.rule}: failed (observed {out.observed or 'n/a'})"))
    return [text for _, text in sorted(failures, key=lambda f: f[0])]


def suite_columns(suite: dict[str, Any]) -> set[str]:
    """Every column a suite's expectations name."""
    cols: set[str] = set()
    for exp in suite.get("expectations", []):
        kwargs = exp.get("kwargs", {})
        cols.update(str(kwargs[k]) for k in ("column", "column_A", "column_B") if k in kwargs)
        cols.update(str(c) for c in kwargs.get("column_list", []))
    return cols


def split_rows(
    validator: Validator,
    typed: pd.DataFrame,
    suite: dict[str, Any],
    prior_reasons: dict[int, list[str]],
) -> RowSplit:
    """Row-level split. Rows already failed (wrong type, duplicate) are not re-judged by GX."""
    candidates = typed.drop(index=list(prior_reasons))
    positions = candidates.index.to_numpy()
    outcomes = (
        validator.run(candidates, suite, complete=True, by_column=True) if len(candidates) else []
    )
    order = {rule_name(e): i for i, e in enumerate(suite["expectations"])}
    reasons = {k: list(v) for k, v in prior_reasons.items()}
    for out in sorted(outcomes, key=lambda o: order.get(o.rule, len(order))):
        if out.error:
            raise RuntimeError(f"expectation {out.rule} could not be evaluated: {out.error}")
        for pos in out.unexpected_index:
            reasons.setdefault(int(positions[pos]), []).append(out.rule)
    valid = typed.index.difference(pd.Index(list(reasons), dtype=typed.index.dtype))
    return RowSplit(valid_index=valid, reasons=reasons, outcomes=outcomes)
