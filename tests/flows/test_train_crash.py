"""A train run stopped anywhere (kill -9) is finished by the next one.

Each leftover state is made the way a stopped run leaves it — through the real training code and
the MLflow client on a SQLite store — and :func:`tasks.recovery.recover_interrupted` is run on
it; the last test kills a real train flow in a subprocess and runs the flow again.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftloop_config.settings import PROJECT_ROOT, Settings
from driftloop_config.usecase import UseCase, load_usecase
from tasks import loop_state, recovery, registry, training
from tasks.feature_store import feature_store
from tasks.storage import Lake
from tasks.training_set import last_snapshot_day
from tests.support.usecases import usecase_with
from tests.support.world import simulated_world

pytestmark = pytest.mark.usefixtures("prefect_harness")

MODEL = {"floor": 0.5, "bootstrap_samples": 100, "min_history_days": 0}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The smallest world the train-flow tests use: 34 days of 800 customers, ingested and
    turned into features."""
    with simulated_world(tmp_path_factory.mktemp("crash-world"), customers=800, model=MODEL) as s:
        yield s


def usecase_named(tmp: Path) -> UseCase:
    """The world's use case with a registered model of its own (one per test)."""
    name = f"churn_{uuid.uuid4().hex[:8]}"
    return load_usecase(usecase_with(tmp, model={**MODEL, "registered_name": name}))


def registered_name(usecase: UseCase) -> str:
    assert usecase.model is not None
    return usecase.model.registered_name


def test_runs_left_running_are_marked_killed(world: Settings, tmp_path: Path) -> None:
    usecase = usecase_named(tmp_path)
    name = registered_name(usecase)
    client = registry.client_for(world.tracking_uri)
    experiment = registry.ensure_experiment(client, name, world.artifact_root)
    left = client.create_run(experiment).info.run_id  # its process was killed
    done = client.create_run(experiment).info.run_id
    client.set_terminated(done, "FINISHED")
    lake = Lake.from_settings(world)

    out = recovery.recover_interrupted(world, usecase, lake)

    assert out.killed_runs == [left]
    run = client.get_run(left)
    assert run.info.status == "KILLED"
    assert run.data.tags[registry.KILLED_REASON_TAG].startswith(
        "the train run that owned it stopped"
    )
    assert run.info.end_time is not None
    assert client.get_run(done).info.status == "FINISHED"
    assert registry.KILLED_REASON_TAG not in client.get_run(done).data.tags
    assert (out.judged, out.completed, out.announcements) == ({}, [], [])
    # nothing is left for the run after
    assert recovery.recover_interrupted(world, usecase, lake).clean


def test_a_version_registered_before_the_gate_is_judged(world: Settings, tmp_path: Path) -> None:
    usecase = usecase_named(tmp_path)
    name = registered_name(usecase)
    lake = Lake.from_settings(world)
    store = feature_store(world)
    data = training.build_training_set(lake, usecase, store)
    # the run got as far as registering its model, then was killed: challenger, no decision
    result = training.train_challenger(world, usecase, data, lake, seed=3)
    assert result.version == "1"
    assert registry.version_for_alias(world.tracking_uri, name, registry.CHALLENGER) == "1"
    gone = subprocess.Popen(["true"])  # a writer that is gone: its temporary file is debris
    gone.wait()
    debris = lake.reports.local_path(f"promotion/.{name}-v1.html.tmp-{gone.pid}-0123abcd")  # type: ignore[attr-defined]
    debris.parent.mkdir(parents=True, exist_ok=True)
    debris.write_bytes(b"<!doctype html><p>half")

    out = recovery.recover_interrupted(world, usecase, lake, store=lambda: store)

    assert out.judged == {"1": "promoted"}  # no champion: the floor (0.5) decides, as in a run
    assert out.killed_runs == [] and out.completed == []
    assert out.removed == [f"reports/promotion/{debris.name}"] and not debris.exists()
    client = registry.client_for(world.tracking_uri)
    tags = client.get_model_version(name, "1").tags
    assert tags[registry.DECISION_TAG] == "promoted"
    assert tags["driftloop.compared_with"] == "none"
    recorded = registry.decision_from_tags(tags)
    assert recorded is not None and recorded.promote and recorded.n == result.rows["holdout"]
    assert registry.champion_version(world.tracking_uri, name) == "1"
    assert registry.version_for_alias(world.tracking_uri, name, registry.CHALLENGER) is None
    # the report of a real gate run: holdout curves included
    assert out.reports == {"1": f"promotion/{name}-v1.html"}
    page = lake.reports.read_bytes(out.reports["1"]).decode()
    assert f"Promotion decision — {name} v1" in page and "data:image/png;base64," in page
    # the loop state records the training, as the stopped run would have
    assert usecase.target is not None
    trained_through = loop_state.read_state(lake.ledger).last_trained_through
    assert trained_through == last_snapshot_day(
        data.as_of,
        horizon_days=usecase.target.horizon_days,
        label_delay_days=usecase.target.label_delay_days,
    )
    # its event is handed back to be emitted, then marked
    [(version, event)] = out.announcements
    assert version == "1"
    assert event["event"] == training.PROMOTED_EVENT
    assert event["resource"]["driftloop.version"] == "1"
    assert event["payload"]["previous_champion"] is None
    recovery.mark_announced(world.tracking_uri, name, "1")
    assert recovery.recover_interrupted(world, usecase, lake, store=lambda: store).clean


