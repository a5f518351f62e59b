from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from driftloop_config.settings import PROJECT_ROOT, load_settings
from driftloop_config.usecase import LoopSpec, UseCaseError, load_usecase
from tests.support.estimators import telco_usecase_file
from tests.support.usecases import feature_repo_of

SHIPPED = sorted((PROJECT_ROOT / "usecases").glob("*.yaml"))
TELCO = PROJECT_ROOT / "usecases" / "telco_churn.yaml"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_usecase_runs_the_whole_loop(path: Path, tmp_path: Path) -> None:
    """Each shipped use case parses, has the three sections of the closed loop, and its
    references resolve: both suites of every dataset, the builders (and estimator) import and
    produce what the feature service of its Feast repository reads (``driftloop check``)."""
    from driftloop.check import run_check

    uc = load_usecase(path)
    assert uc.file == path and uc.name == path.stem
    loop = uc.loop()
    assert (loop.target, loop.features, loop.model) == (uc.target, uc.features, uc.model)
    assert uc.datasets
    for spec in uc.datasets.values():
        assert spec.name
        assert uc.suite(spec.batch_suite)["expectations"]
        assert uc.suite(spec.row_suite)["expectations"]
    report = run_check(
        load_settings(
            data_root=str(tmp_path / "lake"), usecase=path, feature_repo=feature_repo_of(path)
        )
    )
    assert report.problems == []
    assert report.usecase == uc.name
    assert report.feature_service == loop.features.feature_service
    assert "features_asof" in report.features  # the repository was really read


def _telco_without(tmp_path: Path, *sections: str) -> Path:
    """The telco use case without ``sections``, written under ``tmp_path``."""
    raw = yaml.safe_load(TELCO.read_text())
    for section in sections:
        del raw[section]
    path = tmp_path / "usecases" / "partial.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "missing", [("model",), ("target",), ("features",), ("target", "model")], ids="+".join
)
def test_a_usecase_lacking_a_loop_section_loads_but_cannot_run_the_loop(
    tmp_path: Path, missing: tuple[str, ...]
) -> None:
    """Datasets alone can be ingested: the use case loads. The loop's steps ask for
    ``loop()``, which names the file and every missing section."""
    path = _telco_without(tmp_path, *missing)
    uc = load_usecase(path, project_root=PROJECT_ROOT)
    assert all(getattr(uc, section) is None for section in missing)
    with pytest.raises(UseCaseError) as caught:
        uc.loop()
    message = str(caught.value)
    assert f"use case file {path} cannot run the closed loop" in message
    assert f"it has no {' and no '.join(missing)} section" in message
    assert [where for where, _ in caught.value.problems] == list(missing)
    assert isinstance(caught.value, ValueError)  # what the steps raised before, for callers


def test_a_usecase_built_in_code_is_named_by_its_name() -> None:
    uc = load_usecase(TELCO).model_copy(update={"model": None})
    assert uc.file == TELCO  # a copy keeps where it came from
    built = type(uc)(name="x", entity="id", datasets=uc.datasets)
    assert built.file is None
    with pytest.raises(UseCaseError, match=r"^use case 'x' cannot run .* no target and no "):
        built.loop()


def test_the_loop_of_a_complete_usecase_is_its_sections() -> None:
    uc = load_usecase(TELCO)
    loop = uc.loop()
    assert isinstance(loop, LoopSpec)
    assert loop.target is uc.target and loop.features is uc.features and loop.model is uc.model
    assert loop == uc.loop()
    with pytest.raises(AttributeError):
        loop.model = None  # type: ignore[misc, assignment]  # frozen


@pytest.mark.parametrize(
    ("edit", "where", "message"),
    [
        (lambda raw: raw["model"].update(holdout_dayz=4), "model.holdout_dayz", "Extra inputs"),
        (lambda raw: raw["target"].pop("horizon_days"), "target.horizon_days", "Field required"),
        (lambda raw: raw.pop("entity"), "entity", "Field required"),
    ],
    ids=["unknown-key", "missing-field", "missing-top-field"],
)
def test_a_broken_usecase_names_the_problem(
    tmp_path: Path, edit: Any, where: str, message: str
) -> None:
    raw = yaml.safe_load(TELCO.read_text())
    edit(raw)
    path = tmp_path / "usecases" / "broken.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(UseCaseError) as caught:
        load_usecase(path, project_root=PROJECT_ROOT)
    assert [w for w, _ in caught.value.problems] == [where]
    assert message in caught.value.problems[0][1]
    assert str(caught.value).startswith(f"use case file {path} is invalid:\n  {where}: {message}")


def test_dataset_for_key() -> None:
    uc = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
    assert uc.dataset_for_key("usage/2026-01-01.csv").name == "usage"  # type: ignore[union-attr]
    assert uc.dataset_for_key("labels/2026-01-01.csv").name == "labels"  # type: ignore[union-attr]
    assert uc.dataset_for_key("other/x.csv") is None


