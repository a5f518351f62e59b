"""The model registry (MLflow, aliases not stages): logging, reading, promotion and rollback.

* :func:`log_challenger` logs one training run — params, metrics, the model with its signature
  and input example, the drift reference and the training report — registers a new version and
  points the ``challenger`` alias at it.
* :func:`gate` loads champion and challenger, scores both on the holdout and asks the gate's
  decision (:func:`tasks.gate.decide`, a pure function of those scores), then promotes.
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
import importlib.metadata
import json
import logging
import math
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from tasks.gate import CandidateInfo, Decision, decide, sanity_checks
from tasks.model import SCORE_BLOCK_ROWS, FeatureSchema, labels, predict_scores

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from driftloop_config.usecase import ModelSpec

CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
#: Registered-model tag holding the JSON list of versions that were champion, oldest first.
HISTORY_TAG: Final = "driftloop.champion_history"
#: Version tag holding the gate's verdict (``promoted`` / ``rejected``); a version without it
#: has not been judged yet.
DECISION_TAG: Final = "driftloop.decision"
#: Version tag holding the whole :class:`Decision` as JSON (what a report is rebuilt from).
DECISION_JSON_TAG: Final = "driftloop.decision_json"
#: Version tag set once the decision's event has been emitted (see ``tasks.recovery``).
ANNOUNCED_TAG: Final = "driftloop.announced"
#: Run tag saying why a run left RUNNING by a stopped process was marked KILLED.
KILLED_REASON_TAG: Final = "driftloop.killed_reason"
#: Returned by :func:`promote` when the champion changed after the decision was made.
STALE: Final = "stale"
MAX_HISTORY = 100

#: The non-public classes inside a fitted :func:`tasks.model.fit` model that skops must be told
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


log = logging.getLogger("driftloop.registry")

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


def registered_scores(
    model: Any, holdout: pd.DataFrame, schema: FeatureSchema, trained: np.ndarray | None
) -> np.ndarray:
    """The holdout scores of ``model`` as loaded from the registry. ``trained``: the scores the
    model gave before it was registered. They are taken when the loaded model gives the same
    scores, bit for bit, on the first :data:`~tasks.model.SCORE_BLOCK_ROWS` rows (all of a
    smaller holdout); otherwise the loaded model scores every row."""
    if trained is not None and len(trained) == len(holdout):
        first = holdout.iloc[:SCORE_BLOCK_ROWS]
        checked = predict_scores(model, first, schema)
        if len(first) == len(holdout):
            return checked
        if np.array_equal(checked, trained[: len(first)]):
            return np.asarray(trained, dtype=np.float64)
        log.warning("the registered model scores differently from the trained one: rescoring")
    return predict_scores(model, holdout, schema)


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
    trained_scores: np.ndarray | None = None,
) -> Gated:
    """Score champion and challenger ``version`` on ``holdout``, decide, and promote — deciding
    again if another promotion got in first. Each model is loaded and scored once per
    attempt; the challenger's ``trained_scores`` (its holdout scores before it was registered)
    save scoring it again once checked (:func:`registered_scores`)."""
    client = client_for(tracking)
    version = str(version)
    y = labels(holdout, schema)
    challenger_model = load_version(client, name, version)
    ch_scores = registered_scores(challenger_model, holdout, schema, trained_scores)
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
