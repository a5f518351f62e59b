from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.settings import PROJECT_ROOT
from driftloop.usecase import UseCaseError, load_usecase
from tests.support.estimators import telco_usecase_file

SHIPPED = sorted((PROJECT_ROOT / "usecases").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_usecase_parses(path: Path) -> None:
    uc = load_usecase(path)
    assert uc.datasets
    for spec in uc.datasets.values():
        assert spec.name
        suite = uc.suite(spec.row_suite)
        assert suite["expectations"]


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