@pytest.mark.parametrize(
    ("name", "table", "prediction"),
    [
        ("telco_churn", "customer_daily", "churn_probability"),
        ("nyc_flight_delays", "aircraft_daily", "delayed_probability"),
        ("us_low_birth_days", "state_daily", "quiet_day_probability"),
        ("us_state_births", "state_daily", "births_next_7d_predicted"),
        ("saas_retention", "account_weekly", "cancelled_probability"),
    ],
)
def test_output_names_come_from_the_usecase(name: str, table: str, prediction: str) -> None:
    uc = load_usecase(PROJECT_ROOT / "usecases" / f"{name}.yaml")
    assert (uc.feature_table, uc.prediction_column) == (table, prediction)


def test_output_names_default_to_the_usecase_and_target_names(tmp_path: Path) -> None:
    import yaml

    raw = yaml.safe_load((PROJECT_ROOT / "usecases" / "telco_churn.yaml").read_text())
    raw["name"] = "phone_plans"
    del raw["features"]["table"], raw["target"]["prediction"]
    path = tmp_path / "phone_plans.yaml"
    path.write_text(yaml.safe_dump(raw))
    uc = load_usecase(path, project_root=PROJECT_ROOT)
    assert (uc.feature_table, uc.prediction_column) == ("phone_plans", "churned_probability")


def _regression(tmp_path: Path, **changes: dict[str, object]) -> Path:
    """The shipped regression use case with ``changes`` merged into its sections."""
    import yaml

    raw = yaml.safe_load((PROJECT_ROOT / "usecases" / "us_state_births.yaml").read_text())
    for section, values in changes.items():
        for key, value in values.items():
            if value is None:
                raw[section].pop(key, None)
            else:
                raw[section][key] = value
    path = tmp_path / "births.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_regression_target_defaults_and_checks(tmp_path: Path) -> None:
    shipped = load_usecase(PROJECT_ROOT / "usecases" / "us_state_births.yaml")
    assert shipped.target is not None and shipped.model is not None
    assert (shipped.target.kind, shipped.target.value_column) == ("regression", "births")
    assert (shipped.model.metric, shipped.model.lower_is_better) == ("rmse", True)
    plain = load_usecase(
        _regression(tmp_path, target={"prediction": None}, model={"floor": None, "metric": "mae"}),
        project_root=PROJECT_ROOT,
    )
    assert plain.prediction_column == "births_next_7d_predicted"
    assert plain.model is not None and plain.model.floor == 0.0  # skill over the mean
    telco = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
    assert telco.model is not None and not telco.model.lower_is_better
    mistakes: dict[str, dict[str, dict[str, object]]] = {
        r"target\.value_column: a regression target needs value_column": {
            "target": {"value_column": None}
        },
        r"target\.recurring: .*must be recurring": {"target": {"recurring": False}},
        r"target\.value_column: .*'state' is not a numeric": {"target": {"value_column": "state"}},
        r"model\.metric: .*measured by rmse or mae": {"model": {"metric": "roc_auc"}},
    }
    for message, change in mistakes.items():
        with pytest.raises(UseCaseError, match=message):
            load_usecase(_regression(tmp_path, **change), project_root=PROJECT_ROOT)
    binary = tmp_path / "binary.yaml"
    binary.write_text(
        (PROJECT_ROOT / "usecases" / "telco_churn.yaml")
        .read_text()
        .replace("  metric: roc_auc", "  metric: rmse")
    )
    with pytest.raises(UseCaseError, match=r"model\.metric: .*measured by roc_auc or pr_auc"):
        load_usecase(binary, project_root=PROJECT_ROOT)


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "usecases").mkdir(exist_ok=True)
    p = tmp_path / "usecases" / "bad.yaml"
    p.write_text(text)
    return p


def test_bad_usecase_names_the_field(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "name: x\nentity: id\ndatasets:\n  d:\n    landing_prefix: d/\n    key: [id]\n"
        "    partition_by: day\n    columns: {id: string}\n    batch_suite: a.json\n    row_suite: b.json\n",
    )
    with pytest.raises(UseCaseError, match="datasets.d.*not in columns"):
        load_usecase(p)


def test_missing_suite_is_reported(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "name: x\nentity: id\ndatasets:\n  d:\n    landing_prefix: d/\n    key: [id]\n"
        "    partition_by: day\n    columns: {id: string, day: date}\n    batch_suite: a.json\n"
        "    row_suite: b.json\n",
    )
    with pytest.raises(UseCaseError, match="a.json does not exist"):
        load_usecase(p)


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    p = _write(tmp_path, "name: x\nentity: id\ncolour: red\ndatasets: {}\n")
    with pytest.raises(UseCaseError, match="colour"):
        load_usecase(p)


def test_model_estimator_is_optional_and_must_be_a_module_function(tmp_path: Path) -> None:
    shipped = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml").model
    assert shipped is not None and shipped.estimator is None
    named = telco_usecase_file(tmp_path, "tests.support.estimators:logistic")
    model = load_usecase(named, project_root=PROJECT_ROOT).model
    assert model is not None and model.estimator == "tests.support.estimators:logistic"
    bad = telco_usecase_file(tmp_path, "tests.support.estimators.logistic")
    with pytest.raises(UseCaseError, match=r"model\.estimator"):
        load_usecase(bad, project_root=PROJECT_ROOT)


def test_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(UseCaseError, match="not valid YAML"):
        load_usecase(_write(tmp_path, "name: [unclosed"))
