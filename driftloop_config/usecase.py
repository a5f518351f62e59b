"""A use case: the datasets that land, their schema, and the suites that guard them.

Loaded from a YAML file (``usecases/<name>.yaml``); everything downstream takes the parsed
:class:`UseCase`, so a new dataset is added by writing definitions, not by editing flows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

ColumnType = Literal["string", "int", "float", "date", "datetime", "bool"]
#: A name that becomes a folder, a column or an API field: letters, digits and underscores.
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class UseCaseError(ValueError):
    """The use-case file or one of its suites is malformed.

    ``problems`` holds every mistake found, as ``(field, message)`` pairs: ``field`` is the
    dotted path in the file (``features.builder``), or ``""`` for the file as a whole.
    """

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems: tuple[tuple[str, str], ...] = tuple(problems or [("", message)])


def _raise_located(model: str, errors: list[tuple[tuple[str, ...], str, Any]]) -> None:
    """Raise every ``(location, message, value)`` at once, each at its own field (pydantic
    prefixes the locations of nested models), instead of one error for the whole model."""
    if errors:
        raise ValidationError.from_exception_data(
            model,
            [
                InitErrorDetails(
                    type=PydanticCustomError("usecase_reference", "{message}", {"message": msg}),
                    loc=loc,
                    input=value,
                )
                for loc, msg, value in errors
            ],
        )


class DateWindow(BaseModel):
    """Where the dates of a delivered file may plausibly lie; rows outside are quarantined with
    ``implausible_date(<column>)``, so one mistyped year never becomes the pipeline's "today"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_days_after_today: int | None = Field(
        default=1,
        description="A date more than this many days after the day of ingestion is implausible "
        "(default 1: nothing after tomorrow). Empty: no bound.",
    )
    max_days_from_file_day: int | None = Field(
        default=366,
        ge=0,
        description="A date further than this many days from the file's own day (the median "
        "of its partition column) is implausible. Empty: no bound.",
    )
    earliest: date | None = Field(default=None, description="No date before this one.")


class DatasetSpec(BaseModel):
    """One kind of landed file: where it lands, its columns, and its two suites."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    description: str = ""
    landing_prefix: str = Field(
        description="Sub-prefix of landing/ where files of this dataset arrive."
    )
    key: list[str] = Field(min_length=1, description="Columns that identify a row.")
    partition_by: str = Field(description="Date column used to partition validated/.")
    columns: dict[str, ColumnType] = Field(min_length=1)
    batch_suite: Path
    row_suite: Path
    date_window: DateWindow = DateWindow()

    @model_validator(mode="after")
    def _check_columns(self) -> DatasetSpec:
        errors: list[tuple[tuple[str, ...], str, Any]] = []
        missing = [c for c in self.key if c not in self.columns]
        if missing:
            errors.append((("key",), f"key columns {missing} are not in columns", self.key))
        if self.partition_by not in self.columns:
            errors.append(
                (
                    ("partition_by",),
                    f"partition_by column {self.partition_by!r} is not in columns "
                    f"({', '.join(self.columns)})",
                    self.partition_by,
                )
            )
        elif self.columns[self.partition_by] not in ("date", "datetime"):
            errors.append(
                (
                    ("partition_by",),
                    f"partition_by column {self.partition_by!r} must be a date",
                    self.partition_by,
                )
            )
        if not self.landing_prefix.endswith("/"):
            errors.append(
                (
                    ("landing_prefix",),
                    f"landing_prefix {self.landing_prefix!r} must end with '/'",
                    self.landing_prefix,
                )
            )
        _raise_located("DatasetSpec", errors)
        return self


#: the model metrics that measure an error (regression: lower is better)
ERROR_METRICS = ("rmse", "mae")


class TargetSpec(BaseModel):
    """What is predicted and when it becomes known."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description="The label column of training sets: 0/1 (e.g. churned) or, for a "
        "regression target, the outcome (e.g. spend_30d)."
    )
    kind: Literal["binary", "regression"] = Field(
        default="binary",
        description="binary: the label is 1 when an event falls in the horizon and the model "
        "predicts its probability. regression: the label is the sum of value_column over the "
        "events in the horizon (0 when there is none) and the model predicts that number.",
    )
    value_column: str | None = Field(
        default=None,
        description="regression only: the numeric column of the labels dataset summed over "
        "the horizon (e.g. the amount of each purchase).",
    )
    labels_dataset: str = Field(description="The dataset holding one row per target event.")
    event_column: str = Field(description="Date column of the labels dataset: when it happened.")
    reported_column: str | None = Field(
        default=None,
        description="Date column of the labels dataset: when the event became known. "
        "Default: the labels dataset's partition_by.",
    )
    horizon_days: int = Field(ge=1)
    label_delay_days: int = Field(ge=0)
    recurring: bool = Field(
        default=False,
        description="False (terminal, e.g. churn): an entity leaves at its first event and is in "
        "no later snapshot. True (recurring, e.g. a delay, a failure, a purchase): the entity "
        "stays and can have the event again; its label is 1 when at least one event falls in "
        "the horizon.",
    )
    prediction: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="The prediction's column in predictions/ and its key in the serving API's "
        "answers. Default: <name>_probability (binary), <name>_predicted (regression).",
    )

    @model_validator(mode="after")
    def _check_kind(self) -> TargetSpec:
        errors: list[tuple[tuple[str, ...], str, Any]] = []
        if self.kind == "regression":
            if self.value_column is None:
                errors.append((("value_column",), "a regression target needs value_column", None))
            if not self.recurring:
                errors.append(
                    (
                        ("recurring",),
                        "a regression target sums events over the horizon: it must be "
                        "recurring (the entity stays after an event)",
                        self.recurring,
                    )
                )
        elif self.value_column is not None:
            errors.append(
                (
                    ("value_column",),
                    "value_column is for a regression target (kind: regression)",
                    self.value_column,
                )
            )
        _raise_located("TargetSpec", errors)
        return self


