"""The Feast repository and the store driftloop configures from its settings (tasks/feature_store.py):
the repository's objects, the store's configuration, the shipped and rendered YAML, the feast CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from feast import FeatureStore

from driftloop_config.settings import PROJECT_ROOT, Settings, load_settings
from driftloop_config.usecase import load_usecase
from tasks.feature_store import (
    feature_source_path,
    feature_store,
    load_repo_objects,
    repo_config_dict,
    write_feature_store_yaml,
)

USECASE = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
FEAST = Path(sys.executable).with_name("feast")


def test_repo_defines_the_objects() -> None:
    objects = load_repo_objects(PROJECT_ROOT / "feature_repo")
    assert [e.name for e in objects.entities] == ["customer"]
    assert objects.entities[0].join_key == "customer_id"
    assert sorted(v.name for v in objects.feature_views) == ["customer_profile", "usage_aggregates"]
    [service] = objects.feature_services
    assert USECASE.features is not None
    assert service.name == USECASE.features.feature_service == "churn_v1"
    names = {f.name for p in service.feature_view_projections for f in p.features}
    assert {"features_asof", "plan", "minutes_trend", "active_days_30d"} <= names
    assert all(v.ttl == timedelta(days=35) for v in objects.feature_views)
    assert "sources" not in sys.modules and "views" not in sys.modules  # imported fresh each time


def test_feature_store_config_follows_settings(local_settings: Settings) -> None:
    store = feature_store(local_settings)
    state = local_settings.state_path
    assert store.config.registry.path == str(state / "feast_registry.db")
    assert store.config.online_store.type == "tasks.online_sqlite.EntitySqliteOnlineStore"
    assert store.config.online_store.path == str(state / "online.db")
    assert store.config.provider == "tasks.online_sqlite.Provider"
    assert store.config.offline_store.type == "duckdb"
    path = feature_source_path(local_settings, "customer_daily")
    assert path == str(local_settings.local_root / "features/customer_daily/date=*/*.parquet")
    redis = repo_config_dict(load_settings(online_store="redis", redis_url="10.0.0.1:6380,db=3"))
    assert redis["online_store"] == {"type": "redis", "connection_string": "10.0.0.1:6380,db=3"}
    assert redis["provider"] == "local"


def test_shipped_yaml_matches_the_default_settings() -> None:
    """feature_repo/feature_store.yaml is what driftloop configures for the default settings."""
    from feast.repo_config import load_repo_config

    repo = PROJECT_ROOT / "feature_repo"
    shipped = load_repo_config(repo, repo / "feature_store.yaml")
    default = repo_config_dict(load_settings())
    state = load_settings().state_path
    assert shipped.project == default["project"]
    assert (repo / shipped.registry.path).resolve() == state / "feast_registry.db"
    assert (repo / shipped.online_store.path).resolve() == state / "online.db"
    assert shipped.online_store.type == default["online_store"]["type"]
    assert shipped.provider == default["provider"] and shipped.offline_store.type == "duckdb"
    assert shipped.entity_key_serialization_version == default["entity_key_serialization_version"]


def _feast(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(FEAST), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    return out


def test_feast_cli_plan_and_apply(tmp_path: Path) -> None:
    """`feast plan` / `feast apply` from feature_repo/ against a temporary lake and state:
    with the file driftloop renders from the settings (-f), and with the shipped YAML."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    env["DRIFTLOOP_DATA_ROOT"] = str(tmp_path / "lake")
    env["DRIFTLOOP_STATE_DIR"] = str(tmp_path / "state")
    settings = load_settings(data_root=str(tmp_path / "lake"), state_dir=tmp_path / "state")
    rendered = write_feature_store_yaml(settings)

    # the shipped YAML in a copy of the project layout: <copy>/feature_repo + <copy>/data
    copy = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "feature_repo", copy / "feature_repo")
    shipped_env = {k: v for k, v in env.items() if not k.startswith("DRIFTLOOP_")}
    shipped_env["DRIFTLOOP_DATA_ROOT"] = str(copy / "data")

    repo = PROJECT_ROOT / "feature_repo"
    procs = [
        _feast(["-f", str(rendered), "plan"], repo, env),
        _feast(["apply"], copy / "feature_repo", shipped_env),
    ]
    plan_out, shipped_out = (_finish(p) for p in procs)
    assert "customer_profile" in plan_out and "usage_aggregates" in plan_out
    # Feast's apply path for any store but its own SQLite one prints the views it deployed
    assert "Deploying infrastructure for customer_profile" in shipped_out
    shipped_store = FeatureStore(repo_path=str(copy / "feature_repo"))
    assert [s.name for s in shipped_store.list_feature_services()] == ["churn_v1"]
    assert (copy / "data" / "_state" / "feast_registry.db").is_file()
    assert feature_store(settings).list_feature_views() == []  # plan registers nothing

    apply_out = _finish(_feast(["-f", str(rendered), "apply"], repo, env))
    assert "Deploying infrastructure for usage_aggregates" in apply_out
    registered = feature_store(settings)
    assert sorted(v.name for v in registered.list_feature_views()) == [
        "customer_profile",
        "usage_aggregates",
    ]
    assert [s.name for s in registered.list_feature_services()] == ["churn_v1"]
    source = registered.get_data_source("customer_daily")
    assert getattr(source, "path", None) == feature_source_path(settings, "customer_daily")
    assert not list(repo.glob("data")), "the CLI must not write into feature_repo/"
