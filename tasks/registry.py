"""The model registry (MLflow, aliases not stages) and the promotion gate.

* :func:`log_challenger` logs one training run — params, metrics, the model with its signature
  and input example, the drift reference and the training report — registers a new version and
  points the ``challenger`` alias at it.
* :func:`decide` is the gate, a pure function of holdout scores: a paired bootstrap of the metric
  delta (challenger - champion) on the same rows; promote when the lower confidence bound beats
  the margin, calibration did not get worse beyond a tolerance and the sanity checks pass. With
  no champion, an absolute floor decides.
* :func:`promote` records the decision and its evidence as tags on the version and, when the
  decision is to promote, moves ``champion`` — compare-and-set under an inter-process lock, so two
  racing promotions cannot both replace the same champion. :func:`rollback` moves it back.

Every function takes an explicit client (or tracking URI); nothing here sets MLflow's global
tracking URI, and MLflow is imported only when a function needs it.

Models are stored in MLflow's ``skops`` format, its safe default: loading only instantiates the
types on an allow-list (scikit-learn's public estimators plus :data:`SKOPS_TRUSTED_TYPES`, the
private helper classes a calibrated gradient-boosting pipeline contains, plus those of a use
case's own estimator: see :func:`trusted_types`) instead of running arbitrary pickled code.
"""

from __future__ import annotations

import datetime as dt
import html
import importlib.metadata
import json
import math
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import pandas as pd

from tasks import report
from tasks.report import img, png_data_uri
from tasks.train import (
    FeatureSchema,
    calibration_figure,
    calibration_table,
    expected_calibration_error,
    labels,
    predict_scores,
    roc_figure,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from driftloop.usecase import ModelSpec

Metric = Literal["roc_auc", "pr_auc", "rmse", "mae"]
#: metrics of an error (a regression's): lower is better
ERROR_METRICS = ("rmse", "mae")

CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
#: Registered-model tag holding the JSON list of versions that were champion, oldest first.
HISTORY_TAG: Final = "driftloop.champion_history"
#: Version tag holding the gate's verdict (``promoted`` / ``rejected``); a version without it
#: has not been judged yet.
DECISION_TAG: Final = "driftloop.decision"
#: Version tag holding the whole :class:`Decision` as JSON (what a report is rebuilt from).
DECISION_JSON_TAG: Final = "driftloop.decision_json"
#: Version tag set once the decision's event has been emitted (see ``tasks.training``).
ANNOUNCED_TAG: Final = "driftloop.announced"
#: Run tag saying why a run left RUNNING by a stopped process was marked KILLED.
KILLED_REASON_TAG: Final = "driftloop.killed_reason"
#: Returned by :func:`promote` when the champion changed after the decision was made.
STALE: Final = "stale"
MAX_HISTORY = 100

#: The non-public classes inside a fitted :func:`tasks.train.fit` model that skops must be told
#: to trust (its public scikit-learn estimators are trusted by default).
SKOPS_TRUSTED_TYPES: Final = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)
#: Types skops does not trust by default that are data, not code, and that scikit-learn's own
#: estimators hold (``SimpleImputer`` keeps the dtypes it fitted): a dtype is rebuilt from its
#: name, so trusting it runs nothing. Trusted for any model that holds them.
DATA_TYPES: Final = ("numpy.dtype",)


def _estimator_packages(model: Any) -> set[str]:
    """Top-level packages of the classes of ``model`` and of every estimator inside it (steps,
    transformers, wrapped and fitted sub-estimators), found by walking the objects' attributes."""
    packages: set[str] = set()
    seen: set[int] = set()
    todo: list[Any] = [model]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, list | tuple):
            todo.extend(obj)
        elif hasattr(obj, "get_params") and not isinstance(obj, type):
            packages.add(type(obj).__module__.partition(".")[0])
            todo.extend(vars(obj).values())
    return packages


def trusted_types(model: Any, found: Collection[str] | None = None) -> list[str]:
    """The types that loading ``model`` from its skops file must trust: :data:`SKOPS_TRUSTED_TYPES`
    plus those of the types skops does not trust by default that are plain data
    (:data:`DATA_TYPES`) or come from a package one of the model's estimator classes comes from (``sklearn.tree._tree.Tree`` for a random forest, a
    use case's own helper classes for an estimator defined in its own package).

    Why not trust every type the dump holds: the allow-list is what keeps loading from running
    arbitrary code. A type from a package the use case already chose its estimator from (by
    naming it in ``model.estimator``) adds no code the model did not already depend on; anything
    else — a function from ``builtins`` or ``os``, a class of some unrelated library that ended up
    inside the model — stays untrusted, and :func:`log_challenger` refuses to log such a model.

    ``found``: the untrusted types of the model's skops dump, when already known.
    """
    if found is None:
        found = skops_untrusted_types(model)
    packages = _estimator_packages(model) - {"builtins"}
    extra = sorted(
        t
        for t in found
        if (t.partition(".")[0] in packages or t in DATA_TYPES) and t not in SKOPS_TRUSTED_TYPES
    )
    return [*SKOPS_TRUSTED_TYPES, *extra]


def skops_untrusted_types(model: Any) -> list[str]:
    """The types in ``model``'s skops dump that skops does not trust by default."""
    import skops.io

    return list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


#: What a scoring environment needs to load the model (pinned to the versions that wrote it).
MODEL_REQUIREMENTS: Final = ("scikit-learn", "skops", "numpy", "scipy", "pandas")


class RegistryError(RuntimeError):
    """The registry is not in the state an operation needs (e.g. nothing to roll back to)."""


# ---- clients and locations ----------------------------------------------------------------------