def test_a_promotion_stopped_before_its_report_and_event_is_completed(
    world: Settings, tmp_path: Path
) -> None:
    usecase = usecase_named(tmp_path)
    name = registered_name(usecase)
    lake = Lake.from_settings(world)
    store = feature_store(world)
    data = training.build_training_set(lake, usecase, store)
    result = training.train_challenger(world, usecase, data, lake, seed=4)
    decision, previous, key = training.promotion_gate(world, usecase, data, result.version, lake)
    assert decision.promote and previous is None
    # killed after the champion alias moved, before the report was written and the event sent
    lake.reports.delete(key)
    client = registry.client_for(world.tracking_uri)
    assert registry.ANNOUNCED_TAG not in client.get_model_version(name, "1").tags

    def no_store() -> object:
        raise AssertionError("completing a decision must not rebuild the training set")

    out = recovery.recover_interrupted(world, usecase, lake, store=no_store)  # type: ignore[arg-type]

    assert out.completed == ["1"] and out.judged == {} and out.killed_runs == []
    assert registry.champion_version(world.tracking_uri, name) == "1"
    assert out.reports == {"1": key}
    page = lake.reports.read_bytes(key).decode()
    assert "rebuilt from the decision recorded on the version" in page
    assert html.escape(decision.reason) in page
    [(version, event)] = out.announcements
    assert version == "1"
    assert event == training.decision_event(name, "1", decision, None, world.tracking_uri)
    recovery.mark_announced(world.tracking_uri, name, "1")
    assert client.get_model_version(name, "1").tags[registry.ANNOUNCED_TAG] == "true"
    again = recovery.recover_interrupted(world, usecase, lake, store=no_store)  # type: ignore[arg-type]
    assert again.clean and again.announcements == []


# ---- a real train flow, killed -------------------------------------------------------------------

#: The child runs the real train flow; right after its model version is registered — before the
#: ``challenger`` alias is set and the run finished, so before the gate — it says so in a file
#: and waits to be killed.
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mlflow import MlflowClient
    from flows.train import TrainParams, train_flow

    marker = Path(sys.argv[1])
    original = MlflowClient.set_registered_model_alias

    def set_alias(self, name, alias, version):
        if alias == "challenger":
            marker.write_text(f"{name} {version}")
            time.sleep(600)
        return original(self, name, alias, version)

    MlflowClient.set_registered_model_alias = set_alias
    train_flow(TrainParams(seed=1))
    """
)


def _child_env(world: Settings) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    assert api, "the Prefect test harness sets an API URL"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_API_URL": api,
            "DRIFTLOOP_DATA_ROOT": world.data_root,
            "DRIFTLOOP_USECASE": str(world.usecase),
            "DO_NOT_TRACK": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "GX_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": str(PROJECT_ROOT),
        }
    )
    return env


def _wait_for(marker: Path, proc: subprocess.Popen[bytes], log: Path, limit: float) -> str:
    deadline = time.monotonic() + limit
    while not marker.exists() or not marker.read_text():
        if proc.poll() is not None:
            pytest.fail(
                f"the train flow ended ({proc.returncode}) before registering:\n"
                f"{log.read_text()[-4000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"the train flow did not register a model:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    return marker.read_text()


def test_a_train_flow_killed_mid_run_is_finished_by_the_next_run(
    world: Settings, tmp_path: Path
) -> None:
    from flows.train import TrainParams, train_flow

    name = "telco_churn"
    marker = tmp_path / "registered"
    log = tmp_path / "child.log"
    with open(log, "wb") as child_log:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(marker)],
            cwd=PROJECT_ROOT,
            env=_child_env(world),
            stdout=child_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert _wait_for(marker, proc, log, limit=300) == f"{name} 1"
    finally:
        with contextlib.suppress(ProcessLookupError):  # the child and anything it started
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # what the kill left: a RUNNING run and a version without decision (nor alias)
    client = registry.client_for(world.tracking_uri)
    left = client.get_model_version(name, "1")
    assert left.run_id is not None
    assert client.get_run(left.run_id).info.status == "RUNNING"
    assert registry.DECISION_TAG not in left.tags

    out = train_flow(TrainParams(seed=2))

    assert out["recovered"]["killed_runs"] == [left.run_id]
    assert out["recovered"]["judged"] == {"1": "promoted"}
    assert out["recovered"]["announced"] == ["1"]
    assert out["version"] == "2" and out["decision"]["compared_with"] == "1"
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    statuses = {
        r.info.run_id: r.info.status for r in client.search_runs([experiment.experiment_id])
    }
    assert "RUNNING" not in statuses.values()
    assert statuses[left.run_id] == "KILLED"
    versions = registry.versions(client, name)
    assert [str(v.version) for v in versions] == ["1", "2"]
    for v in versions:
        assert v.tags[registry.DECISION_TAG] in ("promoted", "rejected")
        assert v.tags[registry.ANNOUNCED_TAG] == "true"
    champions = [  # a search does not fill in aliases: ask each version
        str(v.version)
        for v in versions
        if registry.CHAMPION in client.get_model_version(name, str(v.version)).aliases
    ]
    assert champions == ["2" if out["promoted"] else "1"]
    lake = Lake.from_settings(world)
    for version in ("1", "2"):
        assert lake.reports.exists(f"promotion/{name}-v{version}.html")
    data_root = Path(world.data_root.removeprefix("file://"))
    assert [p for p in data_root.rglob("*") if ".tmp-" in p.name] == []
    assert json.loads(lake.ledger.read_bytes(loop_state.STATE_KEY))["last_trained_through"]
