"""``driftloop check``: the shipped use cases pass; each kind of mistake in a broken copy gives
exactly one problem naming the field, two mistakes give two; the CLI prints them literally,
exits 2, and a flow command with a broken use case stops before Prefect is even imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from driftloop import check as check_module
from driftloop.check import Problem, check, check_cached, run_check
from driftloop.cli import EXIT_USAGE, app
from driftloop_config.settings import PROJECT_ROOT, Settings, load_settings
from tests.support.usecases import feature_repo_of

runner = CliRunner()
SHIPPED = sorted((PROJECT_ROOT / "usecases").glob("*.yaml"))
TELCO = PROJECT_ROOT / "usecases" / "telco_churn.yaml"
SAAS = PROJECT_ROOT / "usecases" / "saas_retention.yaml"


def _settings(tmp: Path, usecase: Path, repo: Path | None = None) -> Settings:
    return load_settings(
        data_root=str(tmp / "lake"), usecase=usecase, feature_repo=repo or feature_repo_of(TELCO)
    )


def _copy(usecase: Path, tmp: Path, edit: Any = None) -> Path:
    """A shipped use case in ``tmp/usecases/`` (suites by absolute path), after ``edit(raw)``."""
    raw = yaml.safe_load(usecase.read_text())
    for spec in raw["datasets"].values():
        spec["batch_suite"] = str(PROJECT_ROOT / spec["batch_suite"])
        spec["row_suite"] = str(PROJECT_ROOT / spec["row_suite"])
    if edit is not None:
        edit(raw)
    (tmp / "usecases").mkdir(exist_ok=True)
    path = tmp / "usecases" / usecase.name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _telco_copy(tmp: Path, edit: Any = None) -> Path:
    """The telco use case in ``tmp/usecases/`` (suites by absolute path), after ``edit(raw)``."""
    return _copy(TELCO, tmp, edit)


def _only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize("usecase", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_usecase_passes(usecase: Path, tmp_path: Path) -> None:
    report = run_check(_settings(tmp_path, usecase, feature_repo_of(usecase)))
    assert report.problems == []
    assert report.usecase == usecase.stem
    assert report.feature_service and report.features  # the repository was really read
    assert "features_asof" in report.features


def test_an_unknown_field_is_named(tmp_path: Path) -> None:
    path = _telco_copy(tmp_path, lambda raw: raw["model"].update(holdout_dayz=4))
    problem = _only(check(_settings(tmp_path, path)))
    assert problem.where == f"{path}: model.holdout_dayz"
    assert "Extra inputs are not permitted" in problem.message


def test_a_missing_dataset_reference_is_named(tmp_path: Path) -> None:
    path = _telco_copy(tmp_path, lambda raw: raw["features"].update(source_dataset="usages"))
    problem = _only(check(_settings(tmp_path, path)))
    assert problem.where == f"{path}: features.source_dataset"
    assert "'usages' is not a dataset (usage, labels)" in problem.message


def test_a_wrong_partition_column_is_named(tmp_path: Path) -> None:
    path = _telco_copy(tmp_path, lambda raw: raw["datasets"]["usage"].update(partition_by="day"))
    problem = _only(check(_settings(tmp_path, path)))
    assert problem.where == f"{path}: datasets.usage.partition_by"
    assert "partition_by column 'day' is not in columns" in problem.message


def test_a_builder_module_that_does_not_exist(tmp_path: Path) -> None:
    path = _telco_copy(
        tmp_path, lambda raw: raw["features"].update(builder="driftloop_no_such_mod:build")
    )
    problem = _only(check(_settings(tmp_path, path)))
    assert problem.where == f"{path}: features.builder"
    assert "no module named 'driftloop_no_such_mod'" in problem.message
    assert "PYTHONPATH" in problem.message


def test_a_builder_whose_own_import_fails_names_the_missing_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "check_builder_dep.py").write_text("import check_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _telco_copy(
        tmp_path, lambda raw: raw["features"].update(builder="check_builder_dep:build")
    )
    problem = _only(check(_settings(tmp_path, path)))
    assert problem.where == f"{path}: features.builder"
    assert "cannot import check_builder_dep: it imports 'check_absent_dependency'" in (
        problem.message
    )


def test_a_builder_function_that_does_not_exist(tmp_path: Path) -> None:
    path = _telco_copy(
        tmp_path, lambda raw: raw["features"].update(builder="tasks.features:no_such_builder")
    )
    problem = _only(check(_settings(tmp_path, path)))
    assert problem.where == f"{path}: features.builder"
    assert "tasks.features has no function 'no_such_builder'" in problem.message


def test_a_model_estimator_that_does_not_import_or_exist(tmp_path: Path) -> None:
    path = _telco_copy(
        tmp_path, lambda raw: raw["model"].update(estimator="driftloop_no_such_mod:model")
    )
    problem = _only(check(_settings(tmp_path, path)))
    assert problem.where == f"{path}: model.estimator"
    assert "no module named 'driftloop_no_such_mod'" in problem.message
    path = _telco_copy(
        tmp_path, lambda raw: raw["model"].update(estimator="tests.support.estimators:nope")
    )
    problem = _only(check(_settings(tmp_path, path)))
    assert problem.where == f"{path}: model.estimator"
    assert "tests.support.estimators has no function 'nope'" in problem.message


def test_a_builder_output_without_a_feature_the_views_declare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "check_builder_short.py").write_text(
        textwrap.dedent(
            """
            from examples.telco_churn import telco_daily_features

            def build(usage, start, end):
                return telco_daily_features(usage, start, end).drop(columns=["minutes_trend"])
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _telco_copy(
        tmp_path, lambda raw: raw["features"].update(builder="check_builder_short:build")
    )
    problem = _only(check(_settings(tmp_path, path)))
    assert problem.where == f"{path}: features.builder"
    assert "lacks ['minutes_trend'], which feature views ['usage_aggregates']" in problem.message