class ContextSpec(BaseModel):
    """A further feature source keyed by something other than the entity: a location, a
    carrier, a product. Its dataset is validated on its own, its builder makes its own feature
    table, and the main builder's rows carry ``key``, so that each entity row is joined, point
    in time, with the context row of its key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_dataset: str
    key: str = Field(
        pattern=NAME_PATTERN,
        description="The context's id column: in its dataset, in its builder's rows (the join "
        "key of its Feast entity) and in the main builder's rows.",
    )
    builder: str = Field(pattern=r"^[\w.]+:\w+$", description="module:function")
    lookback_days: int = Field(ge=1)
    table: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Its feature table (features/<table>/, the name of its Feast file source). "
        "Default: the context's name.",
    )


@dataclass(frozen=True)
class FeatureTable:
    """One feature table a use case builds: the main one (keyed by the entity) or a context's."""

    name: str  # features/<name>/ in the lake; its Feast file source has this name
    source_dataset: str
    builder: str
    lookback_days: int
    key: str  # the id column of its rows
    field: str  # where the use case declares it: "features" or "features.context.<name>"


class FeatureSpec(BaseModel):
    """How validated rows become feature rows, and the feature service models read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_dataset: str
    builder: str = Field(pattern=r"^[\w.]+:\w+$", description="module:function")
    lookback_days: int = Field(ge=1)
    feature_service: str
    table: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="The feature table: its folder in the lake (features/<table>/) and the name "
        "of its Feast file source. Default: the use case's name.",
    )
    context: dict[str, ContextSpec] = Field(
        default_factory=dict,
        description="Further feature sources keyed by something other than the entity, by name.",
    )


class ModelSpec(BaseModel):
    """The registered model and its promotion policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    registered_name: str
    estimator: str | None = Field(
        default=None,
        pattern=r"^[\w.]+:\w+$",
        description="module:function building the unfitted classifier, called as "
        "function(seed=..., categorical=(...), numeric=(...)) and returning a scikit-learn "
        "estimator or pipeline with fit and predict_proba (see tasks.model.build_estimator). "
        "None: the built-in calibrated histogram gradient boosting.",
    )
    metric: Literal["roc_auc", "pr_auc", "rmse", "mae"] = Field(
        default="roc_auc",
        description="roc_auc or pr_auc (higher is better) for a binary target; rmse or mae "
        "(lower is better) for a regression target.",
    )
    holdout_days: int = Field(default=7, ge=1)
    validation_days: int = Field(default=7, ge=1)
    snapshot_every_days: int = Field(default=1, ge=1)
    min_history_days: int = Field(
        default=0,
        ge=0,
        description="Skip snapshots earlier than this many days after the first data: their "
        "rolling features are computed over incomplete windows.",
    )
    promotion_margin: float = Field(
        default=0.0,
        description="The improvement of the metric a challenger must show beyond noise (for "
        "rmse and mae: the decrease, in the label's units).",
    )
    floor: float = Field(
        default=None,  # type: ignore[assignment]  # filled from the metric (_default_floor)
        ge=0,
        le=1,
        description="Without a champion, the smallest metric a challenger must reach. For rmse "
        "and mae it is a skill: 1 - error / error of predicting the holdout's mean (0: at least "
        "as good as that constant). Default: 0.65 for roc_auc and pr_auc, 0 for rmse and mae.",
    )
    bootstrap_samples: int = Field(default=400, ge=50)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    calibration_tolerance: float = Field(default=0.03, ge=0)
    # evidence: the splits reach further back (more snapshot days) until they hold this much;
    # a training set that cannot is "insufficient evidence": no training, no promotion
    min_train_rows: int = Field(default=200, ge=1)
    min_train_positives: int = Field(default=20, ge=1)
    min_validation_positives: int = Field(default=10, ge=1)
    min_holdout_rows: int = Field(default=100, ge=1)
    min_holdout_positives: int = Field(default=10, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _default_floor(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("floor") is None:
            metric = data.get("metric", "roc_auc")
            data = {**data, "floor": 0.0 if metric in ERROR_METRICS else 0.65}
        return data

    @property
    def lower_is_better(self) -> bool:
        """rmse and mae: an error, lower is better."""
        return self.metric in ERROR_METRICS


class InputSpec(BaseModel):
    """How the drift verdict treats one model input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    monitor: bool = Field(default=True, description="False: not checked at all.")
    role: Literal["vote", "context"] = Field(
        default="vote",
        description="'context': checked and reported, but never counts towards a verdict (a "
        "column shared by many entities, e.g. the weather at a location).",
    )
    weight: float | None = Field(
        default=None,
        ge=0,
        description="The input's vote. Empty: the model's importance of the input, stored at "
        "training.",
    )


class PersistenceSpec(BaseModel):
    """Drift is declared when at least ``k`` of the last ``n`` windows signal it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(default=2, ge=1)
    n: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _k_within_n(self) -> PersistenceSpec:
        if self.k > self.n:
            raise ValueError(f"persistence k={self.k} cannot exceed n={self.n}")
        return self


class DriftSpec(BaseModel):
    """How drift checks judge a window (see tasks/drift_stats.py for the method)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_days: int = Field(default=1, ge=1, description="Feature days per check window.")
    reference_windows: int = Field(
        default=7,
        ge=2,
        description="Check windows of feature days up to a training's as_of that form the "
        "drift reference (the newest inputs the model meets; their windows give the null).",
    )
    alpha: float = Field(default=0.01, gt=0, lt=1, description="False-alarm rate of one check.")
    psi_min: float = Field(default=0.1, ge=0, description="Smallest PSI that counts as drift.")
    min_drifted_features: int = Field(default=2, ge=1)
    empirical_null: bool = Field(
        default=True,
        description="Thresholds learned from the natural variation between windows of the "
        "training period (the sample-size bound stays the floor). False: the bound alone.",
    )
    null_quantile: float = Field(
        default=0.99,
        gt=0.5,
        le=1.0,
        description="Quantile of the training period's window-to-reference statistics used as "
        "a threshold (1.0: the largest seen).",
    )
    min_drifted_share: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Share of the voting inputs' total weight that must drift in a window.",
    )
    importance_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Part of an input's default vote that is the model's importance of it; the "
        "rest is the same for every input, so a change that starts in inputs the current model "
        "hardly uses still counts.",
    )
    persistence: PersistenceSpec = PersistenceSpec()
    min_performance_drop: float = Field(
        default=0.03,
        ge=0,
        description="Smallest drop of the metric (estimated or realised) that counts, on top of "
        "its interval.",
    )
    min_window_positives: int = Field(
        default=30,
        ge=1,
        description="Realised performance pools consecutive labelled days until a window holds "
        "this many positives.",
    )
    inputs: dict[str, InputSpec] = Field(
        default_factory=dict, description="Per-input settings (default: monitored, voting)."
    )


class RetrainSpec(BaseModel):
    """When new training runs are started (the closed loop's policy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on_drift: bool = Field(
        default=True, description="Retrain on sustained drift of the (important) inputs."
    )
    on_estimated_drop: bool = Field(
        default=True,
        description="Retrain when the estimated performance (before labels) drops beyond its "
        "interval.",
    )
    on_realised_drop: bool = Field(
        default=True,
        description="Retrain when the realised performance (once labels arrive) drops beyond its "
        "interval.",
    )
    backoff_rows: int = Field(
        default=500,
        ge=0,
        description="After a rejected challenger or insufficient evidence, wait for this many "
        "newly labelled rows ...",
    )
    backoff_positives: int = Field(
        default=20, ge=0, description="... and this many newly labelled positives."
    )
    new_labelled_days: int = Field(
        default=7, ge=1, description="Retrain after this many newly labelled snapshot days."
    )
    min_post_change_days: int = Field(
        default=10,
        ge=1,
        description="After drift, wait until this many labelled snapshot days exist after the "
        "change, then train on data since the change only.",
    )
    drift_quiet_days: int = Field(
        default=14,
        ge=1,
        description="A pending change whose drift-started challenger was rejected and that no "
        "drift check has signalled for more than this many days is over (a passing episode or "
        "a false alarm): the policy no longer waits for it, and the next detection starts a "
        "new change with the first wait.",
    )


#: The sections a use case needs to run the closed loop (train, gate, score, drift), besides its
#: datasets: without them it can only be ingested (and, with ``features``, built into features).
LOOP_SECTIONS = ("target", "features", "model")


@dataclass(frozen=True)
class LoopSpec:
    """The sections of a use case that runs the whole closed loop, none of them optional
    (:meth:`UseCase.loop`)."""

    target: TargetSpec
    features: FeatureSpec
    model: ModelSpec


class UseCase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    entity: str
    datasets: dict[str, DatasetSpec] = Field(min_length=1)
    target: TargetSpec | None = None
    features: FeatureSpec | None = None
    model: ModelSpec | None = None
    drift: DriftSpec = DriftSpec()
    retrain: RetrainSpec = RetrainSpec()
    root: Path = Field(default=Path("."), exclude=True)
    #: the YAML file it was loaded from (:func:`load_usecase`; None when built in code)
    _file: Path | None = PrivateAttr(default=None)

    @property
    def file(self) -> Path | None:
        """The YAML file the use case was loaded from (None when it was built in code)."""
        return self._file

    def loop(self) -> LoopSpec:
        """Its ``target``, ``features`` and ``model``, for the steps of the closed loop (train,
        gate, score, drift, the retraining policy) that need all three.

        Raises :class:`UseCaseError` naming the file and every missing section when the use case
        lacks one (it can then only be ingested, or built into features)."""
        target, features, model = self.target, self.features, self.model
        if target is None or features is None or model is None:
            present = {"target": target, "features": features, "model": model}
            missing = [name for name in LOOP_SECTIONS if present[name] is None]
            where = f"use case file {self._file}" if self._file else f"use case {self.name!r}"
            raise UseCaseError(
                f"{where} cannot run the closed loop (train, score, drift): it has no "
                f"{' and no '.join(missing)} section ({', '.join(LOOP_SECTIONS)} are all needed)",
                [(name, f"missing: the closed loop needs a {name} section") for name in missing],
            )
        return LoopSpec(target=target, features=features, model=model)

    @model_validator(mode="after")
    def _check_references(self) -> UseCase:
        """Every dataset and column the use case names exists (all mistakes at once)."""
        errors: list[tuple[tuple[str, ...], str, Any]] = []
        if self.target and self.target.labels_dataset not in self.datasets:
            errors.append(
                (
                    ("target", "labels_dataset"),
                    f"target.labels_dataset {self.target.labels_dataset!r} is not a dataset "
                    f"({', '.join(self.datasets)})",
                    self.target.labels_dataset,
                )
            )
        elif self.target:
            labels = self.datasets[self.target.labels_dataset]
            wanted = {
                ("entity",): self.entity,
                ("target", "event_column"): self.target.event_column,
                ("target", "reported_column"): self.reported_column,
            }
            for loc, column in wanted.items():
                what = ".".join(loc)
                if column not in labels.columns:
                    errors.append(
                        (
                            loc,
                            f"{what} {column!r} is not a column of labels dataset {labels.name!r}",
                            column,
                        )
                    )
                elif loc != ("entity",) and labels.columns[column] not in ("date", "datetime"):
                    errors.append((loc, f"labels column {column!r} must be a date", column))
            value_column = self.target.value_column
            if value_column is not None and labels.columns.get(value_column) not in (
                "int",
                "float",
            ):
                errors.append(
                    (
                        ("target", "value_column"),
                        f"target.value_column {value_column!r} is not a numeric (int or float) column "
                        f"of labels dataset {labels.name!r}",
                        value_column,
                    )
                )
        if self.target and self.model:
            regression = self.target.kind == "regression"
            if regression != self.model.lower_is_better:
                measures = "rmse or mae" if regression else "roc_auc or pr_auc"
                errors.append(
                    (
                        ("model", "metric"),
                        f"a {self.target.kind} target is measured by {measures}",
                        self.model.metric,
                    )
                )
        if self.features and self.features.source_dataset not in self.datasets:
            errors.append(
                (
                    ("features", "source_dataset"),
                    f"features.source_dataset {self.features.source_dataset!r} is not a dataset "
                    f"({', '.join(self.datasets)})",
                    self.features.source_dataset,
                )
            )
        elif self.features:
            source = self.datasets[self.features.source_dataset]
            if self.entity not in source.columns:
                errors.append(
                    (
                        ("entity",),
                        f"entity {self.entity!r} is not a column of source dataset {source.name!r}",
                        self.entity,
                    )
                )
        errors += self._context_errors()
        _raise_located("UseCase", errors)
        return self

    def _context_errors(self) -> list[tuple[tuple[str, ...], str, Any]]:
        errors: list[tuple[tuple[str, ...], str, Any]] = []
        if self.features is None:
            return errors
        tables = [self.feature_table]
        for name, ctx in self.features.context.items():
            loc = ("features", "context", name)
            if ctx.source_dataset not in self.datasets:
                errors.append(
                    (
                        (*loc, "source_dataset"),
                        f"{ctx.source_dataset!r} is not a dataset ({', '.join(self.datasets)})",
                        ctx.source_dataset,
                    )
                )
            elif ctx.key not in self.datasets[ctx.source_dataset].columns:
                errors.append(
                    (
                        (*loc, "key"),
                        f"{ctx.key!r} is not a column of dataset {ctx.source_dataset!r}",
                        ctx.key,
                    )
                )
            if ctx.key == self.entity:
                errors.append(
                    (
                        (*loc, "key"),
                        "a context is keyed by something other than the entity",
                        ctx.key,
                    )
                )
            table = ctx.table or name
            if table in tables:
                errors.append(((*loc, "table"), f"feature table {table!r} is taken", table))
            tables.append(table)
        return errors

    @property
    def feature_tables(self) -> list[FeatureTable]:
        """The feature tables the use case builds: the main one first, then its contexts'."""
        spec = self.features
        if spec is None:
            return []
        main = FeatureTable(
            self.feature_table,
            spec.source_dataset,
            spec.builder,
            spec.lookback_days,
            self.entity,
            "features",
        )
        return [main] + [
            FeatureTable(
                ctx.table or name,
                ctx.source_dataset,
                ctx.builder,
                ctx.lookback_days,
                ctx.key,
                f"features.context.{name}",
            )
            for name, ctx in spec.context.items()
        ]

    @property
    def feature_table(self) -> str:
        """The feature table's name (``features.table``, else the use case's name)."""
        return (self.features.table if self.features else None) or self.name

    @property
    def prediction_column(self) -> str:
        """The prediction's column (``target.prediction``, else ``<target.name>_probability``,
        or ``<target.name>_predicted`` for a regression target)."""
        if self.target is None:
            raise ValueError(f"use case {self.name!r} defines no target")
        suffix = "predicted" if self.target.kind == "regression" else "probability"
        return self.target.prediction or f"{self.target.name}_{suffix}"

    @property
    def reported_column(self) -> str:
        """The labels' "became known on" column (target.reported_column, else the labels
        dataset's partition column)."""
        if self.target is None:
            raise ValueError(f"use case {self.name!r} defines no target")
        return self.target.reported_column or self.datasets[self.target.labels_dataset].partition_by

    def dataset_for_key(self, landing_key: str) -> DatasetSpec | None:
        """The dataset a landing key (relative to landing/) belongs to, or None."""
        for spec in self.datasets.values():
            if landing_key.startswith(spec.landing_prefix):
                return spec
        return None

    def suite(self, path: Path) -> dict[str, Any]:
        """The expectation-suite JSON at ``path`` (relative to the project root)."""
        full = path if path.is_absolute() else self.root / path
        try:
            data: dict[str, Any] = json.loads(full.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UseCaseError(f"expectation suite {full} does not exist") from None
        except json.JSONDecodeError as exc:
            raise UseCaseError(f"expectation suite {full} is not valid JSON: {exc}") from None
        if not isinstance(data.get("expectations"), list) or "name" not in data:
            raise UseCaseError(f"expectation suite {full} needs 'name' and 'expectations'")
        return data


def suite_columns(suite: dict[str, Any]) -> list[str]:
    """Every column a suite's expectations name (``column``, ``column_A``/``column_B``,
    ``column_list``, ``column_set``), in order of appearance."""
    cols: list[str] = []
    for exp in suite.get("expectations", []):
        kwargs = exp.get("kwargs", {}) if isinstance(exp, dict) else {}
        if not isinstance(kwargs, dict):
            continue
        named = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
        for k in ("column_list", "column_set"):
            if isinstance(kwargs.get(k), list):
                named += kwargs[k]
        cols += [str(c) for c in named if str(c) not in cols]
    return cols


def _suite_problems(usecase: UseCase) -> list[tuple[str, str]]:
    """Every suite that is missing, is not a suite, or names a column its dataset lacks."""
    problems: list[tuple[str, str]] = []
    for name, spec in usecase.datasets.items():
        for field in ("batch_suite", "row_suite"):
            where = f"datasets.{name}.{field}"
            try:
                suite = usecase.suite(getattr(spec, field))
            except UseCaseError as exc:
                problems.append((where, str(exc)))
                continue
            unknown = [c for c in suite_columns(suite) if c not in spec.columns]
            if unknown:
                problems.append(
                    (
                        where,
                        f"expectation suite {suite['name']!r} names columns {unknown} that "
                        f"dataset {name!r} does not have",
                    )
                )
    return problems


def load_usecase(path: Path, project_root: Path | None = None) -> UseCase:
    """Parse a use-case YAML file; errors name the file and the offending field.

    The :class:`UseCaseError` lists every mistake found (``problems``): unknown or mistyped
    fields, datasets and columns that are referenced but not defined, missing or broken
    expectation suites and suite rules about columns the dataset does not have.
    """

    def whole(message: str) -> UseCaseError:
        return UseCaseError(f"use case file {path} {message}", [("", message)])

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise whole("does not exist") from None
    except UnicodeDecodeError as exc:
        raise whole(f"is not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise whole(f"cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise whole(f"is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise whole("must hold a mapping")
    for name, spec in (raw.get("datasets") or {}).items():
        if isinstance(spec, dict):
            spec.setdefault("name", name)
    root = project_root or path.resolve().parent.parent
    try:
        usecase = UseCase(**raw, root=root)
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
    else:  # fail early on a broken suite, not mid-run
        usecase._file = path
        problems = _suite_problems(usecase)
    if problems:
        lines = [f"{where}: {message}" for where, message in problems]
        raise UseCaseError(
            f"use case file {path} is invalid:\n  " + "\n  ".join(lines), problems
        ) from None
    return usecase
