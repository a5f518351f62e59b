"""The one settings object: every location and backend driftloop uses.

Values come from ``DRIFTLOOP_*`` environment variables (or a ``.env`` file); nothing is read
at import time. Call :func:`load_settings` at the edge of the program (CLI, flow entry) and pass
the object, or the values it holds, down to the tasks.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop_config.redact import redact

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "DRIFTLOOP_"
ENV_FILE = ".env"

#: URI schemes an MLflow tracking URI may have (``postgresql+psycopg2`` is ``postgresql``).
MLFLOW_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")

# The zones of the data lake, as sub-folders (or sub-prefixes) of the data root.
ZONES = ("landing", "validated", "quarantine", "ledger", "features", "predictions", "reports")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _normalise_uri(value: str, *, name: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"{name} must not be empty")
    if value.startswith("s3://"):
        bucket = value[len("s3://") :].split("/", 1)[0]
        if not bucket:
            raise ValueError(f"{name}={value!r} names no bucket (expected s3://bucket/prefix)")
        return value.rstrip("/")
    if "://" in value and not value.startswith("file://"):
        scheme = value.split("://", 1)[0]
        raise ValueError(
            f"{name}={value!r}: scheme {scheme!r} is not supported (use file:// or s3://)"
        )
    path = value[len("file://") :] if value.startswith("file://") else value
    return "file://" + str(Path(path).expanduser().resolve())


def _check_tracking_uri(value: str) -> str:
    """An MLflow tracking URI MLflow can use, or ValueError saying what is wrong (redacted)."""
    shown = redact(value)
    if "://" not in value:
        if value == "databricks" or value.startswith("databricks://"):
            return value
        raise ValueError(
            f"{shown!r} is not a URI: expected e.g. sqlite:////abs/path/mlflow.db, "
            "http://host:5000 or postgresql+psycopg2://user@host:5432/mlflow"
        )
    scheme, rest = value.split("://", 1)
    if scheme.split("+", 1)[0].lower() not in MLFLOW_SCHEMES:
        raise ValueError(
            f"scheme {scheme!r} of {shown!r} is not one MLflow tracks to "
            f"(use {', '.join(s + '://' for s in MLFLOW_SCHEMES)})"
        )
    base = scheme.split("+", 1)[0].lower()
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if base in ("http", "https", "postgresql", "mysql", "mssql") and not host:
        raise ValueError(f"{shown!r} names no host")
    if base == "sqlite" and not rest.startswith("/"):
        raise ValueError(f"{shown!r} names no database file (expected sqlite:////abs/path.db)")
    return value


class Settings(BaseSettings):
    """Every path and backend driftloop touches. Frozen: build a new one to change it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        # a project's .env may hold other programs' variables (AWS_*, DATABASE_URL): only the
        # settings' own are read from it; unknown DRIFTLOOP_* ones are refused by load_settings
        dotenv_filtering="only_existing",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )

    data_root: str = Field(
        default=f"file://{PROJECT_ROOT / 'data'}",
        description="Root of the data lake: file:///abs/path or s3://bucket/prefix. "
        "Holds the zones landing/, validated/, quarantine/, ledger/, ...",
    )
    usecase: Path = Field(
        default=PROJECT_ROOT / "usecases" / "telco_churn.yaml",
        description="The use-case definition (datasets, schema, expectations).",
    )
    aws_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DRIFTLOOP_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
        description="S3-compatible endpoint (e.g. a local S3 server); AWS's own when unset.",
    )
    aws_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("DRIFTLOOP_AWS_REGION", "AWS_DEFAULT_REGION"),
    )
    max_file_bytes: Annotated[int, Field(gt=0)] = Field(
        default=2 * 1024**3,
        description="Landed objects larger than this are rejected whole instead of read.",
    )
    state_dir: Path | None = Field(
        default=None,
        description="Local state (Feast registry, SQLite stores, locks). Default: <data root>/_state "
        "for a local lake, .driftloop/state in the project for an S3 lake.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking/registry URI. Default: sqlite:///<state_dir>/mlflow.db",
    )
    mlflow_artifact_root: str | None = Field(
        default=None,
        description="Where MLflow stores model artifacts. Default: <state_dir>/mlartifacts",
    )
    project_dir: Path = Field(
        default=PROJECT_ROOT,
        description="The checkout workers run flows from (prefect.yaml's pull step reads "
        "DRIFTLOOP_PROJECT_DIR).",
    )
    prefect_database_url: str | None = Field(
        default=None,
        description="Database of the Prefect server `driftloop up` starts, e.g. "
        "postgresql+asyncpg://user@host:5432/prefect. Default: SQLite in <state_dir>/stack.",
    )
    feature_repo: Path = Field(
        default=PROJECT_ROOT / "feature_repo", description="The Feast feature repository."
    )
    online_store: Literal["sqlite", "redis"] = Field(
        default="sqlite", description="Feast online store backend."
    )
    redis_url: str = Field(
        default="127.0.0.1:6379,db=0",
        description="Feast Redis connection string (host:port[,db=N][,password=...]).",
    )
    feast_project: str = Field(
        default="driftloop", pattern=r"^[a-z][a-z0-9_]*$", description="Feast project name."
    )
    task_runner: Literal["thread", "dask"] = Field(
        default="thread",
        description="How flows run partition-parallel work (validation per object, features per "
        "date range, drift per feature group): Prefect's thread pool in the flow's process, or "
        "a Dask cluster through prefect-dask.",
    )
    dask_address: str | None = Field(
        default=None,
        description="Scheduler of an existing Dask cluster (e.g. tcp://scheduler:8786). Unset "
        "with task_runner=dask: a local cluster of dask_workers processes per flow run.",
    )
    dask_workers: Annotated[int, Field(ge=1)] = Field(
        default=2, description="Workers of the local Dask cluster (when dask_address is unset)."
    )
    warm_start: bool = Field(
        default=True,
        description="`driftloop up` starts a process that has imported Prefect, the flows and "
        "their libraries and forks each flow run of the stack from it (driftloop.warmstart); "
        "false: every flow run is a new interpreter, as Prefect's process worker starts it.",
    )

    @field_validator("data_root")
    @classmethod
    def _check_data_root(cls, value: str) -> str:
        return _normalise_uri(value, name="DRIFTLOOP_DATA_ROOT")

    @field_validator("usecase")
    @classmethod
    def _check_usecase(cls, value: Path) -> Path:
        path = value if value.is_absolute() else (PROJECT_ROOT / value)
        if not path.is_file():
            raise ValueError(f"DRIFTLOOP_USECASE={value}: no such file")
        return path.resolve()

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _check_mlflow_tracking_uri(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return _check_tracking_uri(value.strip())

    @field_validator("aws_endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"AWS endpoint {value!r} must start with http:// or https://")
        return value.rstrip("/")

    @property
    def is_local(self) -> bool:
        return self.data_root.startswith("file://")

    @property
    def local_root(self) -> Path:
        """The lake's folder (only for a file:// data root)."""
        if not self.is_local:
            raise ValueError(f"DRIFTLOOP_DATA_ROOT={self.data_root} is not a local folder")
        return Path(self.data_root[len("file://") :])

    @property
    def state_path(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir.expanduser().resolve()
        return (
            self.local_root / "_state" if self.is_local else PROJECT_ROOT / ".driftloop" / "state"
        )

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.state_path / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or str(self.state_path / "mlartifacts")

    def zone(self, name: str) -> str:
        """URI of one zone of the lake, e.g. ``zone("landing")``."""
        if name not in ZONES:
            raise KeyError(f"unknown zone {name!r}; zones are {', '.join(ZONES)}")
        return f"{self.data_root}/{name}"


#: DRIFTLOOP_* variables that are not settings: read by the test-suite, and set by `driftloop up`
#: for its flow runs (where the warm-start server listens, driftloop.warmstart.SOCKET_ENV)
NOT_SETTINGS = frozenset({"DRIFTLOOP_REQUIRE_SERVICES", "DRIFTLOOP_WARMSTART_SOCKET"})


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    known |= NOT_SETTINGS
    problems = []
    for key in sorted(environ):
        if key.startswith(ENV_PREFIX) and key not in known:
            hint = difflib.get_close_matches(key, sorted(known), n=1)
            suffix = f" (did you mean {hint[0]}?)" if hint else ""
            problems.append(f"{key} is not a driftloop setting{suffix}")
    return problems


def _dotenv_variables(path: Path | None = None) -> dict[str, str]:
    """The variables of the ``.env`` file the settings read (none when there is no file)."""
    from dotenv import dotenv_values

    env_file = Path(ENV_FILE) if path is None else path
    if not env_file.is_file():
        return {}
    return {k: v or "" for k, v in dotenv_values(env_file, encoding="utf-8").items()}


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment (and ``.env``) plus explicit overrides.

    Raises :class:`SettingsError` with one line per bad or unknown ``DRIFTLOOP_*`` variable (of
    the environment or the ``.env`` file; other programs' variables there are left alone). The
    message never shows a password (URIs are redacted).
    """
    problems = _unknown_variables(os.environ)
    problems += [f"{p} (in {ENV_FILE})" for p in _unknown_variables(_dotenv_variables())]
    if problems:
        raise SettingsError("invalid driftloop settings:\n  " + "\n  ".join(problems))
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            var = ENV_PREFIX + loc.upper() if loc in Settings.model_fields else loc
            lines.append(f"{var}: {redact(err['msg'])}")
        raise SettingsError("invalid driftloop settings:\n  " + "\n  ".join(lines)) from None


#: The usage-reporting switches of the libraries we drive, all off (no network wanted).
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def quiet_telemetry(environ: dict[str, str] | None = None) -> None:
    """Turn off every usage-reporting channel of the libraries we drive (no network wanted)."""
    env = os.environ if environ is None else environ
    for key, value in TELEMETRY_OFF.items():
        env.setdefault(key, value)


def export_artifact_endpoint(settings: Settings, environ: dict[str, str] | None = None) -> bool:
    """Let MLflow's S3 client reach the settings' S3-compatible endpoint; True if it was set.

    MLflow uploads and downloads ``s3://`` artifacts with its own boto3 client, configured by
    ``MLFLOW_S3_ENDPOINT_URL`` (not by driftloop's settings). With an ``s3://`` artifact root and
    an endpoint in the settings (``DRIFTLOOP_AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL``), this
    exports that endpoint, unless the variable is already set. Call it at the edge of the
    program, after :func:`load_settings` (the CLI, the flows and the demo do).
    """
    env = os.environ if environ is None else environ
    if (
        settings.artifact_root.startswith("s3://")
        and settings.aws_endpoint_url
        and not env.get("MLFLOW_S3_ENDPOINT_URL")
    ):
        env["MLFLOW_S3_ENDPOINT_URL"] = settings.aws_endpoint_url
        return True
    return False


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``DRIFTLOOP_*`` variables that rebuild it in another process (the
    stack's servers, workers and flow runs get exactly these, whatever this process's own
    environment holds)."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is not None:
            env[ENV_PREFIX + name.upper()] = str(value)
    return env
