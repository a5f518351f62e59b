"""The cloud work-pool base job templates in deploy/: complete, sized, reproducible, and
accepted by a real Prefect API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftloop_config.settings import PROJECT_ROOT, load_settings
from tests.deploy.modules import DEPLOY, load

TYPES = ("ecs", "kubernetes")
PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")


render = load("render.py")


def _template(kind: str, pool: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / kind / f"{pool}.json").read_text("utf-8"))
    return data


def _placeholders(node: Any) -> set[str]:
    if isinstance(node, str):
        return set(PLACEHOLDER.findall(node))
    if isinstance(node, dict):
        return set().union(*(_placeholders(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_placeholders(v) for v in node)) if node else set()
    return set()


def _defaults(template: dict[str, Any]) -> dict[str, Any]:
    return {
        name: prop["default"]
        for name, prop in template["variables"]["properties"].items()
        if "default" in prop
    }


def _prefect_yaml_pools() -> dict[str, list[str]]:
    """``{work pool: [deployment names]}`` as prefect.yaml declares them, in order."""
    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text("utf-8"))
    pools: dict[str, list[str]] = {}
    for d in config["deployments"]:
        pools.setdefault(d["work_pool"]["name"], []).append(d["name"])
    return pools


ALL = [(kind, pool) for kind in TYPES for pool in render.SIZES]


def test_sizing_table_covers_exactly_the_pools_of_prefect_yaml() -> None:
    pools = _prefect_yaml_pools()
    assert set(render.SIZES) == set(pools)
    # a pool is sized for the flow it was made for; the small reconcile flow rides along
    for pool, size in render.SIZES.items():
        assert pools[pool][0] == size.flow, pool
    assert pools["monitoring-pool"] == ["drift", "reconcile"]
    assert all(len(names) == 1 for pool, names in pools.items() if pool != "monitoring-pool")


@pytest.mark.parametrize(("kind", "pool"), ALL)
def test_every_pool_has_a_template_of_each_type(kind: str, pool: str) -> None:
    template = _template(kind, pool)
    assert isinstance(template, dict)
    assert isinstance(template["job_configuration"], dict)
    assert isinstance(template["variables"], dict)
    assert template["variables"]["type"] == "object"
    assert isinstance(template["variables"]["properties"], dict)


@pytest.mark.parametrize(("kind", "pool"), ALL)
def test_every_placeholder_is_a_declared_variable(kind: str, pool: str) -> None:
    template = _template(kind, pool)
    used = _placeholders(template["job_configuration"])
    declared = set(template["variables"]["properties"])
    assert used, "a job configuration without placeholders is not a template"
    assert used <= declared, f"undeclared: {sorted(used - declared)}"


@pytest.mark.parametrize(("kind", "pool"), ALL)
def test_prefect_accepts_the_template_shape(kind: str, pool: str) -> None:
    """Prefect's own client-side validation (the same check the API runs on create)."""
    from prefect.client.schemas.actions import WorkPoolCreate

    template = _template(kind, pool)
    created = WorkPoolCreate(name=pool, type=kind, base_job_template=template)
    assert created.base_job_template == template


@pytest.mark.parametrize("kind", TYPES)
def test_templates_keep_everything_of_the_worker_default(kind: str) -> None:
    """The per-pool templates extend the worker's default; they drop nothing from it."""
    default = json.loads((DEPLOY / kind / "_default.json").read_text("utf-8"))
    default_vars = default["variables"]["properties"]
    for pool in render.SIZES:
        template = _template(kind, pool)
        assert _placeholders(default["job_configuration"]) <= _placeholders(
            template["job_configuration"]
        )
        assert set(default["job_configuration"]) == set(template["job_configuration"])
        props = template["variables"]["properties"]
        for name, schema in default_vars.items():
            kept = {k: v for k, v in props[name].items() if k not in ("default", "description")}
            assert kept == {k: v for k, v in schema.items() if k not in ("default", "description")}
        assert template["variables"]["definitions"] == default["variables"]["definitions"]


