"""``driftloop check``: every mistake of the settings, the use case and its definitions, at once.

A mistake in a use case (a mistyped field, a dataset or column that does not exist, a feature
builder that does not import or does not produce what the Feast views declare, a feature service
the repository does not define) would otherwise surface deep inside a flow run. :func:`check`
finds them before anything runs, without a Prefect server, a flow, ``feast apply`` or MLflow:

* the use case loads (:func:`driftloop_config.usecase.load_usecase`: fields, dataset and column
  references, suite files and the columns their rules name), one problem per mistake;
* every expectation of every suite is one Great Expectations knows, with valid arguments;
* the feature builder imports, and runs on an empty and on a small synthetic typed frame of its
  source dataset; its output holds every column the feature service's views read, with a dtype
  that fits the type the view declares for it (:data:`DTYPES`: an Int64 feature is an integer
  column, a Float64 one a float column, ...);
* the Feast repository imports (as ``feast apply`` imports it, without applying), defines the
  use case's feature service, its views join on the use case's entity and read the feature
  table where these settings put it, and ``drift.inputs`` names only inputs of the service.

User mistakes never raise: they come back as :class:`Problem` objects, ``where`` naming the
setting, file or field, ``message`` what is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driftloop_config.settings import ENV_PREFIX, Settings, settings_env
from driftloop_config.usecase import FeatureTable, UseCase, UseCaseError, load_usecase

if TYPE_CHECKING:
    import pandas as pd

    from tasks.feature_store import RepoObjects

#: Columns the feature flow itself needs in a builder's output (besides the views' columns).
FLOW_COLUMNS = ("date",)
#: A day for the builder's trial run (any day: the frame is empty or synthetic).
TRIAL_DAY = date(2024, 1, 31)
#: The stamp of the last check that found nothing (see :func:`check_cached`).
STAMP_FILE = "check.json"


@dataclass(frozen=True)
class Problem:
    """One mistake: ``where`` names the setting, file or field, ``message`` says what is wrong."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class CheckReport:
    """What :func:`run_check` found, and what it checked (for a one-line summary)."""

    problems: list[Problem] = field(default_factory=list)
    usecase: str | None = None
    datasets: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    feature_service: str | None = None

    def summary(self) -> str:
        return (
            f"use case {self.usecase}: datasets {', '.join(self.datasets)}; "
            f"{len(self.features)} features from feature service {self.feature_service or '-'}"
        )


def check(settings: Settings) -> list[Problem]:
    """Every problem of the settings, the use case and its definitions (empty: all good)."""
    return run_check(settings).problems


