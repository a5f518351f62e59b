"""The Prefect UI renders a deployment's run form from the flow's parameter schema: every flow
takes one typed ``params`` object whose fields (and defaults) the form shows at once."""

from __future__ import annotations

from typing import Any

import pytest
from prefect.utilities.callables import parameter_schema

from flows.drift import DriftParams, drift_flow
from flows.features import FeaturesParams, features_flow
from flows.ingest import IngestParams, ingest_flow
from flows.reconcile import ReconcileParams, reconcile_flow
from flows.score import ScoreParams, score_flow
from flows.train import TrainParams, train_flow

FLOWS: list[tuple[Any, type[Any]]] = [
    (ingest_flow, IngestParams),
    (features_flow, FeaturesParams),
    (train_flow, TrainParams),
    (score_flow, ScoreParams),
    (drift_flow, DriftParams),
    (reconcile_flow, ReconcileParams),
]


@pytest.mark.parametrize(("flow", "params"), FLOWS, ids=lambda v: getattr(v, "name", ""))
def test_the_form_opens_on_the_typed_fields_with_their_defaults(
    flow: Any, params: type[Any]
) -> None:
    schema = parameter_schema(flow.fn).model_dump_for_openapi()
    assert "params" not in schema.get("required", [])
    prop = schema["properties"]["params"]
    # no "None" alternative at the top: the form shows the object's fields, not a null toggle
    assert "anyOf" not in prop
    assert prop["$ref"] == f"#/definitions/{params.__name__}"
    # the defaults are the model's own, field by field (a Quick run does the same thing)
    assert prop["default"] == params().model_dump(mode="json")
    assert set(schema["definitions"][params.__name__]["properties"]) == set(params.model_fields)


def test_train_form_defaults_are_a_manual_run_with_seed_zero() -> None:
    prop = parameter_schema(train_flow.fn).model_dump_for_openapi()["properties"]["params"]
    assert prop["default"]["reason"] == "manual"
    assert prop["default"]["seed"] == 0