def test_cpu_and_memory_match_the_sizing_table() -> None:
    for pool, size in render.SIZES.items():
        ecs = _defaults(_template("ecs", pool))
        assert ecs["cpu"] == round(size.vcpu * 1024)
        assert ecs["memory"] == size.memory_mib
        k8s = _defaults(_template("kubernetes", pool))
        assert k8s["cpu_request"] == render.k8s_cpu(size)
        assert k8s["memory_request"] == k8s["memory_limit"] == render.k8s_memory(size)
        assert k8s.get("cpu_limit") is None  # no CPU throttling
        assert _k8s_quantity_mib(k8s["memory_request"]) == size.memory_mib
        assert _k8s_quantity_cpu(k8s["cpu_request"]) == size.vcpu


def _k8s_quantity_mib(q: str) -> int:
    return int(q[:-2]) * 1024 if q.endswith("Gi") else int(q[:-2])


def _k8s_quantity_cpu(q: str) -> float:
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def test_training_gets_the_most_cpu_and_memory() -> None:
    train = render.SIZES["training-pool"]
    for pool, size in render.SIZES.items():
        if pool != "training-pool":
            assert train.vcpu > size.vcpu and train.memory_mib > size.memory_mib, pool
    ecs = {pool: _defaults(_template("ecs", pool)) for pool in render.SIZES}
    assert max(ecs, key=lambda p: (ecs[p]["cpu"], ecs[p]["memory"])) == "training-pool"


def test_every_size_is_a_fargate_size() -> None:
    for pool, size in render.SIZES.items():
        render.check_fargate(pool, size)  # raises when not
    with pytest.raises(ValueError, match="not a Fargate size"):
        render.check_fargate("x", render.Size("x", vcpu=4, memory_mib=4096, why=""))
    with pytest.raises(ValueError, match="not a Fargate size"):
        render.check_fargate("x", render.Size("x", vcpu=3, memory_mib=8192, why=""))


