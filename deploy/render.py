"""Render the base job templates of driftloop's cloud work pools.

    python deploy/render.py            # (re)write deploy/ecs/<pool>.json, deploy/kubernetes/<pool>.json
    python deploy/render.py --check    # exit 1 when a file differs from what would be written

Input: the default base job templates of the ECS and Kubernetes worker types, exactly as
``prefect work-pool get-default-base-job-template --type ecs|kubernetes`` prints them, stored as
``deploy/<type>/_default.json`` (see deploy/README.md for the versions). Output: one template per
pool with that pool's defaults: CPU and memory from ``SIZES``, the image, the production
``DRIFTLOOP_*`` environment, and the shared state volume that holds the Feast registry and the
promotion lock (every flow run is a fresh container, so that state must outlive it).

Edit ``SITE`` (your bucket, endpoints, file system) and ``SIZES`` here, re-run, then create or
update the pools (docs/cloud.md). Plain Python on purpose: no Prefect plugin is needed to render.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEPLOY_DIR = Path(__file__).resolve().parent
TYPES = ("ecs", "kubernetes")


@dataclass(frozen=True)
class Size:
    """What one pool's flow runs get: vCPUs and memory (MiB), and why."""

    flow: str
    vcpu: float
    memory_mib: int
    why: str


#: One pool per flow (the same names as prefect.yaml). Every pair is a valid Fargate size.
#: Peak memory measured with `driftloop <stage>` on the simulated telco, 40,000 customers x 60
#: days (docs/cloud.md has the table): ingest 0.6 GB (+ ~12x the size of the largest file),
#: features 2.7 GB, train 4.4 GB, score 0.9 GB, drift 1.1 GB.
SIZES: dict[str, Size] = {
    "ingest-pool": Size(
        flow="ingest",
        vcpu=1,
        memory_mib=8192,
        why="one file at a time through pandas and the GX row checks (single-threaded); "
        "a CSV takes ~12x its size in memory, so memory bounds the largest file "
        "(DRIFTLOOP_MAX_FILE_BYTES)",
    ),
    "features-pool": Size(
        flow="features",
        vcpu=2,
        memory_mib=8192,
        why="30-day rolling windows over the validated partitions, DuckDB point-in-time "
        "reads, Feast materialisation to Redis; 2.7 GB at 40k customers",
    ),
    "training-pool": Size(
        flow="train",
        vcpu=4,
        memory_mib=16384,
        why="the point-in-time training set of every snapshot day, gradient boosting "
        "(multi-threaded) + calibration, then the gate re-scores champion and challenger "
        "and bootstraps; 4.4 GB at 40k customers",
    ),
    "scoring-pool": Size(
        flow="score",
        vcpu=1,
        memory_mib=2048,
        why="one day of active customers through the champion; 0.9 GB at 40k customers",
    ),
    "monitoring-pool": Size(
        flow="drift",
        vcpu=0.5,
        memory_mib=4096,
        why="binned statistics of the newest window against the stored reference, mostly "
        "waiting on S3 and MLflow; 1.1 GB at 40k customers and growing with them",
    ),
}

#: Ingest memory model (measured): a baseline for the interpreter and libraries, plus this many
#: bytes of memory per byte of the file being validated (a 92 MB CSV of 1M rows peaked at 1.6 GB).
INGEST_BASELINE_MIB = 512
INGEST_MEMORY_PER_FILE_BYTE = 12

