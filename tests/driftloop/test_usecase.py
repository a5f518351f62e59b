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