def client_for(tracking: MlflowClient | str) -> MlflowClient:
    """An explicit client for a tracking URI (the registry lives in the same store)."""
    from mlflow import MlflowClient

    from tasks.tracking_store import seed_sqlite_store

    if isinstance(tracking, str):
        seed_sqlite_store(tracking)  # a new SQLite store without MLflow's 2-4 s of migrations
        return MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    return tracking


def artifact_location(artifact_root: str, experiment: str) -> str:
    """Where an experiment's artifacts go: ``<root>/<experiment>`` as a URI."""
    if "://" in artifact_root:
        return f"{artifact_root.rstrip('/')}/{experiment}"
    return (Path(artifact_root).expanduser().resolve() / experiment).as_uri()


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str) -> str:
    """The id of experiment ``name``, created with its artifacts under ``artifact_root``."""
    from mlflow.exceptions import MlflowException

    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            client.restore_experiment(existing.experiment_id)
        return str(existing.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location(artifact_root, name)))
    except MlflowException:  # created concurrently by another process
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description="Registered by driftloop; `champion` is served."
            )
        except MlflowException:  # created concurrently by another process
            client.get_registered_model(name)


def _conda_env() -> dict[str, Any]:
    """The model's environment, pinned to the versions that wrote it. Given explicitly, MLflow
    skips inferring requirements (which loads the model in a subprocess, seconds per model)."""
    python = ".".join(str(p) for p in sys.version_info[:3])
    pins = [f"{pkg}=={importlib.metadata.version(pkg)}" for pkg in MODEL_REQUIREMENTS]
    return {
        "name": "driftloop-model",
        "channels": ["conda-forge"],
        "dependencies": [f"python={python}", "pip", {"pip": pins}],
    }


def _text(value: object) -> str:
    if value is None:
        return ""
    iso = getattr(value, "isoformat", None)
    return str(iso()) if callable(iso) else str(value)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ---- logging a challenger -----------------------------------------------------------------------


def lineage_tags(
    *,
    feature_service: str,
    data_window: tuple[object, object],
    row_counts: Mapping[str, int],
    data_hash: str,
    git_sha: str | None,
) -> dict[str, str]:
    """The tags that say what a model was trained on (set on the run and on the version)."""
    tags = {
        "driftloop.feature_service": feature_service,
        "driftloop.data_window_start": _text(data_window[0]),
        "driftloop.data_window_end": _text(data_window[1]),
        "driftloop.data_hash": data_hash,
        "driftloop.git_sha": git_sha or "unknown",
    }
    tags.update({f"driftloop.rows_{split}": str(int(n)) for split, n in row_counts.items()})
    return tags


def log_challenger(
    model: Any,
    *,
    tracking_uri: str,
    artifact_root: str,
    experiment: str,
    registered_name: str,
    metrics: Mapping[str, float],
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    reference: Mapping[str, Any],
    report_html: str,
    input_example: pd.DataFrame,
    feature_service: str,
    data_window: tuple[object, object],
    row_counts: Mapping[str, int],
    data_hash: str,
    git_sha: str | None,
    run_name: str | None = None,
) -> str:
    """Log one training run and register its model as a new version with alias ``challenger``.

    The run holds ``params``, the finite ``metrics``, lineage tags, ``reference.json`` and
    ``training_report.html``; the model (skops, signature inferred from ``input_example`` and its
    ``predict_proba`` output, or ``predict`` for a regressor) is an MLflow LoggedModel of the run. Returns the new version.
    """
    import mlflow.sklearn
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Param, RunTag
    from mlflow.entities import Metric as MlflowMetric
    from mlflow.models import Model, infer_signature

    client = client_for(tracking_uri)
    experiment_id = ensure_experiment(client, experiment, artifact_root)
    all_tags = {
        **lineage_tags(
            feature_service=feature_service,
            data_window=data_window,
            row_counts=row_counts,
            data_hash=data_hash,
            git_sha=git_sha,
        ),
        **{str(k): str(v) for k, v in tags.items()},
    }
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    try:
        client.log_batch(run_id, params=[Param(str(k), _text(v)[:6000]) for k, v in params.items()])
        client.log_dict(run_id, dict(reference), "reference.json")
        client.log_text(run_id, report_html, "training_report.html")

        logged = client.create_logged_model(
            experiment_id,
            name="model",
            source_run_id=run_id,
            tags=all_tags,
            params={str(k): _text(v)[:6000] for k, v in params.items()},
            model_type="sklearn",
        )
        found = skops_untrusted_types(model)
        trusted = trusted_types(model, found)
        refused = sorted(set(found) - set(trusted))
        if refused:
            raise RegistryError(
                f"the model holds types that loading it would have to trust but that come from "
                f"none of the packages of its estimator classes: {refused}"
            )
        # a classifier's pyfunc answers probabilities; a regressor (no predict_proba) its values
        predict_fn = "predict_proba" if hasattr(model, "predict_proba") else "predict"
        signature = infer_signature(input_example, getattr(model, predict_fn)(input_example))
        with tempfile.TemporaryDirectory(prefix="driftloop-model-") as tmp:
            local = Path(tmp) / "model"
            mlflow.sklearn.save_model(
                model,
                str(local),
                mlflow_model=Model(
                    artifact_path=logged.artifact_location,
                    model_uuid=logged.model_id,
                    run_id=run_id,
                    model_id=logged.model_id,
                ),
                signature=signature,
                input_example=input_example,
                conda_env=_conda_env(),
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                skops_trusted_types=trusted,
                pyfunc_predict_fn=predict_fn,
            )
            client.log_model_artifacts(logged.model_id, str(local))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        stamp = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        client.log_batch(
            run_id,
            metrics=[
                MlflowMetric(str(k), float(v), stamp, 0, model_id=logged.model_id)
                for k, v in metrics.items()
                if v is not None and math.isfinite(float(v))
            ],
            tags=[RunTag("driftloop.model_id", logged.model_id)],
        )

        _ensure_registered_model(client, registered_name)
        # The concrete artifact location as source: given a ``models:/<id>`` source the SQL
        # registry looks the model up through MLflow's *global* tracking URI, not this client's.
        version = client.create_model_version(
            registered_name,
            source=logged.artifact_location,
            run_id=run_id,
            tags=all_tags,
            model_id=logged.model_id,
        )
        client.set_registered_model_alias(registered_name, CHALLENGER, str(version.version))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return str(version.version)


