"""Re-baselining the drift reference after a new normal.

When the retraining policy reads a gate decision as a new normal (a drift-started challenger no
better than a champion that still holds up on labels after the change), the champion keeps its
place but gets a drift reference of the newest inputs, so drift checks stop comparing live
windows with a world already gone. The rows are :func:`tasks.training.reference_rows`, the same
choice a training makes; the train flow calls :func:`rebaseline_if_new_normal` after the gate.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd

from tasks.training import _specs, reference_rows

if TYPE_CHECKING:
    from driftloop_config.settings import Settings
    from driftloop_config.usecase import UseCase
    from tasks.gate import Decision
    from tasks.storage import Lake
    from tasks.training import TrainingSet


def rebaseline(
    settings: Settings,
    usecase: UseCase,
    lake: Lake,
    data: TrainingSet,
    champion: str,
    why: str,
) -> dict[str, Any]:
    """Give ``champion`` a drift reference of the newest inputs (the reference windows up to
    ``data.as_of``, as a training on them would have, scored by the champion itself), keeping
    its input importance and expected metric; the earlier references stay in its run. Returns
    what was done: version, as_of, the new window, the artifact and ``why``."""
    from tasks import registry
    from tasks.model import predict_scores
    from tasks.reference import reference_profile

    _, model_spec, _ = _specs(usecase)
    name = model_spec.registered_name
    model = registry.load_version(settings.tracking_uri, name, champion)
    before = registry.load_reference(settings.tracking_uri, name, champion)
    unseen = pd.concat([data.splits["validation"], data.splits["holdout"]], ignore_index=True)
    newest = reference_rows(lake, usecase, data.as_of, fallback=unseen)
    scores = predict_scores(model, newest, data.schema)
    reference = reference_profile(
        newest,
        data.schema,
        scores,
        window_days=usecase.drift.window_days,
        importance=before.get("importance"),
        expected_metric=before.get("expected_metric"),
        unseen=newest,
        unseen_predictions=scores,
    )
    reference["rebaselined"] = {
        "as_of": str(data.as_of),
        "why": why,
        "previous_window": before.get("window"),
    }
    artifact = registry.log_reference(
        settings.tracking_uri, name, champion, reference, label=str(data.as_of)
    )
    return {
        "version": champion,
        "as_of": str(data.as_of),
        "window": reference.get("window"),
        "artifact": artifact,
        "why": why,
    }


def rebaseline_if_new_normal(
    settings: Settings,
    usecase: UseCase,
    lake: Lake,
    data: TrainingSet,
    decision: Decision,
    *,
    day: date,
    trigger: str,
    since: date | None,
) -> dict[str, Any] | None:
    """After the gate: when the retraining policy reads the decision as a new normal (a
    drift-started challenger no better than a champion that holds up on labels after the
    change, :func:`tasks.policy.rebaseline_reason`), re-base the champion's drift reference
    (:func:`rebaseline`). What was done, with ``why``; None when nothing was."""
    from tasks import policy
    from tasks.drift_history import latest_check

    _, model_spec, _ = _specs(usecase)
    last = latest_check(lake.reports, model_spec.registered_name, day)
    why = policy.rebaseline_reason(trigger, decision, last, as_of=day, since=since)
    if why is None or decision.compared_with is None:
        return None
    return rebaseline(settings, usecase, lake, data, decision.compared_with, why)