#: Site-specific values: the examples below name nothing that exists; replace them.
SITE: dict[str, Any] = {
    "image": "driftloop:latest",
    "env": {
        "DRIFTLOOP_DATA_ROOT": "s3://driftloop-lake/lake",
        "DRIFTLOOP_AWS_REGION": "us-east-1",
        "DRIFTLOOP_STATE_DIR": "/mnt/driftloop-state",
        "DRIFTLOOP_MLFLOW_TRACKING_URI": "http://mlflow.driftloop.internal:5000",
        "DRIFTLOOP_MLFLOW_ARTIFACT_ROOT": "s3://driftloop-lake/mlartifacts",
        "DRIFTLOOP_ONLINE_STORE": "redis",
        "DRIFTLOOP_REDIS_URL": "redis.driftloop.internal:6379,db=0",
    },
    # Per pool, on top of env (a pool's own settings).
    "pool_env": {
        # Larger landed files are rejected whole instead of read: with the ingest memory model
        # below, a 256 MiB file peaks near 3.5 GiB, under half of the pool's 8 GiB.
        "ingest-pool": {"DRIFTLOOP_MAX_FILE_BYTES": str(256 * 1024**2)},
    },
    "state_mount_path": "/mnt/driftloop-state",
    "state_volume_name": "driftloop-state",
    # ECS: the EFS file system that holds DRIFTLOOP_STATE_DIR (mounted on every task).
    "ecs_state_file_system_id": "fs-0123456789abcdef0",
    # Kubernetes: a ReadWriteMany PersistentVolumeClaim in the namespace below.
    "k8s_state_claim": "driftloop-state",
    "k8s_namespace": "driftloop",
}

#: Valid Fargate task sizes (CPU units → memory MiB range and step), from the ECS task
#: definition reference. The ECS templates default to launch type FARGATE.
FARGATE_MEMORY: dict[int, tuple[int, int, int]] = {
    256: (512, 2048, 512),
    512: (1024, 4096, 1024),
    1024: (2048, 8192, 1024),
    2048: (4096, 16384, 1024),
    4096: (8192, 30720, 1024),
    8192: (16384, 61440, 4096),
    16384: (32768, 122880, 8192),
}


def ecs_cpu_units(size: Size) -> int:
    """ECS CPU units (1024 per vCPU)."""
    return round(size.vcpu * 1024)


def check_fargate(pool: str, size: Size) -> None:
    """Raise ValueError unless the size is one Fargate can run."""
    cpu = ecs_cpu_units(size)
    if cpu not in FARGATE_MEMORY:
        raise ValueError(f"{pool}: {size.vcpu} vCPU is not a Fargate size")
    low, high, step = FARGATE_MEMORY[cpu]
    mem = size.memory_mib
    if not (low <= mem <= high and (mem - low) % step == 0):
        raise ValueError(
            f"{pool}: {mem} MiB with {size.vcpu} vCPU is not a Fargate size "
            f"({low}..{high} MiB in steps of {step})"
        )