# ---- reading the registry -----------------------------------------------------------------------


def version_for_alias(tracking: MlflowClient | str, name: str, alias: str) -> str | None:
    """The version an alias points to, or None (also when the model does not exist)."""
    from mlflow.exceptions import MlflowException

    client = client_for(tracking)
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        # a missing model is RESOURCE_DOES_NOT_EXIST; a missing alias INVALID_PARAMETER_VALUE
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or (
            exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in exc.message
        ):
            return None
        raise


def champion_version(tracking: MlflowClient | str, name: str) -> str | None:
    """The version the ``champion`` alias points to, or None."""
    return version_for_alias(tracking, name, CHAMPION)


def champion_history(tracking: MlflowClient | str, name: str) -> list[str]:
    """Versions that became champion, oldest first (rollbacks remove the rolled-back entry)."""
    from mlflow.exceptions import MlflowException

    client = client_for(tracking)
    try:
        raw = client.get_registered_model(name).tags.get(HISTORY_TAG)
    except MlflowException:
        return []
    return [str(v) for v in json.loads(raw)] if raw else []


def versions(tracking: MlflowClient | str, name: str) -> list[ModelVersion]:
    """Every version of registered model ``name``, oldest first (none when it does not exist)."""
    client = client_for(tracking)
    found = list(client.search_model_versions(f"name = '{name}'"))
    return sorted(found, key=lambda v: int(v.version))


def _fetch(artifact_uri: str, dst: str) -> Path:
    """A local path holding ``artifact_uri``: the file itself for a local store, else a copy."""
    parsed = urllib.parse.urlparse(artifact_uri)
    if parsed.scheme == "file":
        local = Path(urllib.request.url2pathname(parsed.path))
    elif not parsed.scheme:
        local = Path(artifact_uri)
    else:
        from mlflow.artifacts import download_artifacts

        return Path(download_artifacts(artifact_uri=artifact_uri, dst_path=dst))
    if not local.exists():
        raise RegistryError(f"artifact {artifact_uri} does not exist")
    return local


def _download(client: MlflowClient, name: str, version: str, dst: str, path: str = "") -> Path:
    uri = client.get_model_version_download_uri(name, str(version)).rstrip("/")
    return _fetch(f"{uri}/{path}" if path else uri, dst)


def load_version(tracking: MlflowClient | str, name: str, version: str) -> Any:
    """The fitted scikit-learn model of one registered version."""
    import mlflow.sklearn

    client = client_for(tracking)
    with tempfile.TemporaryDirectory(prefix="driftloop-load-") as tmp:
        local = _download(client, name, version, tmp)
        return mlflow.sklearn.load_model(str(local))


#: Version tag naming the run artifact that holds the version's drift reference now (absent:
#: ``reference.json``, the one written at training)
REFERENCE_TAG: Final = "driftloop.reference"


def load_reference(tracking: MlflowClient | str, name: str, version: str) -> dict[str, Any]:
    """The drift reference of a version: ``reference.json`` of its training run, or the one a
    re-baseline put in its place (:func:`log_reference`)."""
    client = client_for(tracking)
    found = client.get_model_version(name, str(version))
    if not found.run_id:
        raise RegistryError(f"{name} v{version} has no training run")
    artifact = (found.tags or {}).get(REFERENCE_TAG, "reference.json")
    artifact_uri = client.get_run(found.run_id).info.artifact_uri.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="driftloop-ref-") as tmp:
        path = _fetch(f"{artifact_uri}/{artifact}", tmp)
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def log_reference(
    tracking: MlflowClient | str,
    name: str,
    version: str,
    reference: Mapping[str, Any],
    *,
    label: str,
) -> str:
    """Store a new drift reference for ``version`` (``references/reference-<label>.json`` in
    its training run, next to the earlier ones) and make it the one drift checks read (tag
    :data:`REFERENCE_TAG`); returns the artifact's path in the run."""
    client = client_for(tracking)
    run_id = client.get_model_version(name, str(version)).run_id
    if not run_id:
        raise RegistryError(f"{name} v{version} has no training run")
    path = f"references/reference-{label}.json"
    client.log_dict(run_id, dict(reference), path)
    client.set_model_version_tag(name, str(version), REFERENCE_TAG, path)
    return path


def version_inputs(tracking: MlflowClient | str, name: str, version: str) -> dict[str, str]:
    """The input columns of a version's signature: ``{column: mlflow type}``."""
    from mlflow.models import Model

    client = client_for(tracking)
    with tempfile.TemporaryDirectory(prefix="driftloop-sig-") as tmp:
        mlmodel = Model.load(str(_download(client, name, version, tmp, "MLmodel")))
    if mlmodel.signature is None or mlmodel.signature.inputs is None:
        return {}
    return {str(c["name"]): str(c["type"]) for c in mlmodel.signature.inputs.to_dict()}


# ---- the gate -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateInfo:
    """What the sanity checks look at for one model version."""

    version: str | None
    inputs: Mapping[str, str]  # signature input column -> type
    feature_service: str | None
    scores: np.ndarray | None = None  # its probabilities on the holdout


