"""The command line's start-up checks and messages, through the real CLI (typer's runner, and a
subprocess where the output of the libraries matters): exit codes, and messages that name the
variable, are shown whole and literally (brackets of patterns included), without tracebacks."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from driftloop import cli
from driftloop.cli import EXIT_NOT_READY, EXIT_USAGE, app
from tests.support import replaying
from tests.support.usecases import usecase_with

runner = CliRunner()


def _simulate(tmp: Path) -> list[str]:
    return ["simulate", "--days", "2", "--customers", "10", "--start", "2026-01-01"]


def test_a_dotenv_with_other_programs_variables_does_not_stop_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "AWS_SECRET_ACCESS_KEY=not-ours\n"
        "DATABASE_URL=postgresql://app:s3cret@db:5432/app\n"
        f"DRIFTLOOP_DATA_ROOT={tmp_path / 'lake-from-dotenv'}\n"
    )
    result = runner.invoke(app, _simulate(tmp_path))
    assert result.exit_code == 0, result.output
    assert "wrote 4 files" in result.output  # two days of usage and labels
    # the .env's own DRIFTLOOP_ setting was honoured
    assert sorted(p.name for p in (tmp_path / "lake-from-dotenv" / "landing").rglob("*.csv")) == [
        "2026-01-01.csv",
        "2026-01-01.csv",
        "2026-01-02.csv",
        "2026-01-02.csv",
    ]


@pytest.mark.parametrize("where", ["env", "dotenv"])
def test_a_misspelt_driftloop_variable_is_refused_with_a_suggestion(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if where == "env":
        monkeypatch.setenv("DRIFTLOOP_DATA_ROT", str(tmp_path))
    else:
        (tmp_path / ".env").write_text(f"DATABASE_URL=x\nDRIFTLOOP_DATA_ROT={tmp_path}\n")
    result = runner.invoke(app, _simulate(tmp_path))
    assert result.exit_code == EXIT_USAGE
    expected = "DRIFTLOOP_DATA_ROT is not a driftloop setting (did you mean DRIFTLOOP_DATA_ROOT?)"
    assert expected + (" (in .env)" if where == "dotenv" else "") in result.output
    assert "DATABASE_URL" not in result.output
    assert "Traceback" not in result.output


def test_a_pattern_in_an_error_is_printed_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_FEAST_PROJECT", "Bad-Name")
    result = runner.invoke(app, ["status"])
    assert result.exit_code == EXIT_USAGE
    assert "DRIFTLOOP_FEAST_PROJECT: String should match pattern '^[a-z][a-z0-9_]*$'" in (
        result.output
    )


def test_an_invalid_tracking_uri_names_the_variable_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFTLOOP_MLFLOW_TRACKING_URI", "postgres://mlflow:Hunter2pw@db/mlflow")
    result = runner.invoke(app, ["status"])
    assert result.exit_code == EXIT_USAGE
    assert (
        "DRIFTLOOP_MLFLOW_TRACKING_URI: Value error, scheme 'postgres' of "
        "'postgres://mlflow:***@db/mlflow' is not one MLflow tracks to" in result.output
    )
    assert "Hunter2pw" not in result.output
    monkeypatch.setenv("DRIFTLOOP_MLFLOW_TRACKING_URI", "mlflow.db")
    result = runner.invoke(app, ["status"])
    assert result.exit_code == EXIT_USAGE
    assert "DRIFTLOOP_MLFLOW_TRACKING_URI: Value error, 'mlflow.db' is not a URI" in result.output


def test_an_invalid_usecase_file_names_the_setting_and_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = usecase_with(tmp_path, model={"floor": "high"})
    monkeypatch.setenv("DRIFTLOOP_USECASE", str(bad))
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path))
    result = runner.invoke(app, ["ingest"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"DRIFTLOOP_USECASE={bad}: use case file {bad} is invalid:" in result.output
    assert "model.floor: Input should be a valid number" in result.output
    assert "Traceback" not in result.output

    bad.write_text(yaml.safe_dump({"name": "x"}) + "datasets: [unclosed\n")
    result = runner.invoke(app, ["ingest"])
    assert result.exit_code == EXIT_USAGE
    assert f"DRIFTLOOP_USECASE={bad}: use case file {bad} is not valid YAML" in result.output


@pytest.mark.parametrize("command", ["ingest", "features", "train", "score", "drift"])
def test_a_missing_local_data_root_stops_commands_that_read_the_lake(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-lake"
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(missing))
    result = runner.invoke(app, [command])
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"DRIFTLOOP_DATA_ROOT=file://{missing}: the folder {missing} does not exist" in (
        result.output
    )
    assert not missing.exists()  # nothing was created on the way


def test_simulate_creates_a_missing_data_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "new-lake"))
    result = runner.invoke(app, _simulate(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new-lake" / "landing" / "usage" / "2026-01-01.csv").is_file()


def test_ingest_reasons_are_shown_whole_and_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = "wrong_type(msisdn) in rows 1-3 " + "x" * 300 + " must match ^[0-9]{8}$ [end]"
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=1000))
    cli.print_ingest_summary(
        {
            "objects": [
                {
                    "object": "usage/[2026-01-01].csv",
                    "status": "rejected",
                    "rows": 3,
                    "validated": 0,
                    "quarantined": 3,
                    "reason": reason,
                }
            ],
            "totals": {"accepted": 0, "rows_validated": 0, "rows_quarantined": 3, "rejected": 1},
            "rounds": 1,
        }
    )
    text = out.getvalue()
    assert reason in text
    assert "usage/[2026-01-01].csv" in text


# ---- expected failures of `train`: one line, a documented code, no traceback --------------------


def _env_with_harness_api(lake: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    env["DRIFTLOOP_DATA_ROOT"] = str(lake)
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())  # the session's test server
    return env


@pytest.mark.usefixtures("prefect_harness")
def test_train_before_any_data_says_so_and_exits_3(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    done = replaying.cli(["train"], _env_with_harness_api(tmp_path / "lake"))
    assert done.returncode == EXIT_NOT_READY == 3, done.stdout + done.stderr
    assert (
        "nothing trained: nothing validated yet (run `driftloop ingest` first)"
        in done.stderr.splitlines()
    )
    assert "Traceback" not in done.stdout + done.stderr
    assert "KeyError" not in done.stdout + done.stderr


@pytest.mark.usefixtures("prefect_harness")
def test_train_before_enough_data_says_so_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from driftloop.simulate import simulate
    from driftloop_config.settings import load_settings
    from flows.ingest import ingest_flow
    from tasks.storage import Lake

    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    simulate(Lake.from_settings(load_settings()).landing, days=5, customers=50, seed=1)
    assert ingest_flow()["totals"]["accepted"] == 10
    done = replaying.cli(["train"], _env_with_harness_api(tmp_path / "lake"))
    assert done.returncode == EXIT_NOT_READY, done.stdout + done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("not enough data")]
    assert line.startswith("not enough data to train yet: ")
    assert "Traceback" not in done.stdout + done.stderr


def test_simulate_warns_when_its_days_cannot_produce_a_first_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    few = runner.invoke(app, _simulate(tmp_path))
    assert few.exit_code == 0, few.output
    assert "too few for a first telco_churn model" in few.output and "--days 53" in few.output
    enough = runner.invoke(
        app, ["simulate", "--days", "53", "--customers", "10", "--start", "2026-01-01"]
    )
    assert enough.exit_code == 0, enough.output
    assert "too few" not in enough.output
    # labels are delivered with the use case's delay (7 days for telco), not a default of 14
    first_labels = sorted((tmp_path / "lake" / "landing" / "labels").iterdir())[0]
    assert first_labels.name == "2026-01-01.csv"