def k8s_cpu(size: Size) -> str:
    """A Kubernetes CPU quantity: '4', '500m'."""
    millis = round(size.vcpu * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def k8s_memory(size: Size) -> str:
    """A Kubernetes memory quantity: '16Gi', '1536Mi'."""
    mib = size.memory_mib
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def pool_env(pool: str) -> dict[str, str]:
    return {**SITE["env"], **SITE["pool_env"].get(pool, {})}


def load_default(kind: str, deploy_dir: Path = DEPLOY_DIR) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((deploy_dir / kind / "_default.json").read_text("utf-8"))
    return data


def _set_default(variables: dict[str, Any], name: str, value: Any, description: str) -> None:
    prop = variables["properties"][name]
    prop["default"] = value
    prop["description"] = f"{prop.get('description', '').rstrip()} driftloop: {description}".strip()


def render_ecs(default: dict[str, Any], pool: str, size: Size) -> dict[str, Any]:
    """The ECS template of one pool, from the ECS worker's default template."""
    check_fargate(pool, size)
    tpl = copy.deepcopy(default)
    variables = tpl["variables"]
    _set_default(variables, "cpu", ecs_cpu_units(size), f"{size.vcpu:g} vCPU: {size.why}.")
    _set_default(variables, "memory", size.memory_mib, f"{size.memory_mib / 1024:g} GiB.")
    _set_default(variables, "image", SITE["image"], "the image built from deploy/Dockerfile.")
    _set_default(
        variables, "env", pool_env(pool), "production settings (driftloop_config/settings.py)."
    )
    variables["properties"]["state_file_system_id"] = {
        "title": "State file system ID",
        "type": "string",
        "default": SITE["ecs_state_file_system_id"],
        "description": "driftloop: the EFS file system mounted at "
        f"{SITE['state_mount_path']} (DRIFTLOOP_STATE_DIR): Feast registry and promotion lock, "
        "shared by every flow run.",
    }
    name = SITE["state_volume_name"]
    task_definition = tpl["job_configuration"]["task_definition"]
    task_definition["volumes"] = [
        {
            "name": name,
            "efsVolumeConfiguration": {
                "fileSystemId": "{{ state_file_system_id }}",
                "transitEncryption": "ENABLED",
            },
        }
    ]
    task_definition["containerDefinitions"][0]["mountPoints"] = [
        {"sourceVolume": name, "containerPath": SITE["state_mount_path"], "readOnly": False}
    ]
    variables["description"] = f"driftloop {pool}: runs the {size.flow} flow on ECS."
    return tpl


def render_kubernetes(default: dict[str, Any], pool: str, size: Size) -> dict[str, Any]:
    """The Kubernetes template of one pool, from the Kubernetes worker's default template."""
    tpl = copy.deepcopy(default)
    variables = tpl["variables"]
    cpu, memory = k8s_cpu(size), k8s_memory(size)
    _set_default(variables, "cpu_request", cpu, f"{size.vcpu:g} vCPU: {size.why}.")
    _set_default(variables, "memory_request", memory, f"{memory}.")
    # No CPU limit (a limit throttles a busy run for nothing when the node has spare cycles);
    # memory limit = request, so a run that outgrows its size fails visibly (OOMKilled).
    _set_default(variables, "memory_limit", memory, "equal to the request.")
    _set_default(variables, "image", SITE["image"], "the image built from deploy/Dockerfile.")
    _set_default(
        variables,
        "image_pull_policy",
        "Always",
        "a moving tag such as :latest is re-pulled; pin a digest or git-sha tag per deployment.",
    )
    _set_default(variables, "namespace", SITE["k8s_namespace"], "one namespace for driftloop.")
    _set_default(
        variables, "env", pool_env(pool), "production settings (driftloop_config/settings.py)."
    )
    variables["properties"]["state_volume_claim"] = {
        "title": "State volume claim",
        "type": "string",
        "default": SITE["k8s_state_claim"],
        "description": "driftloop: a ReadWriteMany PersistentVolumeClaim mounted at "
        f"{SITE['state_mount_path']} (DRIFTLOOP_STATE_DIR): Feast registry and promotion lock, "
        "shared by every flow run.",
    }
    name = SITE["state_volume_name"]
    pod = tpl["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    pod["volumes"] = [
        {"name": name, "persistentVolumeClaim": {"claimName": "{{ state_volume_claim }}"}}
    ]
    pod["containers"][0]["volumeMounts"] = [{"name": name, "mountPath": SITE["state_mount_path"]}]
    variables["description"] = f"driftloop {pool}: runs the {size.flow} flow as Kubernetes jobs."
    return tpl


RENDERERS = {"ecs": render_ecs, "kubernetes": render_kubernetes}


def render_all(deploy_dir: Path = DEPLOY_DIR) -> dict[Path, str]:
    """``{relative path: file text}`` of every per-pool template."""
    out: dict[Path, str] = {}
    for kind in TYPES:
        default = load_default(kind, deploy_dir)
        for pool, size in SIZES.items():
            tpl = RENDERERS[kind](default, pool, size)
            out[Path(kind) / f"{pool}.json"] = json.dumps(tpl, indent=2) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    parser.add_argument(
        "--out", type=Path, default=DEPLOY_DIR, help="write under this folder (default: deploy/)"
    )
    args = parser.parse_args(argv)
    stale = []
    for rel, text in render_all().items():
        path = args.out / rel
        current = path.read_text("utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(str(rel))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
    verb = "differ" if args.check else "written"
    print(f"{len(stale)} template(s) {verb}" + (": " + ", ".join(stale) if stale else ""))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