def run_check(settings: Settings) -> CheckReport:
    """:func:`check`, with what was checked."""
    report = CheckReport()
    shown = _shown(settings.usecase, settings.project_dir)

    def add(where: str, message: str) -> None:
        report.problems.append(Problem(where, message))

    if not settings.usecase.is_file():
        add(f"{ENV_PREFIX}USECASE", f"{settings.usecase}: no such file")
        return report
    usecase: UseCase | None = None
    try:
        usecase = load_usecase(settings.usecase)
    except UseCaseError as exc:
        for where, message in exc.problems:
            add(f"{shown}: {where}" if where else shown, message)
    except (ValueError, OSError) as exc:  # defensive: load_usecase reports these itself
        add(shown, str(exc))
    if usecase is not None:
        report.usecase = usecase.name
        report.datasets = list(usecase.datasets)
        for problem in _suite_problems(usecase):
            add(f"{shown}: {problem[0]}", problem[1])

    repo = settings.feature_repo
    objects: RepoObjects | None = None
    if not repo.is_dir():
        add(f"{ENV_PREFIX}FEATURE_REPO", f"{repo}: no such folder")
    else:
        objects, repo_problems = _parse_repo(settings)
        for message in repo_problems:
            add(f"{ENV_PREFIX}FEATURE_REPO", message)
    if usecase is None or usecase.features is None:
        return report

    spec = usecase.features
    report.feature_service = spec.feature_service
    tables = usecase.feature_tables
    builders: dict[str, Any] = {}
    for table in tables:
        builders[table.name], message = _import_builder(table.builder)
        if message:
            add(f"{shown}: {table.field}.builder", message)
    if usecase.model is not None and usecase.model.estimator:
        _, message = _import_function(usecase.model.estimator, "model.estimator")
        if message:
            add(f"{shown}: model.estimator", message)
    if objects is None:
        return report
    services = {s.name: s for s in objects.feature_services}
    service = services.get(spec.feature_service)
    if service is None:
        add(
            f"{shown}: features.feature_service",
            f"the feature repository {repo} defines no feature service "
            f"{spec.feature_service!r} (it defines: {', '.join(sorted(services)) or 'none'})",
        )
        return report
    views = {v.name: v for v in objects.feature_views}
    entities = {e.name: e for e in objects.entities}
    by_key = {t.key: t for t in tables}
    # per table: column its builder must produce → views that read it
    wanted: dict[str, dict[str, list[str]]] = {t.name: {} for t in tables}
    # per table: feature column → (view, declared Feast type) of every view that serves it
    declared: dict[str, dict[str, list[tuple[str, Any]]]] = {t.name: {} for t in tables}
    for table in tables[1:]:  # the entity's rows carry each context's key
        wanted[tables[0].name].setdefault(table.key, []).append(f"context {table.field}")
    for projection in service.feature_view_projections:
        view = views.get(projection.name)
        if view is None:  # Feast refuses a service over a view the repo does not define
            add(
                f"{ENV_PREFIX}FEATURE_REPO",
                f"feature service {service.name!r} reads feature view {projection.name!r}, "
                f"which {repo} does not define",
            )
            continue
        keys = [entities[n].join_key for n in view.entities if n in entities] or view.join_keys
        found = by_key.get(keys[0]) if len(keys) == 1 else None
        if found is None:
            contexts = [t.key for t in tables[1:]]
            add(
                f"{shown}: entity",
                f"feature view {view.name!r} of feature service {service.name!r} joins on "
                f"{keys}, but the use case's entity is {usecase.entity!r}"
                + (f" and its contexts' keys are {contexts}" if contexts else ""),
            )
        table = found or tables[0]
        source = getattr(view.batch_source, "name", None)
        if source != table.name:
            add(
                f"{shown}: {table.field}.table",
                f"feature view {view.name!r} of feature service {service.name!r} reads source "
                f"{source!r}, but the feature table of {table.key!r} is {table.name!r}",
            )
        timestamp = getattr(view.batch_source, "timestamp_field", "") or ""
        for column in [*keys, timestamp, *(f.name for f in projection.features)]:
            if column:
                wanted[table.name].setdefault(column, []).append(view.name)
        for feature in projection.features:
            declared[table.name].setdefault(feature.name, []).append((view.name, feature.dtype))
        report.features += [f.name for f in projection.features]
    from tasks.training import NOT_FEATURES

    inputs = [f for f in report.features if f not in NOT_FEATURES]
    for name in usecase.drift.inputs:
        if name not in inputs:
            add(
                f"{shown}: drift.inputs.{name}",
                f"{name!r} is not an input of feature service {service.name!r} "
                f"(its inputs: {', '.join(inputs)})",
            )
    for table in tables:
        if builders[table.name] is not None:
            for message in _builder_output_problems(
                usecase,
                table,
                builders[table.name],
                wanted[table.name],
                declared[table.name],
                spec.feature_service,
            ):
                add(f"{shown}: {table.field}.builder", message)
    return report


# ---- the parts ----------------------------------------------------------------------------------


def _shown(path: Path, project_dir: Path) -> str:
    """``path`` relative to the project when it lies inside it (``usecases/x.yaml``)."""
    try:
        return str(path.resolve().relative_to(project_dir.resolve()))
    except ValueError:
        return str(path)


