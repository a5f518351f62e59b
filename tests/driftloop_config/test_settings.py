from __future__ import annotations

import os
from pathlib import Path

import pytest

from driftloop_config.settings import (
    PROJECT_ROOT,
    Settings,
    SettingsError,
    load_settings,
    quiet_telemetry,
)


def test_defaults_parse() -> None:
    s = load_settings()
    assert s.data_root == f"file://{PROJECT_ROOT / 'data'}"
    assert s.zone("landing") == f"{s.data_root}/landing"
    assert s.usecase.is_file()


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(Exception, match="frozen"):
        s.data_root = "file:///elsewhere"


def test_relative_path_becomes_absolute_file_uri(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", "lake")
    assert load_settings().data_root == f"file://{tmp_path / 'lake'}"


def test_s3_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", "s3://bucket/some/prefix/")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    s = load_settings()
    assert s.data_root == "s3://bucket/some/prefix"
    assert s.aws_endpoint_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("DRIFTLOOP_DATA_ROOT", "gs://bucket", "DRIFTLOOP_DATA_ROOT.*not supported"),
        ("DRIFTLOOP_DATA_ROOT", "s3://", "DRIFTLOOP_DATA_ROOT.*no bucket"),
        ("DRIFTLOOP_MAX_FILE_BYTES", "-5", "DRIFTLOOP_MAX_FILE_BYTES"),
        ("DRIFTLOOP_USECASE", "/nope.yaml", "DRIFTLOOP_USECASE.*no such file"),
        ("DRIFTLOOP_AWS_ENDPOINT_URL", "localhost:9000", "must start with http"),
        (
            "DRIFTLOOP_DATA_ROT",
            "/tmp/x",
            "DRIFTLOOP_DATA_ROT is not a driftloop setting.*DRIFTLOOP_DATA_ROOT",
        ),
    ],
)
def test_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_unknown_field_is_refused() -> None:
    with pytest.raises(Exception, match="Extra inputs are not permitted"):
        Settings(data_rooot="x")  # type: ignore[call-arg]


def test_quiet_telemetry_sets_but_never_overrides() -> None:
    env = {"DO_NOT_TRACK": "false"}
    quiet_telemetry(env)
    assert env["DO_NOT_TRACK"] == "false"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["GX_ANALYTICS_ENABLED"] == "false"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ.get("GX_ANALYTICS_ENABLED") == "false"  # set for the test session too


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:////var/lib/driftloop/mlflow.db",
        "http://127.0.0.1:5000",
        "https://mlflow.example.internal",
        "postgresql+psycopg2://mlflow:pw@db:5432/mlflow",
        "mysql+pymysql://mlflow@db/mlflow",
        "file:///var/lib/mlruns",
        "databricks",
    ],
)
def test_tracking_uris_mlflow_accepts_are_kept(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    monkeypatch.setenv("DRIFTLOOP_MLFLOW_TRACKING_URI", uri)
    assert load_settings().tracking_uri == uri


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://", "names no host"),
        ("postgresql+psycopg2://u:topsecret@/mlflow", "names no host"),
        ("sqlite://mlflow.db", "names no database file"),
        ("s3://bucket/mlflow", "scheme 's3'.* is not one MLflow tracks to"),
        ("./mlflow.db", "is not a URI"),
    ],
)
def test_a_bad_tracking_uri_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch, uri: str, message: str
) -> None:
    monkeypatch.setenv("DRIFTLOOP_MLFLOW_TRACKING_URI", uri)
    with pytest.raises(SettingsError, match=f"DRIFTLOOP_MLFLOW_TRACKING_URI: .*{message}") as info:
        load_settings()
    assert "topsecret" not in str(info.value)


def test_only_driftloop_variables_of_a_dotenv_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "AWS_SECRET_ACCESS_KEY=x\nDATABASE_URL=postgresql://a:b@c/d\nDRIFTLOOP_FEAST_PROJECT=dotenv\n"
    )
    assert load_settings().feast_project == "dotenv"
    (tmp_path / ".env").write_text("DRIFTLOOP_FEAST_PROJEKT=dotenv\n")
    with pytest.raises(
        SettingsError,
        match=r"DRIFTLOOP_FEAST_PROJEKT is not a driftloop setting "
        r"\(did you mean DRIFTLOOP_FEAST_PROJECT\?\) \(in \.env\)",
    ):
        load_settings()


def test_settings_travel_to_other_processes_as_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack's processes run with the settings `up` was given, not with whatever DRIFTLOOP_*
    variables the starting process has by then."""
    from driftloop.stack import stack_env
    from driftloop_config.settings import settings_env

    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("DRIFTLOOP_MAX_FILE_BYTES", "12345")
    given = load_settings()
    env = settings_env(given)
    assert env["DRIFTLOOP_DATA_ROOT"] == f"file://{tmp_path / 'lake'}"
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("DRIFTLOOP_MAX_FILE_BYTES")
    children = stack_env(given, "http://127.0.0.1:1/api")
    assert children["DRIFTLOOP_DATA_ROOT"] == f"file://{tmp_path / 'lake'}"
    assert children["DRIFTLOOP_MAX_FILE_BYTES"] == "12345"
    for key in [k for k in os.environ if k.startswith("DRIFTLOOP_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings() == given
