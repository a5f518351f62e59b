"""What every flow run starts from: the settings of its environment, the use case they name and
the lake they point at, loaded once at the start of the run (never at import)."""

from __future__ import annotations

from dataclasses import dataclass

from driftloop_config.settings import Settings, export_artifact_endpoint, load_settings
from driftloop_config.usecase import UseCase, load_usecase
from tasks.storage import Lake


@dataclass(frozen=True)
class RunContext:
    """The settings, the use case and the lake of one run."""

    settings: Settings
    usecase: UseCase
    lake: Lake

    @classmethod
    def load(cls) -> RunContext:
        """Read the settings (``DRIFTLOOP_*``, ``.env``), the use case they name and open the
        lake; MLflow's own S3 client is pointed at the settings' endpoint (it reads
        ``MLFLOW_S3_ENDPOINT_URL``, not the settings)."""
        settings = load_settings()
        export_artifact_endpoint(settings)
        return cls(settings, load_usecase(settings.usecase), Lake.from_settings(settings))

    @property
    def model_name(self) -> str:
        """The registered model of the closed loop (raises the use case's error when it has
        no model section)."""
        return self.usecase.loop().model.registered_name