def _suite_problems(usecase: UseCase) -> list[tuple[str, str]]:
    """Expectations Great Expectations does not know, or whose arguments it refuses."""
    import logging

    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    problems = []
    quiet = logging.getLogger("great_expectations")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # GX logs a traceback for an unknown expectation
    try:
        for name, spec in usecase.datasets.items():
            for attr in ("batch_suite", "row_suite"):
                suite = usecase.suite(getattr(spec, attr))
                for i, exp in enumerate(suite["expectations"]):
                    try:
                        if not isinstance(exp, dict) or not isinstance(exp.get("type"), str):
                            raise ValueError("an expectation needs a 'type' and 'kwargs'")
                        ExpectationConfiguration(
                            type=exp["type"], kwargs=exp.get("kwargs") or {}
                        ).to_domain_obj()
                    except Exception as exc:
                        rule = exp.get("type") if isinstance(exp, dict) else exp
                        problems.append(
                            (
                                f"datasets.{name}.{attr}",
                                f"expectation {i} ({rule}) of suite {suite['name']!r} is not a "
                                f"valid Great Expectations expectation: {_one_line(exc)}",
                            )
                        )
    finally:
        quiet.setLevel(level)
    return problems


def _one_line(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextlib.contextmanager
def _settings_environment(settings: Settings) -> Iterator[None]:
    """The ``DRIFTLOOP_*`` environment of ``settings`` while the Feast repository is imported
    (its sources.py builds the settings from the environment, as in a flow run)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    for key in saved:
        if key != "DRIFTLOOP_REQUIRE_SERVICES":
            del os.environ[key]
    os.environ.update(settings_env(settings))
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
            del os.environ[key]
        os.environ.update(saved)


def _parse_repo(settings: Settings) -> tuple[RepoObjects | None, list[str]]:
    """The Feast objects of the repository (imported as ``feast apply`` imports it, nothing
    registered) and what is wrong with it."""
    from tasks.feature_store import load_repo_objects, source_path_problems

    repo = settings.feature_repo.resolve()
    errors: dict[str, Exception] = {}
    try:
        with _settings_environment(settings), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            objects = load_repo_objects(repo, errors)
    except Exception as exc:  # the repository as a whole (e.g. an unreadable .feastignore)
        return None, [f"{repo} cannot be read as a Feast repository: {_one_line(exc)}"]
    problems = [
        f"{repo / (name.replace('.', '/') + '.py')} does not import: "
        f"{type(exc).__name__}: {_one_line(exc)}"
        for name, exc in errors.items()
    ]
    return objects, problems + source_path_problems(settings, objects.data_sources)


def _import_builder(dotted: str) -> tuple[Any, str]:
    """The builder function, or None and why it cannot be had (the module that failed)."""
    return _import_function(dotted, "feature builder")


def _import_function(dotted: str, field: str) -> tuple[Any, str]:
    """The function a use case names in ``field``, or None and why it cannot be had."""
    from tasks.plugins import load_function

    importlib.invalidate_caches()  # a module written since the last import is seen
    try:
        return load_function(dotted, field), ""
    except ValueError as exc:
        return None, str(exc)


def _trial_frames(usecase: UseCase, table: FeatureTable) -> Iterator[pd.DataFrame]:
    """Inputs for a trial run of a table's builder: an empty typed frame of its source
    dataset's columns, then a small synthetic one (two ids over the lookback window)."""
    import pandas as pd

    spec = usecase.datasets[table.source_dataset]
    dtypes = {
        "string": "string",
        "int": "Int64",
        "float": "float64",
        "date": "datetime64[ns]",
        "datetime": "datetime64[ns]",
        "bool": "boolean",
    }
    yield pd.DataFrame({c: pd.Series(dtype=dtypes[t]) for c, t in spec.columns.items()})
    days = pd.date_range(TRIAL_DAY - timedelta(days=table.lookback_days - 1), TRIAL_DAY, freq="D")
    rows: list[dict[str, Any]] = []
    for entity in ("e1", "e2"):
        for day in days:
            row: dict[str, Any] = {}
            for column, kind in spec.columns.items():
                if column == table.key:
                    row[column] = entity
                elif kind in ("date", "datetime"):
                    row[column] = day
                else:
                    row[column] = {"string": "a", "int": 1, "float": 1.0, "bool": False}[kind]
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(spec.columns))
    yield frame.astype({c: dtypes[t] for c, t in spec.columns.items()})


