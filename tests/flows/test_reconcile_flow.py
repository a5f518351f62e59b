"""The reconcile flow under a real (temporary) Prefect API with the chain's deployments: it
starts exactly the missing run, and not again while that run is still on its way."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from driftloop_config.settings import Settings
from flows.reconcile import ReconcileParams, reconcile_flow
from tasks.reconcile import CHAIN
from tasks.storage import Lake
from tests.helpers import to_csv, usage_rows

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def chain() -> Iterator[dict[str, UUID]]:
    """Deployments named like prefect.yaml's (no worker polls them: runs stay scheduled);
    removed afterwards with every run they got."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        ids = {
            name: client.create_deployment(flow_id=client.create_flow_from_name(name), name=name)
            for name in CHAIN
        }
    try:
        yield ids
    finally:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=list(ids.values())))
            )
            for run in runs:
                client.delete_flow_run(run.id)
            for dep in ids.values():
                client.delete_deployment(dep)


def _runs(ids: dict[str, UUID]) -> dict[str, list[Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    names = {v: k for k, v in ids.items()}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=list(ids.values())))
        )
    out: dict[str, list[Any]] = {}
    for run in runs:
        assert run.deployment_id is not None
        out.setdefault(names[run.deployment_id], []).append(run)
    return out


def test_reconcile_starts_the_missing_ingest_run_once(
    local_settings: Settings, chain: dict[str, UUID]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Scheduled

    lake = Lake.from_settings(local_settings)
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(5)))
    with get_client(sync_client=True) as client:
        # tomorrow's cron run does not count as on its way
        tomorrow = client.create_flow_run_from_deployment(
            chain["ingest"],
            state=Scheduled(scheduled_time=datetime.now(tz=UTC) + timedelta(days=1)),
        )

    out = reconcile_flow(ReconcileParams(settle_seconds=0))
    [started] = out["started"]
    assert started["deployment"] == "ingest"
    assert started["reason"] == "1 landed objects not ingested: usage/2026-01-01.csv"
    runs = _runs(chain)
    assert set(runs) == {"ingest"}
    assert sorted(str(r.id) for r in runs["ingest"]) == sorted(
        [str(tomorrow.id), started["flow_run_id"]]
    )
    new = next(r for r in runs["ingest"] if str(r.id) == started["flow_run_id"])
    assert new.state is not None and new.state.type.value == "SCHEDULED"
    assert new.parameters == {"params": {"trigger": "reconcile"}}
    assert new.tags == ["reconcile"]

    # while it is still scheduled, a second reconcile starts nothing
    again = reconcile_flow(ReconcileParams(settle_seconds=0))
    assert again["started"] == []
    assert again["wanted"] == [{"deployment": "ingest", "reason": started["reason"]}]
    assert list(again["on_its_way"]) == ["ingest"]
    assert [n.split(" (")[0] for n in again["on_its_way"]["ingest"]] == [new.name]
    assert len(_runs(chain)["ingest"]) == 2

    # it ended without ingesting (e.g. crashed): the object is still pending, so a new run
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(new.id, Completed(), force=True)
    third = reconcile_flow(ReconcileParams(settle_seconds=0))
    assert [s["deployment"] for s in third["started"]] == ["ingest"]
    assert third["started"][0]["flow_run_id"] not in (str(new.id), str(tomorrow.id))
    assert len(_runs(chain)["ingest"]) == 3


def test_a_dry_run_starts_nothing_and_fresh_arrivals_are_left_to_their_event(
    local_settings: Settings, chain: dict[str, UUID]
) -> None:
    lake = Lake.from_settings(local_settings)
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(5)))
    fresh = reconcile_flow(ReconcileParams())  # landed less than a minute ago
    assert fresh["wanted"] == [] and fresh["started"] == []
    assert fresh["pending"]["objects_recent"] == ["usage/2026-01-01.csv"]

    dry = reconcile_flow(ReconcileParams(settle_seconds=0, dry_run=True))
    assert [w["deployment"] for w in dry["wanted"]] == ["ingest"]
    assert dry["started"] == [] and dry["not_deployed"] == []
    assert _runs(chain) == {}


def test_the_reconcile_form_opens_on_its_typed_fields() -> None:
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(reconcile_flow.fn).model_dump_for_openapi()
    prop = schema["properties"]["params"]
    assert "anyOf" not in prop
    assert prop["default"] == {"settle_seconds": 60.0, "dry_run": False}
    assert set(schema["definitions"]["ReconcileParams"]["properties"]) == {
        "settle_seconds",
        "dry_run",
    }


def test_the_command_line_reconciles_once(
    local_settings: Settings, chain: dict[str, UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL
    from typer.testing import CliRunner

    from driftloop.cli import app

    runner = CliRunner()
    Lake.from_settings(local_settings).landing.write_bytes(
        "usage/2026-01-01.csv", to_csv(usage_rows(5))
    )
    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    result = runner.invoke(app, ["reconcile", "--settle", "0", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert (
        "ingest: 1 landed objects not ingested: usage/2026-01-01.csv\n  → would start (dry run)"
        in result.output
    )
    assert _runs(chain) == {}
    result = runner.invoke(app, ["reconcile", "--settle", "0"])
    assert result.exit_code == 0, result.output
    [run] = _runs(chain)["ingest"]
    assert f"  → started {run.name} ({run.id})" in result.output
    result = runner.invoke(app, ["reconcile", "--settle", "0"])
    assert f"  → already on its way: {run.name} (" in result.output
    assert len(_runs(chain)["ingest"]) == 1