def candidate_info(
    tracking: MlflowClient | str, name: str, version: str, scores: np.ndarray | None = None
) -> CandidateInfo:
    client = client_for(tracking)
    tags = client.get_model_version(name, str(version)).tags
    return CandidateInfo(
        version=str(version),
        inputs=version_inputs(client, name, version),
        feature_service=tags.get("driftloop.feature_service"),
        scores=scores,
    )


def probabilities_valid(scores: np.ndarray | None) -> bool:
    """Non-empty, no NaN/inf, all within [0, 1]."""
    if scores is None:
        return False
    arr = np.asarray(scores, dtype=np.float64)
    return bool(arr.size > 0 and np.isfinite(arr).all() and (arr >= 0).all() and (arr <= 1).all())


def predictions_valid(scores: np.ndarray | None) -> bool:
    """Non-empty, no NaN/inf (a regression's predicted outcomes)."""
    if scores is None:
        return False
    arr = np.asarray(scores, dtype=np.float64)
    return bool(arr.size > 0 and np.isfinite(arr).all())


def sanity_checks(
    champion_info: CandidateInfo | None,
    challenger_info: CandidateInfo,
    *,
    expected_feature_service: str | None = None,
    regression: bool = False,
) -> dict[str, bool]:
    """Checks that must hold before a challenger may replace the champion.

    ``signature_compatible``: the challenger has a signature with the champion's input columns
    and types; ``same_feature_service``: both read the same feature service (and the expected one
    when given); ``probabilities_valid``: its holdout scores are probabilities without NaN
    (``predictions_valid`` for a regression: finite predicted outcomes).
    """
    inputs_ok = bool(challenger_info.inputs) and (
        champion_info is None or dict(champion_info.inputs) == dict(challenger_info.inputs)
    )
    service = challenger_info.feature_service
    service_ok = bool(service) and (
        (champion_info is None or champion_info.feature_service == service)
        and (expected_feature_service is None or expected_feature_service == service)
    )
    return {
        "signature_compatible": inputs_ok,
        "same_feature_service": service_ok,
        **(
            {"predictions_valid": predictions_valid(challenger_info.scores)}
            if regression
            else {"probabilities_valid": probabilities_valid(challenger_info.scores)}
        ),
    }


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and the evidence behind it."""

    promote: bool
    reason: str
    metric: str
    challenger_value: float
    champion_value: float | None
    delta_ci: tuple[float, float] | None
    challenger_ece: float
    champion_ece: float | None
    sanity: dict[str, bool]
    samples: int  # bootstrap resamples used (those with both classes)
    compared_with: str | None = None  # the champion version the challenger was measured against
    delta: float | None = None
    margin: float = 0.0
    floor: float = 0.0
    confidence: float = 0.95
    calibration_tolerance: float = 0.0
    n: int = 0
    positives: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["delta_ci"] = list(self.delta_ci) if self.delta_ci is not None else None
        return out


def _resample_counts(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """``rows`` bootstrap resamples of n rows, as multiplicities (rows x n)."""
    idx = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


@dataclass(frozen=True)
class _Ranked:
    """Scores sorted once, with the boundaries of their tie groups."""

    order: np.ndarray
    y_sorted: np.ndarray
    starts: np.ndarray

    @classmethod
    def of(cls, y: np.ndarray, scores: np.ndarray) -> _Ranked:
        order = np.argsort(scores, kind="mergesort")
        s_sorted = scores[order]
        starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
        return cls(order, y[order].astype(np.float64), starts)


def _weighted_metric(
    ranked: _Ranked, counts: np.ndarray, metric: Metric
) -> tuple[np.ndarray, np.ndarray]:
    """The metric on each weighted resample (rows of ``counts``), ties handled like scikit-learn:
    ROC AUC via ranks (a tie counts half), average precision over distinct thresholds. Returns
    (values, valid) where valid marks resamples holding both classes."""
    w = counts[:, ranked.order]
    pos = np.add.reduceat(w * ranked.y_sorted, ranked.starts, axis=1)
    neg = np.add.reduceat(w, ranked.starts, axis=1) - pos
    n_pos = pos.sum(axis=1)
    n_neg = neg.sum(axis=1)
    valid = (n_pos > 0) & (n_neg > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "roc_auc":
            neg_below = np.cumsum(neg, axis=1) - neg
            values = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
        elif metric == "pr_auc":
            pos_desc = pos[:, ::-1]
            tp = np.cumsum(pos_desc, axis=1)
            predicted = tp + np.cumsum(neg[:, ::-1], axis=1)
            precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
            values = (pos_desc * precision).sum(axis=1) / n_pos
        else:
            raise ValueError(f"unknown metric {metric!r} (roc_auc or pr_auc)")
    return np.where(valid, values, np.nan), valid


def _row_errors(y: np.ndarray, predicted: np.ndarray, metric: Metric) -> np.ndarray:
    """Per row: the squared error (rmse) or the absolute error (mae)."""
    err = np.asarray(predicted, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return err**2 if metric == "rmse" else np.abs(err)


def _weighted_error(errors: np.ndarray, counts: np.ndarray, metric: Metric) -> np.ndarray:
    """The error on each weighted resample (rows of ``counts``) from per-row errors."""
    mean = counts @ errors / counts.sum(axis=1)
    return np.sqrt(mean) if metric == "rmse" else mean


def metric_value(y: np.ndarray, scores: np.ndarray, metric: Metric) -> float:
    """The metric on the full sample (NaN with a single class; NaN without rows for an
    error metric)."""
    if metric in ERROR_METRICS:
        if len(y) == 0:
            return math.nan
        errors = _row_errors(np.asarray(y), np.asarray(scores), metric)
        return float(_weighted_error(errors, np.ones((1, len(errors))), metric)[0])
    y = np.asarray(y)
    ranked = _Ranked.of(y, np.asarray(scores, dtype=np.float64))
    values, _ = _weighted_metric(ranked, np.ones((1, len(y))), metric)
    return float(values[0])


def bootstrap_deltas(
    champion_scores: np.ndarray,
    challenger_scores: np.ndarray,
    y: np.ndarray,
    *,
    metric: Metric,
    samples: int,
    seed: int,
    max_cells: int = 2_000_000,
) -> np.ndarray:
    """Paired bootstrap: the metric's improvement on ``samples`` resamples of the rows (the same
    resampled rows for both): challenger - champion, or champion - challenger for an error
    metric (rmse, mae); resamples with a single class are dropped (a ranking metric)."""
    y = np.asarray(y)
    a = np.asarray(champion_scores, dtype=np.float64)
    b = np.asarray(challenger_scores, dtype=np.float64)
    n = len(y)
    if not (len(a) == len(b) == n):
        raise ValueError(f"score lengths {len(a)}, {len(b)} do not match {n} labels")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(samples, max_cells // max(n, 1)))
    out: list[np.ndarray] = []
    done = 0
    if metric in ERROR_METRICS:
        err_a, err_b = _row_errors(y, a, metric), _row_errors(y, b, metric)
        while done < samples:
            rows = min(chunk, samples - done)
            counts = _resample_counts(rng, n, rows)
            out.append(
                _weighted_error(err_a, counts, metric) - _weighted_error(err_b, counts, metric)
            )
            done += rows
        return np.concatenate(out) if out else np.empty(0)
    ranked_a, ranked_b = _Ranked.of(y, a), _Ranked.of(y, b)
    while done < samples:
        rows = min(chunk, samples - done)
        counts = _resample_counts(rng, n, rows)
        champ, valid = _weighted_metric(ranked_a, counts, metric)
        chall, _ = _weighted_metric(ranked_b, counts, metric)
        out.append((chall - champ)[valid])
        done += rows
    return np.concatenate(out) if out else np.empty(0)


def decide(
    champion_scores: np.ndarray | None,
    challenger_scores: np.ndarray,
    y: np.ndarray,
    *,
    margin: float,
    floor: float,
    metric: Metric,
    samples: int,
    confidence: float,
    calibration_tolerance: float,
    seed: int,
    sanity: Mapping[str, bool],
    champion_version: str | None = None,
) -> Decision:
    """The promotion gate (pure). With a champion: promote iff the lower bound of the
    ``confidence`` percentile CI of the paired-bootstrap delta exceeds ``margin``, the
    challenger's ECE is at most the champion's + ``calibration_tolerance`` and every sanity check
    passed. Without one: promote iff the challenger's metric reaches ``floor`` and the checks
    pass. ``champion_version`` is recorded as ``compared_with`` (promotion refuses a decision
    whose champion is no longer the champion).

    With an error metric (rmse, mae: a regression's predicted outcomes) the delta is the
    decrease of the error, there is no calibration check, and the floor is a skill: the
    challenger's error must be at most ``1 - floor`` times the error of predicting the holdout's
    mean (rmse) or median (mae) for every row."""
    if metric in ERROR_METRICS:
        return _decide_error(
            champion_scores,
            challenger_scores,
            y,
            margin=margin,
            floor=floor,
            metric=metric,
            samples=samples,
            confidence=confidence,
            seed=seed,
            sanity=sanity,
            champion_version=champion_version,
        )
    y = np.asarray(y).astype(np.int64)
    ch = np.asarray(challenger_scores, dtype=np.float64)
    checks = {str(k): bool(v) for k, v in sanity.items()}
    checks["challenger_scores_valid"] = len(ch) == len(y) and probabilities_valid(ch)
    if champion_scores is not None:
        champ = np.asarray(champion_scores, dtype=np.float64)
        checks["champion_scores_valid"] = len(champ) == len(y) and bool(np.isfinite(champ).all())
    else:
        champ = None
    base: dict[str, Any] = {
        "metric": metric,
        "sanity": checks,
        "compared_with": champion_version,
        "margin": float(margin),
        "floor": float(floor),
        "confidence": float(confidence),
        "calibration_tolerance": float(calibration_tolerance),
        "n": len(y),
        "positives": int(y.sum()),
    }
    # a champion that cannot be scored is judged like no champion: the floor decides
    champion_usable = champ is not None and checks["champion_scores_valid"]
    failed = sorted(k for k, ok in checks.items() if not ok and k != "champion_scores_valid")
    problems = [f"sanity checks failed: {', '.join(failed)}"] if failed else []
    both_classes = len(y) > 0 and y.min() != y.max()
    if not both_classes or not checks["challenger_scores_valid"]:  # nothing to measure
        if not both_classes:
            problems.append(
                f"the holdout has a single class ({len(y)} rows, {int(y.sum())} positives)"
            )
        return Decision(
            promote=False,
            reason="rejected: " + "; ".join(problems),
            challenger_value=math.nan,
            champion_value=None,
            delta_ci=None,
            challenger_ece=math.nan,
            champion_ece=None,
            samples=0,
            **base,
        )

    ch_value = metric_value(y, ch, metric)
    ch_ece = expected_calibration_error(y, ch)
    if champ is None or not champion_usable:
        context = "no champion" if champ is None else "the champion's scores are unusable"
        reaches = ch_value >= floor
        if not reaches:
            problems.append("below the floor")
        evidence = f"{context}; {metric} {ch_value:.4f} vs floor {floor:.4f}"
        return Decision(
            promote=reaches and not failed,
            reason=_reason(problems, evidence),
            challenger_value=ch_value,
            champion_value=None,
            delta_ci=None,
            challenger_ece=ch_ece,
            champion_ece=None,
            samples=0,
            **base,
        )

    champ_value = metric_value(y, champ, metric)
    champ_ece = expected_calibration_error(y, champ)
    deltas = bootstrap_deltas(champ, ch, y, metric=metric, samples=samples, seed=seed)
    alpha = 1 - confidence
    if len(deltas):
        lo, hi = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
        ci: tuple[float, float] | None = (float(lo), float(hi))
    else:
        ci = None
    better = ci is not None and ci[0] > margin
    calibrated = ch_ece <= champ_ece + calibration_tolerance
    if not better:
        problems.append("not better beyond noise")
    if not calibrated:
        problems.append("calibration got worse")
    ci_text = f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "undefined"
    evidence = (
        f"{metric} {ch_value:.4f} vs champion {champ_value:.4f}; "
        f"{confidence:.0%} CI of the delta {ci_text} vs margin {margin:+.4f}; "
        f"ECE {ch_ece:.4f} vs champion {champ_ece:.4f} (+{calibration_tolerance:.4f} allowed)"
    )
    return Decision(
        promote=better and calibrated and not failed,
        reason=_reason(problems, evidence),
        challenger_value=ch_value,
        champion_value=champ_value,
        delta_ci=ci,
        challenger_ece=ch_ece,
        champion_ece=champ_ece,
        samples=len(deltas),
        delta=ch_value - champ_value,
        **base,
    )


def _decide_error(
    champion_scores: np.ndarray | None,
    challenger_scores: np.ndarray,
    y: np.ndarray,
    *,
    margin: float,
    floor: float,
    metric: Metric,
    samples: int,
    confidence: float,
    seed: int,
    sanity: Mapping[str, bool],
    champion_version: str | None,
) -> Decision:
    """:func:`decide` for an error metric (see there)."""
    y = np.asarray(y, dtype=np.float64)
    ch = np.asarray(challenger_scores, dtype=np.float64)
    checks = {str(k): bool(v) for k, v in sanity.items()}
    checks["challenger_scores_valid"] = len(ch) == len(y) and predictions_valid(ch)
    champ = None if champion_scores is None else np.asarray(champion_scores, dtype=np.float64)
    if champ is not None:
        checks["champion_scores_valid"] = len(champ) == len(y) and predictions_valid(champ)
    base: dict[str, Any] = {
        "metric": metric,
        "sanity": checks,
        "compared_with": champion_version,
        "margin": float(margin),
        "floor": float(floor),
        "confidence": float(confidence),
        "calibration_tolerance": 0.0,
        "n": len(y),
        "positives": int((y > 0).sum()),
        "challenger_ece": math.nan,
        "champion_ece": None,
    }
    failed = sorted(k for k, ok in checks.items() if not ok and k != "champion_scores_valid")
    problems = [f"sanity checks failed: {', '.join(failed)}"] if failed else []
    varies = len(y) > 0 and y.min() != y.max()
    if not varies or not checks["challenger_scores_valid"]:
        if not varies:
            problems.append(f"the holdout's outcomes do not vary ({len(y)} rows)")
        return Decision(
            promote=False,
            reason="rejected: " + "; ".join(problems),
            challenger_value=math.nan,
            champion_value=None,
            delta_ci=None,
            samples=0,
            **base,
        )
    ch_value = metric_value(y, ch, metric)
    if champ is None or not checks["champion_scores_valid"]:
        context = "no champion" if champ is None else "the champion's scores are unusable"
        centre = float(y.mean() if metric == "rmse" else np.median(y))
        constant = metric_value(y, np.full(len(y), centre), metric)
        skill = 1.0 - ch_value / constant
        reaches = skill >= floor
        if not reaches:
            problems.append("below the floor")
        evidence = (
            f"{context}; {metric} {ch_value:.4f} vs {constant:.4f} predicting the holdout's "
            f"{'mean' if metric == 'rmse' else 'median'}: skill {skill:.4f} vs floor {floor:.4f}"
        )
        return Decision(
            promote=reaches and not failed,
            reason=_reason(problems, evidence),
            challenger_value=ch_value,
            champion_value=None,
            delta_ci=None,
            samples=0,
            **base,
        )
    champ_value = metric_value(y, champ, metric)
    deltas = bootstrap_deltas(champ, ch, y, metric=metric, samples=samples, seed=seed)
    alpha = 1 - confidence
    lo, hi = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    better = float(lo) > margin
    if not better:
        problems.append("not better beyond noise")
    evidence = (
        f"{metric} {ch_value:.4f} vs champion {champ_value:.4f}; {confidence:.0%} CI of its "
        f"decrease [{lo:+.4f}, {hi:+.4f}] vs margin {margin:+.4f}"
    )
    return Decision(
        promote=better and not failed,
        reason=_reason(problems, evidence),
        challenger_value=ch_value,
        champion_value=champ_value,
        delta_ci=(float(lo), float(hi)),
        samples=len(deltas),
        delta=champ_value - ch_value,
        **{**base, "champion_ece": math.nan},
    )


def _reason(problems: list[str], evidence: str) -> str:
    return f"rejected: {'; '.join(problems)}: {evidence}" if problems else f"promoted: {evidence}"


# ---- promotion and rollback ---------------------------------------------------------------------


def promotion_lock_path(state_path: Path, name: str) -> Path:
    """The lock file that serialises promotions and rollbacks of one registered model (under
    ``Settings.state_path``; every process that promotes must see the same file)."""
    return Path(state_path) / "locks" / f"promote-{name}.lock"


def training_lock_path(state_path: Path, name: str) -> Path:
    """The lock file a train run of one registered model holds from its start to its end (so
    the next run can tell a left-over MLflow run or version from one still being worked on)."""
    return Path(state_path) / "locks" / f"train-{name}.lock"


def kill_orphaned_runs(
    tracking: MlflowClient | str,
    experiment: str,
    *,
    reason: str,
    keep: Collection[str] = (),
) -> list[str]:
    """Mark every run of ``experiment`` still in status RUNNING, except those in ``keep``, as
    KILLED with the tag ``driftloop.killed_reason``; returns their ids, oldest first.

    Only safe where no live process owns such a run (the train flow calls it holding the
    :func:`training_lock_path` lock that every training holds)."""
    from mlflow.entities import ViewType

    client = client_for(tracking)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string="attributes.status = 'RUNNING'",
        run_view_type=ViewType.ALL,
        order_by=["attributes.start_time ASC"],
    )
    killed = []
    for run in runs:
        if run.info.run_id in keep:
            continue
        client.set_tag(run.info.run_id, KILLED_REASON_TAG, reason[:4900])
        client.set_terminated(run.info.run_id, "KILLED")
        killed.append(run.info.run_id)
    return killed


def _lock(lock_path: str | Path, timeout: float) -> Any:
    from filelock import FileLock

    path = Path(lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=timeout)


def _num(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6f}"


def decision_tags(decision: Decision, decided_at: str) -> dict[str, str]:
    """The tags :func:`promote` writes on the decided version."""
    return {
        DECISION_TAG: "promoted" if decision.promote else "rejected",
        "driftloop.reason": decision.reason[:4900],
        "driftloop.metric": decision.metric,
        "driftloop.challenger_value": _num(decision.challenger_value),
        "driftloop.champion_value": _num(decision.champion_value),
        "driftloop.auc_delta_ci": json.dumps(list(decision.delta_ci)) if decision.delta_ci else "",
        "driftloop.ece_challenger": _num(decision.challenger_ece),
        "driftloop.ece_champion": _num(decision.champion_ece),
        "driftloop.sanity": json.dumps(decision.sanity, sort_keys=True),
        "driftloop.bootstrap_samples": str(decision.samples),
        "driftloop.compared_with": decision.compared_with or "none",
        "driftloop.decided_at": decided_at,
        DECISION_JSON_TAG: json.dumps(decision.to_dict(), sort_keys=True, allow_nan=True),
    }


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def decision_from_tags(tags: Mapping[str, str]) -> Decision | None:
    """The :class:`Decision` recorded on a version by :func:`promote` (None when undecided).

    Read from the full record (:data:`DECISION_JSON_TAG`) when present, else from the
    individual tags (the gate parameters they do not hold keep their defaults)."""
    if DECISION_TAG not in tags:
        return None
    raw = tags.get(DECISION_JSON_TAG)
    if raw:
        data = json.loads(raw)
        data["delta_ci"] = tuple(data["delta_ci"]) if data.get("delta_ci") else None
        return Decision(**data)
    ci = tags.get("driftloop.auc_delta_ci")
    compared = tags.get("driftloop.compared_with", "none")
    return Decision(
        promote=tags[DECISION_TAG] == "promoted",
        reason=tags.get("driftloop.reason", ""),
        metric=tags.get("driftloop.metric", "roc_auc"),
        challenger_value=_float(tags.get("driftloop.challenger_value")) or math.nan,
        champion_value=_float(tags.get("driftloop.champion_value")),
        delta_ci=tuple(json.loads(ci)) if ci else None,
        challenger_ece=_float(tags.get("driftloop.ece_challenger")) or math.nan,
        champion_ece=_float(tags.get("driftloop.ece_champion")),
        sanity=json.loads(tags.get("driftloop.sanity") or "{}"),
        samples=int(tags.get("driftloop.bootstrap_samples") or 0),
        compared_with=None if compared == "none" else compared,
    )


def promote(
    client: MlflowClient,
    name: str,
    version: str,
    decision: Decision,
    *,
    lock_path: str | Path,
    lock_timeout: float = 120.0,
) -> str | None:
    """Record ``decision`` on ``version`` and, if it says so, make the version the champion.

    Compare-and-set under an inter-process file lock: when the champion is no longer the one the
    decision was made against (``decision.compared_with``) nothing is written and :data:`STALE`
    is returned — decide again against the new champion. Otherwise returns the champion version
    in place before the call (None when there was none).
    """
    version = str(version)
    with _lock(lock_path, lock_timeout):
        current = champion_version(client, name)
        if current != decision.compared_with:
            return STALE
        for key, value in decision_tags(decision, _now()).items():
            client.set_model_version_tag(name, version, key, value)
        if decision.promote and current != version:
            history = champion_history(client, name)
            if current is not None and (not history or history[-1] != current):
                history.append(current)
            history.append(version)
            client.set_registered_model_alias(name, CHAMPION, version)
            client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-MAX_HISTORY:]))
            if version_for_alias(client, name, CHALLENGER) == version:
                client.delete_registered_model_alias(name, CHALLENGER)
        return current


def rollback(
    client: MlflowClient,
    name: str,
    *,
    lock_path: str | Path,
    reason: str = "manual rollback",
    lock_timeout: float = 120.0,
) -> str:
    """Move ``champion`` back to the version that was champion before the current one and
    return it; tags both versions. Raises :class:`RegistryError` when there is none."""
    with _lock(lock_path, lock_timeout):
        current = champion_version(client, name)
        if current is None:
            raise RegistryError(f"registered model {name!r} has no champion to roll back")
        history = champion_history(client, name)
        if current in history:
            at = len(history) - 1 - history[::-1].index(current)
            earlier = history[:at]
        else:  # the alias was moved outside driftloop: everything recorded is earlier
            earlier = history
        if not earlier:
            raise RegistryError(
                f"registered model {name!r}: champion v{current} has no previous champion "
                "to roll back to"
            )
        previous = earlier[-1]
        now = _now()
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(earlier[-MAX_HISTORY:]))
        for key, value in {
            "driftloop.rolled_back": "true",
            "driftloop.rolled_back_at": now,
            "driftloop.rolled_back_to": previous,
            "driftloop.rollback_reason": reason[:4900],
        }.items():
            client.set_model_version_tag(name, current, key, value)
        client.set_model_version_tag(name, previous, "driftloop.restored_at", now)
        client.set_model_version_tag(name, previous, "driftloop.restored_from", current)
        return previous


@dataclass(frozen=True)
class Gated:
    """What :func:`gate` did: the decision, the champion before it, and the holdout scores the
    decision compared (the champion's: None without one), for the report."""

    decision: Decision
    previous: str | None
    champion_scores: np.ndarray | None
    challenger_scores: np.ndarray


def gate(
    tracking: MlflowClient | str,
    name: str,
    version: str,
    holdout: pd.DataFrame,
    schema: FeatureSchema,
    policy: ModelSpec,
    *,
    lock_path: str | Path,
    seed: int = 0,
    expected_feature_service: str | None = None,
    max_attempts: int = 5,
) -> Gated:
    """Score champion and challenger ``version`` on ``holdout``, decide, and promote — deciding
    again if another promotion got in first. Each model is loaded and scored once per
    attempt."""
    client = client_for(tracking)
    version = str(version)
    y = labels(holdout, schema)
    challenger_model = load_version(client, name, version)
    ch_scores = predict_scores(challenger_model, holdout, schema)
    ch_info = candidate_info(client, name, version, ch_scores)
    for _ in range(max_attempts):
        current = champion_version(client, name)
        if current == version:
            raise RegistryError(f"{name} v{version} is already the champion")
        champ_info: CandidateInfo | None = None
        champ_scores: np.ndarray | None = None
        if current is not None:
            champ_scores = predict_scores(load_version(client, name, current), holdout, schema)
            champ_info = candidate_info(client, name, current, champ_scores)
        decision = decide(
            champ_scores,
            ch_scores,
            y,
            margin=policy.promotion_margin,
            floor=policy.floor,
            metric=policy.metric,
            samples=policy.bootstrap_samples,
            confidence=policy.confidence,
            calibration_tolerance=policy.calibration_tolerance,
            seed=seed,
            sanity=sanity_checks(
                champ_info,
                ch_info,
                expected_feature_service=expected_feature_service,
                regression=schema.regression,
            ),
            champion_version=current,
        )
        previous = promote(client, name, version, decision, lock_path=lock_path)
        if previous != STALE:
            return Gated(decision, previous, champ_scores, ch_scores)
    raise RegistryError(f"the champion of {name!r} kept changing; gave up after {max_attempts}")


# ---- report -------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def decision_report(
    decision: Decision,
    *,
    name: str,
    version: str,
    y: np.ndarray | None = None,
    champion_scores: np.ndarray | None = None,
    challenger_scores: np.ndarray | None = None,
    details: Mapping[str, Any] | None = None,
) -> str:
    """Offline HTML for one gate decision; with the holdout labels and scores it adds ROC and
    calibration plots of champion vs challenger."""
    status = "validated" if decision.promote else "rejected"
    verdict = "promoted" if decision.promote else "rejected"
    ci = decision.delta_ci
    parts = [
        report.cards(
            [
                ("decision", verdict),
                (f"challenger {decision.metric}", _fmt(decision.challenger_value)),
                (f"champion {decision.metric}", _fmt(decision.champion_value)),
                (
                    f"{decision.confidence:.0%} CI of the delta",
                    f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "n/a",
                ),
                ("holdout rows", decision.n),
            ]
        ),
        f"<p>{html.escape(decision.reason)}</p>",
        "<h2>Evidence</h2>",
        report.table(
            [
                {"measure": "metric", "value": decision.metric},
                {"measure": "challenger", "value": f"{name} v{version}"},
                {"measure": "compared with", "value": decision.compared_with or "no champion"},
                {"measure": "delta (point)", "value": _fmt(decision.delta)},
                {"measure": "margin", "value": _fmt(decision.margin)},
                {"measure": "floor (no champion)", "value": _fmt(decision.floor)},
                {"measure": "bootstrap resamples used", "value": decision.samples},
                {"measure": "ECE challenger", "value": _fmt(decision.challenger_ece)},
                {"measure": "ECE champion", "value": _fmt(decision.champion_ece)},
                {"measure": "calibration tolerance", "value": _fmt(decision.calibration_tolerance)},
                {"measure": "holdout positives", "value": decision.positives},
            ]
        ),
        "<h2>Sanity checks</h2>",
        report.table(
            [
                {"check": k, "result": report.badge("validated" if ok else "rejected")}
                for k, ok in sorted(decision.sanity.items())
            ],
            raw_html=("result",),
        ),
    ]
    if details:
        parts += [
            "<h2>Details</h2>",
            report.table([{"field": k, "value": str(v)} for k, v in details.items()]),
        ]
    if y is not None and challenger_scores is not None and decision.metric not in ERROR_METRICS:
        y_arr = np.asarray(y)
        curves: dict[str, tuple[np.ndarray, np.ndarray]] = {
            f"challenger v{version}": (y_arr, np.asarray(challenger_scores))
        }
        calib = {f"challenger v{version}": calibration_table(y_arr, challenger_scores)}
        if champion_scores is not None:
            label = f"champion v{decision.compared_with or '?'}"
            curves[label] = (y_arr, np.asarray(champion_scores))
            calib[label] = calibration_table(y_arr, champion_scores)
        parts += [
            "<h2>Holdout curves</h2>",
            img(png_data_uri(roc_figure(curves)), "ROC curves"),
            img(png_data_uri(calibration_figure(calib)), "calibration curves"),
        ]
    return report.page(
        f"Promotion decision — {name} v{version}", "".join(parts), report.badge(status)
    )