def _builder_output_problems(
    usecase: UseCase,
    table: FeatureTable,
    builder: Any,
    wanted: dict[str, list[str]],
    declared: dict[str, list[tuple[str, Any]]],
    feature_service: str,
) -> list[str]:
    """Run a table's builder on the trial frames; the columns of ``wanted`` (the views of
    ``feature_service`` read them), and the flow's own, it does not produce (in the output of
    the first frame it runs on), and the features whose dtype does not fit the type ``declared``
    by a view (in the first output with rows: an empty frame's dtypes are never written)."""
    dotted = table.builder
    failure: Exception | None = None
    outputs: list[tuple[Any, set[str]]] = []
    for frame in _trial_frames(usecase, table):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = builder(frame, TRIAL_DAY, TRIAL_DAY)
            outputs.append((out, set(map(str, out.columns))))
        except Exception as exc:
            failure = exc
    if not outputs:
        return [
            f"{dotted} fails on a trial frame of dataset "
            f"{table.source_dataset!r} ({type(failure).__name__}: "
            f"{_one_line(failure or Exception())}); its output columns were not checked"
        ]
    columns = outputs[0][1]
    problems = []
    missing = [c for c in wanted if c not in columns]
    if missing:
        views = sorted({v for c in missing for v in wanted[c]})
        problems.append(
            f"the output of {dotted} lacks {missing}, which feature views "
            f"{views} of feature service {feature_service!r} read"
            if not any(v.startswith("context ") for v in views)
            else f"the output of {dotted} lacks {missing}, which {views} look up"
            if all(v.startswith("context ") for v in views)
            else f"the output of {dotted} lacks {missing}, which {views} read or look up"
        )
    flow_missing = [c for c in FLOW_COLUMNS if c not in columns]
    if flow_missing:
        problems.append(
            f"the output of {dotted} lacks {flow_missing}, which the feature flow needs"
        )
    with_rows = next((out for out, _ in outputs if len(out)), None)
    mismatches = [] if with_rows is None else _dtype_mismatches(with_rows, declared)
    if mismatches:
        problems.append(
            f"the output of {dotted} does not have the types feature service "
            f"{feature_service!r} declares: {'; '.join(mismatches)}"
        )
    return problems


#: The pandas dtypes that fit a Feast type (by its value type); other types are not checked.
DTYPES: dict[str, tuple[str, Any]] = {
    "STRING": ("strings", lambda d: _is("string", d) or _is("object", d) or _strings_category(d)),
    "BYTES": ("bytes", lambda d: _is("object", d)),
    "INT32": ("integers", lambda d: _is("integer", d)),
    "INT64": ("integers", lambda d: _is("integer", d)),
    "FLOAT": ("floats", lambda d: _is("float", d)),
    "DOUBLE": ("floats", lambda d: _is("float", d)),
    "BOOL": ("booleans", lambda d: _is("bool", d)),
    "UNIX_TIMESTAMP": ("datetimes", lambda d: _is("datetime64_any", d)),
}


def _is(kind: str, dtype: Any) -> bool:
    from pandas.api import types

    check: Any = getattr(types, f"is_{kind}_dtype")
    return bool(check(dtype))


def _strings_category(dtype: Any) -> bool:
    """A categorical dtype of strings (Parquet stores it as dictionary-encoded strings)."""
    categories = getattr(dtype, "categories", None)
    return categories is not None and _is("string", categories.dtype)


def _dtype_mismatches(out: pd.DataFrame, declared: dict[str, list[tuple[str, Any]]]) -> list[str]:
    """``'x' is int64, feature view 'v' declares Float64 (floats)`` for every declared feature
    of ``out`` whose dtype does not fit."""
    found = []
    for column, views in declared.items():
        if column not in out.columns or out.columns.tolist().count(column) != 1:
            continue
        dtype = out[column].dtype
        for view, feast_type in views:
            try:
                kind = feast_type.to_value_type().name
            except (AttributeError, ValueError, NotImplementedError):
                continue
            if kind in DTYPES and not DTYPES[kind][1](dtype):
                found.append(
                    f"{column!r} is {dtype}, feature view {view!r} declares {feast_type} "
                    f"({DTYPES[kind][0]})"
                )
    return found


# ---- the declared features, for the docs --------------------------------------------------------


def declared_features(objects: RepoObjects) -> list[tuple[str, str, str, str]]:
    """``(view, feature, Feast type, description)`` of every feature of every view of a
    repository: the views by name, their features in the order they declare them. The views'
    ``Field``s are the one declaration of a feature; the docs' feature tables are this."""
    return [
        (view.name, field.name, str(field.dtype), field.description)
        for view in sorted(objects.feature_views, key=lambda v: v.name)
        for field in view.features
    ]