@pytest.mark.parametrize(("kind", "pool"), ALL)
def test_example_environment_is_a_valid_driftloop_configuration(
    kind: str, pool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _defaults(_template(kind, pool))["env"]
    assert env["DRIFTLOOP_DATA_ROOT"].startswith("s3://")
    assert env["DRIFTLOOP_ONLINE_STORE"] == "redis"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()  # rejects unknown or malformed DRIFTLOOP_* variables
    assert settings.online_store == "redis"
    assert settings.tracking_uri == env["DRIFTLOOP_MLFLOW_TRACKING_URI"]
    assert str(settings.state_path) == render.SITE["state_mount_path"]


def test_state_volume_is_mounted_where_the_state_dir_points() -> None:
    from prefect.utilities.templating import apply_values

    mount = render.SITE["state_mount_path"]
    for pool in render.SIZES:
        ecs = _template("ecs", pool)
        job = apply_values(ecs["job_configuration"], _defaults(ecs))
        volume = job["task_definition"]["volumes"][0]
        assert (
            volume["efsVolumeConfiguration"]["fileSystemId"]
            == render.SITE["ecs_state_file_system_id"]
        )
        (mount_point,) = job["task_definition"]["containerDefinitions"][0]["mountPoints"]
        assert mount_point == {
            "sourceVolume": volume["name"],
            "containerPath": mount,
            "readOnly": False,
        }
        assert job["env"]["DRIFTLOOP_STATE_DIR"] == mount

        k8s = _template("kubernetes", pool)
        job = apply_values(k8s["job_configuration"], _defaults(k8s))
        pod = job["job_manifest"]["spec"]["template"]["spec"]
        (volume,) = pod["volumes"]
        assert volume["persistentVolumeClaim"]["claimName"] == render.SITE["k8s_state_claim"]
        assert pod["containers"][0]["volumeMounts"] == [
            {"name": volume["name"], "mountPath": mount}
        ]
        assert job["env"]["DRIFTLOOP_STATE_DIR"] == mount


def test_prefect_templating_fills_in_the_pool_sizes() -> None:
    """Render the job configurations with Prefect's own templating and the pool defaults."""
    from prefect.utilities.templating import apply_values

    for pool, size in render.SIZES.items():
        ecs = _template("ecs", pool)
        job = apply_values(ecs["job_configuration"], _defaults(ecs))
        cpu, mem = round(size.vcpu * 1024), size.memory_mib
        assert job["task_definition"]["cpu"] == cpu and job["task_definition"]["memory"] == mem
        override = job["task_run_request"]["overrides"]
        assert (override["cpu"], override["memory"]) == (cpu, mem)
        assert job["task_definition"]["containerDefinitions"][0]["image"] == "driftloop:latest"

        k8s = _template("kubernetes", pool)
        job = apply_values(k8s["job_configuration"], _defaults(k8s))
        container = job["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["requests"] == {
            "cpu": render.k8s_cpu(size),
            "memory": render.k8s_memory(size),
        }
        assert container["resources"]["limits"]["memory"] == render.k8s_memory(size)
        assert container["image"] == "driftloop:latest"
        assert job["namespace"] == render.SITE["k8s_namespace"]


def test_ingest_rejects_files_well_below_its_memory() -> None:
    env = _defaults(_template("ecs", "ingest-pool"))["env"]
    max_mib = int(env["DRIFTLOOP_MAX_FILE_BYTES"]) / 1024**2
    peak_mib = render.INGEST_BASELINE_MIB + render.INGEST_MEMORY_PER_FILE_BYTE * max_mib
    assert peak_mib <= 0.5 * render.SIZES["ingest-pool"].memory_mib


def test_files_are_exactly_what_render_produces(tmp_path: Path) -> None:
    assert render.main(["--out", str(tmp_path)]) == 0
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json"))
    expected = sorted(Path(kind) / f"{pool}.json" for kind, pool in ALL)
    assert written == expected
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (DEPLOY / rel).read_bytes(), rel
    assert render.main(["--check"]) == 0


def test_check_reports_a_stale_template(tmp_path: Path) -> None:
    assert render.main(["--out", str(tmp_path)]) == 0
    stale = tmp_path / "ecs" / "training-pool.json"
    stale.write_text(stale.read_text("utf-8").replace("16384", "8192"), "utf-8")
    assert render.main(["--check", "--out", str(tmp_path)]) == 1
    assert render.main(["--out", str(tmp_path)]) == 0
    assert stale.read_bytes() == (DEPLOY / "ecs" / "training-pool.json").read_bytes()


def test_render_does_not_need_the_worker_plugins() -> None:
    source = (DEPLOY / "render.py").read_text("utf-8")
    assert not re.search(r"^\s*(import|from)\s+prefect", source, re.MULTILINE)


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("kind", TYPES)
def test_pools_are_created_on_a_real_prefect_api(kind: str) -> None:
    """Create the five pools of one type with these templates and read them back."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    suffix = uuid.uuid4().hex[:8]

    async def roundtrip() -> None:
        async with get_client() as client:
            names = {pool: f"{pool}-{kind}-{suffix}" for pool in render.SIZES}
            try:
                for pool, name in names.items():
                    await client.create_work_pool(
                        WorkPoolCreate(
                            name=name, type=kind, base_job_template=_template(kind, pool)
                        )
                    )
                for pool, name in names.items():
                    stored = await client.read_work_pool(name)
                    assert stored.type == kind
                    assert stored.base_job_template == _template(kind, pool)
            finally:
                for name in names.values():
                    with contextlib.suppress(ObjectNotFound):  # never created
                        await client.delete_work_pool(name)

    asyncio.run(roundtrip())