def test_a_builder_output_whose_dtypes_do_not_fit_the_declared_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "check_builder_types.py").write_text(
        textwrap.dedent(
            """
            from examples.telco_churn import telco_daily_features

            def build(usage, start, end):
                out = telco_daily_features(usage, start, end)
                if out.empty:  # no rows are written: its dtypes are not checked
                    return out.astype(object)
                return out.astype({"minutes_trend": "string", "active_days_30d": "float64"})
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _telco_copy(
        tmp_path, lambda raw: raw["features"].update(builder="check_builder_types:build")
    )
    problem = _only(check(_settings(tmp_path, path)))
    assert problem.where == f"{path}: features.builder"
    assert problem.message == (
        "the output of check_builder_types:build does not have the types feature service "
        "'churn_v1' declares: 'minutes_trend' is string, feature view 'usage_aggregates' "
        "declares Float64 (floats); 'active_days_30d' is float64, feature view "
        "'usage_aggregates' declares Int64 (integers)"
    )


def test_nullable_and_object_columns_fit_their_declared_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nullable integers, pandas strings, object and categorical columns, any datetime
    resolution: no problem."""
    (tmp_path / "check_builder_nullable.py").write_text(
        textwrap.dedent(
            """
            from examples.telco_churn import telco_daily_features

            def build(usage, start, end):
                out = telco_daily_features(usage, start, end)
                return out.astype(
                    {
                        "active_days_30d": "Int64",
                        "plan": "string",
                        "region": object,
                        "contract": "category",
                        "features_asof": "datetime64[us, UTC]",
                    }
                )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _telco_copy(
        tmp_path, lambda raw: raw["features"].update(builder="check_builder_nullable:build")
    )
    assert check(_settings(tmp_path, path)) == []


def test_a_suite_rule_about_a_column_the_dataset_lacks(tmp_path: Path) -> None:
    suite = json.loads((PROJECT_ROOT / "expectations/telco_churn/usage.rows.json").read_text())
    suite["expectations"].append(
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "minutez"}}
    )
    suite_path = tmp_path / "usage.rows.json"
    suite_path.write_text(json.dumps(suite))
    path = _telco_copy(
        tmp_path, lambda raw: raw["datasets"]["usage"].update(row_suite=str(suite_path))
    )
    problem = _only(check(_settings(tmp_path, path)))
    assert problem.where == f"{path}: datasets.usage.row_suite"
    assert "names columns ['minutez'] that dataset 'usage' does not have" in problem.message


def test_a_suite_rule_great_expectations_refuses(tmp_path: Path) -> None:
    suite = json.loads((PROJECT_ROOT / "expectations/telco_churn/usage.batch.json").read_text())
    suite["expectations"].append(
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "plan", "mostly": 3}}
    )
    suite_path = tmp_path / "usage.batch.json"
    suite_path.write_text(json.dumps(suite))
    path = _telco_copy(
        tmp_path, lambda raw: raw["datasets"]["usage"].update(batch_suite=str(suite_path))
    )
    problem = _only(check(_settings(tmp_path, path)))
    assert problem.where == f"{path}: datasets.usage.batch_suite"
    assert "is not a valid Great Expectations expectation" in problem.message
    assert "mostly" in problem.message


def test_a_feature_repo_without_the_named_feature_service(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(feature_repo_of(TELCO), repo, ignore=shutil.ignore_patterns("__pycache__"))
    services = repo / "services.py"
    services.write_text(services.read_text().replace('name="churn_v1"', 'name="churn_v0"'))
    problem = _only(check(_settings(tmp_path, TELCO, repo)))
    assert problem.where == "usecases/telco_churn.yaml: features.feature_service"
    assert "defines no feature service 'churn_v1' (it defines: churn_v0)" in problem.message


def test_drift_settings_for_an_input_the_service_does_not_serve(tmp_path: Path) -> None:
    path = _telco_copy(tmp_path, lambda raw: raw["drift"].update(inputs={"minutez": {}}))
    problem = _only(check(_settings(tmp_path, path)))
    assert problem.where == f"{path}: drift.inputs.minutez"
    assert "'minutez' is not an input of feature service 'churn_v1'" in problem.message


def test_a_feature_table_the_repository_has_no_source_for(tmp_path: Path) -> None:
    path = _telco_copy(tmp_path, lambda raw: raw["features"].update(table="customers_daily"))
    problems = check(_settings(tmp_path, path))
    assert [p.where for p in problems] == [f"{path}: features.table"] * 2  # the service's 2 views
    assert [p.message.split(" of feature service")[0] for p in problems] == [
        "feature view 'customer_profile'",
        "feature view 'usage_aggregates'",
    ]
    assert all(
        "reads source 'customer_daily', but the feature table of 'customer_id' is 'customers_daily'"
        in p.message
        for p in problems
    )


def test_a_feature_table_or_prediction_that_is_no_plain_name(tmp_path: Path) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["features"]["table"] = "../customer_daily"
        raw["target"]["prediction"] = "churn probability"

    path = _telco_copy(tmp_path, edit)
    problems = check(_settings(tmp_path, path))
    assert sorted(p.where for p in problems) == [
        f"{path}: features.table",
        f"{path}: target.prediction",
    ]
    assert all("should match pattern" in p.message for p in problems)


def _saas_copy(tmp: Path, edit: Any = None) -> tuple[Path, Path]:
    """The shipped use case with a context source (usecases/saas_retention.yaml) in
    ``tmp/usecases/``, after ``edit(raw)``, and a copy of its Feast repository in
    ``tmp/feature_repo/``: their paths."""
    path = _copy(SAAS, tmp, edit)
    repo = tmp / "feature_repo"
    shutil.copytree(feature_repo_of(SAAS), repo, ignore=shutil.ignore_patterns("__pycache__"))
    return path, repo


def test_a_usecase_with_a_context_source_passes(tmp_path: Path) -> None:
    path, repo = _saas_copy(tmp_path)
    report = run_check(_settings(tmp_path, path, repo))
    assert report.problems == []
    assert {"incidents_4w", "outage_minutes_4w", "seat_utilisation"} <= set(report.features)


def test_a_context_key_the_entity_rows_do_not_carry(tmp_path: Path) -> None:
    def edit(raw: dict[str, Any]) -> None:  # the builder drops plan_tier from its rows
        raw["features"]["builder"] = "tests.support.saas:saas_features_without_tier"

    path, repo = _saas_copy(tmp_path, edit)
    problems = check(_settings(tmp_path, path, repo))
    assert [p.where for p in problems] == [f"{path}: features.builder"]
    assert "lacks ['plan_tier']" in problems[0].message
    assert "context features.context.tier_status" in problems[0].message


def test_a_context_view_reading_the_entity_table(tmp_path: Path) -> None:
    path, repo = _saas_copy(tmp_path)
    views = repo / "views.py"
    views.write_text(
        views.read_text().replace("    source=tier_weekly,\n", "    source=account_weekly,\n")
    )
    problem = _only(check(_settings(tmp_path, path, repo)))
    assert problem.where == f"{path}: features.context.tier_status.table"
    assert "'tier_reliability'" in problem.message and "'tier_weekly'" in problem.message


def test_context_mistakes_at_load_are_located(tmp_path: Path) -> None:
    def edit(raw: dict[str, Any]) -> None:
        context = raw["features"]["context"]["tier_status"]
        context["source_dataset"] = "tier_statuses"
        raw["features"]["context"]["again"] = {
            **context,
            "source_dataset": "activity",
            "key": "account_id",
            "table": "account_weekly",
        }

    path, repo = _saas_copy(tmp_path, edit)
    problems = check(_settings(tmp_path, path, repo))
    assert sorted(p.where for p in problems) == [
        f"{path}: features.context.again.key",
        f"{path}: features.context.again.table",
        f"{path}: features.context.tier_status.source_dataset",
    ]


def test_two_mistakes_at_load_give_two_problems(tmp_path: Path) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["features"]["source_dataset"] = "usages"
        raw["target"]["labels_dataset"] = "label"

    path = _telco_copy(tmp_path, edit)
    problems = check(_settings(tmp_path, path))
    assert sorted(p.where for p in problems) == [
        f"{path}: features.source_dataset",
        f"{path}: target.labels_dataset",
    ]


def test_two_mistakes_in_different_parts_give_two_problems(tmp_path: Path) -> None:
    path = _telco_copy(
        tmp_path,
        lambda raw: raw["features"].update(builder="tasks.features:nope", feature_service="x"),
    )
    problems = check(_settings(tmp_path, path))
    assert [p.where for p in problems] == [
        f"{path}: features.builder",
        f"{path}: features.feature_service",
    ]


def test_the_gate_skips_an_unchanged_clean_use_case_and_rechecks_a_changed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _telco_copy(tmp_path)
    settings = _settings(tmp_path, path)
    (tmp_path / "lake").mkdir()
    assert check_cached(settings) == []
    assert (settings.state_path / "check.json").is_file()
    calls: list[Settings] = []

    def counting_check(s: Settings) -> list[Problem]:
        calls.append(s)
        return []

    monkeypatch.setattr(check_module, "check", counting_check)
    assert check_cached(settings) == []
    assert calls == []  # nothing changed: not checked again
    raw = yaml.safe_load(path.read_text())
    raw["features"]["builder"] = "tasks.features:nope"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.undo()
    problem = _only(check_cached(settings))
    assert problem.where == f"{path}: features.builder"


def test_the_gate_rechecks_when_a_module_the_builder_imports_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "code" / "mybuild"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "features.py").write_text(
        "import pandas as pd\nfrom . import _grid\nfrom .sub.shapes import square\n"
        "def build(frame, first, last):\n    return frame\n"
    )
    (pkg / "_grid.py").write_text("import mybuild.sub\nSTEP = 1\n")
    (pkg / "sub" / "shapes.py").write_text("def square(x):\n    return x * x\n")
    (pkg / "unused.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    # its own package's modules it imports, transitively; not pandas, not what it never imports
    assert check_module.builder_sources("mybuild.features") == [
        pkg / "__init__.py",
        pkg / "_grid.py",
        pkg / "features.py",
        pkg / "sub" / "__init__.py",
        pkg / "sub" / "shapes.py",
    ]
    path = _telco_copy(
        tmp_path, lambda raw: raw["features"].update(builder="mybuild.features:build")
    )
    settings = _settings(tmp_path, path)
    before = check_module.fingerprint(settings)
    (pkg / "unused.py").write_text("X = 2\n")
    assert check_module.fingerprint(settings) == before
    (pkg / "sub" / "shapes.py").write_text("def square(x):\n    return x**2\n")
    assert check_module.fingerprint(settings) != before


# ---- through the command line -------------------------------------------------------------------


def _env(tmp: Path, usecase: Path, repo: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLOOP_", "PREFECT_"))}
    (tmp / "lake").mkdir(exist_ok=True)
    env.update(
        DRIFTLOOP_DATA_ROOT=str(tmp / "lake"),
        DRIFTLOOP_USECASE=str(usecase),
        DRIFTLOOP_FEATURE_REPO=str(repo or feature_repo_of(TELCO)),
        PREFECT_HOME=str(tmp / "prefect-home"),
        PYTHONPATH=str(tmp),
    )
    return env


def _two_mistakes(tmp: Path) -> tuple[Path, list[str]]:
    path = _telco_copy(
        tmp,
        lambda raw: raw["features"].update(
            builder="driftloop_no_such_mod:build", feature_service="churn_v9"
        ),
    )
    return path, [f"{path}: features.builder: ", f"{path}: features.feature_service: "]


def test_cli_check_prints_every_problem_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, starts = _two_mistakes(tmp_path)
    for key, value in _env(tmp_path, path).items():
        if key.startswith("DRIFTLOOP_"):
            monkeypatch.setenv(key, value)
    result = runner.invoke(app, ["check"])
    assert result.exit_code == EXIT_USAGE, result.output
    lines = result.stderr.splitlines()
    assert [line.split(": ", 2)[:2] for line in lines] == [s.split(": ")[:2] for s in starts]
    assert "no module named 'driftloop_no_such_mod'" in lines[0]
    assert "defines no feature service 'churn_v9'" in lines[1]
    assert "Traceback" not in result.output
    assert "OK" not in result.stdout


def test_cli_check_on_a_good_use_case_prints_one_ok_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "OK: use case telco_churn: datasets usage, labels; 19 features from feature service "
        "churn_v1"
    ]
    assert result.stderr == ""


PROBE = """
import json, sys
from driftloop.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
prefect = sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect."))
print(json.dumps({"code": code, "prefect": prefect[:3]}))
"""


def test_a_flow_command_with_a_broken_use_case_stops_before_prefect(tmp_path: Path) -> None:
    path, starts = _two_mistakes(tmp_path)
    env = _env(tmp_path, path)
    checked, ingest = (
        subprocess.run(
            [sys.executable, "-c", PROBE, command],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,  # a started flow would wait for its temporary server far longer
        )
        for command in ("check", "ingest")
    )
    for run in (checked, ingest):
        outcome = run.stdout.splitlines()[-1:]
        assert outcome == [json.dumps({"code": EXIT_USAGE, "prefect": []})], run.stderr[-2000:]
        assert "Traceback" not in run.stderr
    assert ingest.stderr == checked.stderr  # the same lines as `driftloop check`
    assert [line.split(": ", 2)[:2] for line in ingest.stderr.splitlines()] == [
        s.split(": ")[:2] for s in starts
    ]
    # no Prefect server was started: it would have made its home and database
    assert not (tmp_path / "prefect-home").exists()


def test_down_is_not_held_up_by_a_broken_use_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _two_mistakes(tmp_path)
    for key, value in _env(tmp_path, path).items():
        if key.startswith("DRIFTLOOP_"):
            monkeypatch.setenv(key, value)
    result = runner.invoke(app, ["down"])
    assert result.exit_code == 0, result.output
    assert "nothing was running" in result.stdout