def feature_table(objects: RepoObjects) -> str:
    """The features a repository declares (:func:`declared_features`) as a Markdown table."""
    lines = ["| view | feature | type | description |", "|---|---|---|---|"]
    for view, name, dtype, description in declared_features(objects):
        text = " ".join(description.split()).replace("|", "\\|") or "-"
        lines.append(f"| `{view}` | `{name}` | {dtype} | {text} |")
    return "\n".join(lines) + "\n"


# ---- the gate of the commands that run flows or start servers ----------------------------------


def fingerprint(settings: Settings) -> str:
    """A digest of everything :func:`check` reads: the settings, the use case and its suites,
    the Feast repository's files, the builder's sources (:func:`builder_sources`), the library
    versions."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256()

    def feed(label: str, data: bytes) -> None:
        digest.update(label.encode() + b"\0" + hashlib.sha256(data).digest())

    def feed_file(path: Path) -> None:
        try:
            feed(str(path), path.read_bytes())
        except OSError:
            feed(str(path), b"<missing>")

    feed("settings", json.dumps(settings_env(settings), sort_keys=True).encode())
    for package in ("feast", "great-expectations", "pandas", "pydantic"):
        try:
            feed(package, version(package).encode())
        except PackageNotFoundError:
            feed(package, b"")
    for module in (sys.modules[__name__].__file__, sys.modules[load_usecase.__module__].__file__):
        if module:
            feed_file(Path(module))
    feed_file(settings.usecase)
    try:
        usecase = load_usecase(settings.usecase)
    except (UseCaseError, ValueError, OSError):
        usecase = None
    if usecase is not None:
        for spec in usecase.datasets.values():
            for suite in (spec.batch_suite, spec.row_suite):
                feed_file(suite if suite.is_absolute() else usecase.root / suite)
        for table in usecase.feature_tables:
            module = table.builder.partition(":")[0]
            sources = builder_sources(module)
            feed("builder", "\n".join(map(str, sources)).encode() or b"<not found>")
            for path in sources:
                feed_file(path)
    repo = settings.feature_repo
    if repo.is_dir():
        for path in sorted(repo.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                feed_file(path)
    return digest.hexdigest()


def _module_file(name: str) -> Path | None:
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = found.origin if found is not None else None
    return Path(origin) if origin and origin.endswith(".py") else None


def builder_sources(module: str) -> list[Path]:
    """The source files of a builder's module and of the modules of its own top-level package
    that it imports, transitively (``examples._grid`` for the example builders), found by
    reading their imports, not by importing them: the check's cache key must be cheap. The
    build's own fingerprint (:func:`tasks.feature_code.builder_code`) follows what the builder's
    code reaches at run time."""
    import ast

    package = module.split(".", 1)[0]
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        try:
            tree = ast.parse(path.read_bytes())
        except (OSError, SyntaxError, ValueError):
            continue
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")
                    parent = ".".join(parts[: len(parts) - node.level + 1])
                    base = f"{parent}.{base}".strip(".") if base else parent
                todo += [base, *(f"{base}.{a.name}" for a in node.names)]
        todo = [t for t in todo if t.split(".", 1)[0] == package and t not in seen]
    return [seen[name] for name in sorted(seen)]


def check_cached(settings: Settings) -> list[Problem]:
    """:func:`check`, skipped when nothing it reads changed since it last found no problem.

    The stamp (``<state dir>/check.json``) is written only after a clean check, and only when
    the state directory's parent exists (a check creates no lake). Commands that run flows or
    start servers go through this gate; ``driftloop check`` always checks everything.
    """
    stamp = settings.state_path / STAMP_FILE
    digest = fingerprint(settings)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(stamp.read_text(encoding="utf-8")).get("fingerprint") == digest:
            return []
    problems = check(settings)
    if not problems and settings.state_path.parent.is_dir():
        with contextlib.suppress(OSError):
            settings.state_path.mkdir(exist_ok=True)
            tmp = stamp.with_suffix(".tmp")
            tmp.write_text(json.dumps({"fingerprint": digest}), encoding="utf-8")
            tmp.replace(stamp)
    return problems
