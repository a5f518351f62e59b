"""The run context: what every flow run starts from, read from its environment at run time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from driftloop_config.usecase import UseCaseError
from tasks.context import RunContext
from tests.support.usecases import usecase_with


def test_a_run_reads_its_settings_use_case_and_lake_when_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    ctx = RunContext.load()
    assert ctx.settings.data_root == f"file://{tmp_path / 'lake'}"
    assert ctx.lake.landing.uri == f"file://{(tmp_path / 'lake' / 'landing').resolve()}"
    assert (ctx.usecase.name, ctx.model_name) == ("telco_churn", "telco_churn")
    # a local artifact root: MLflow's S3 client is left alone
    assert "MLFLOW_S3_ENDPOINT_URL" not in os.environ
    # read at run time, not at import: another environment, another context
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "other"))
    assert RunContext.load().lake.landing.uri.endswith("/other/landing")


def test_mlflow_s3_client_is_pointed_at_the_settings_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("DRIFTLOOP_MLFLOW_ARTIFACT_ROOT", "s3://models/mlflow")
    monkeypatch.setenv("DRIFTLOOP_AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    RunContext.load()
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"


def test_a_use_case_without_a_model_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = yaml.safe_load(usecase_with(tmp_path).read_text())  # suites with absolute paths
    del raw["model"]
    path = tmp_path / "ingest-only.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("DRIFTLOOP_USECASE", str(path))
    ctx = RunContext.load()  # ingest and features need no model
    with pytest.raises(UseCaseError, match="no model section"):
        _ = ctx.model_name
