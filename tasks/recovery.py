"""Recovery: finishing what a stopped train run left unfinished.

:func:`recover_interrupted` (called by the next train run, holding
:func:`tasks.training.training_lock`) marks orphaned MLflow runs KILLED, removes half-written
files, judges versions registered but never gated, and completes the report, loop-state record
and decision event of decisions that were never announced; :func:`mark_announced` records an
emitted event on the version.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from tasks.artifacts import Artifact, Markdown, Table
from tasks.training import NotEnoughData, _specs, build_training_set, decision_event, promotion_gate

if TYPE_CHECKING:
    from feast import FeatureStore
    from mlflow import MlflowClient

    from driftloop_config.settings import Settings
    from driftloop_config.usecase import UseCase
    from tasks.gate import Decision
    from tasks.storage import Lake

# ---- recovery after an interrupted run ----------------------------------------------------------
#
# A train run is: MLflow run → registered version (alias ``challenger``) → gate (decision tags,
# ``champion`` alias) → promotion report → loop state → event → ``driftloop.announced`` tag. A
# process stopped anywhere in between (kill -9, a lost machine) leaves that sequence unfinished;
# the next train run finishes it first, holding the same per-model lock every train run holds.


@dataclass
class Recovery:
    """What :func:`recover_interrupted` found and did."""

    killed_runs: list[str] = field(default_factory=list)  # MLflow runs marked KILLED
    judged: dict[str, str] = field(default_factory=dict)  # version -> promoted / rejected
    completed: list[str] = field(default_factory=list)  # versions given their report/event
    removed: list[str] = field(default_factory=list)  # half-written files removed
    reports: dict[str, str] = field(default_factory=dict)  # version -> promotion report key
    #: (version, event) to emit, then mark with :func:`mark_announced`.
    announcements: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when the previous runs left nothing unfinished."""
        return not (self.killed_runs or self.judged or self.completed or self.removed)

    def rows(self) -> list[dict[str, str]]:
        """One row per action, for the flow's artifact."""
        rows = [
            {"what": "MLflow run left RUNNING", "id": r, "action": "marked KILLED"}
            for r in self.killed_runs
        ]
        rows += [
            {"what": "version registered but never judged", "id": f"v{v}", "action": verdict}
            for v, verdict in self.judged.items()
        ]
        rows += [
            {"what": "decision without report/event", "id": f"v{v}", "action": "completed"}
            for v in self.completed
        ]
        rows += [{"what": "half-written file", "id": k, "action": "removed"} for k in self.removed]
        return rows

    def artifact(self) -> Artifact:
        """The train run's recovery artifact: what it finished, or that nothing was left."""
        if self.clean:
            return Markdown(
                "recovery", "**Recovery:** the previous train runs left nothing unfinished."
            )
        return Table(
            "recovery",
            self.rows(),
            description="Left unfinished by a stopped train run, finished by this one",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "killed_runs": list(self.killed_runs),
            "judged": dict(self.judged),
            "completed": list(self.completed),
            "removed": list(self.removed),
            "reports": dict(self.reports),
            "announced": [v for v, _ in self.announcements],
        }


def promotion_report_key(name: str, version: str) -> str:
    return f"promotion/{name}-v{version}.html"


def mark_announced(tracking_uri: str, name: str, version: str) -> None:
    """Record that the decision event of ``version`` was emitted."""
    from tasks import registry

    client = registry.client_for(tracking_uri)
    client.set_model_version_tag(name, str(version), registry.ANNOUNCED_TAG, "true")


def _run_params(client: MlflowClient, run_id: str | None) -> dict[str, str]:
    if not run_id:
        return {}
    return dict(client.get_run(run_id).data.params)


def _record_in_policy(
    lake: Lake,
    usecase: UseCase,
    params: dict[str, str],
    *,
    promoted: bool,
    version: str | None = None,
    reason: str = "",
) -> None:
    """What the interrupted run would have written to the loop state after its decision (the
    attempt of its as_of, a back-off after a rejection, the decision in the log)."""
    from tasks import policy
    from tasks.loop_state import read_state, write_state
    from tasks.training_set import last_snapshot_day

    target, _, _ = _specs(usecase)
    if not params.get("as_of"):
        return
    since = params.get("since")
    as_of = date.fromisoformat(params["as_of"])
    state = policy.record_training(
        read_state(lake.ledger),
        trained_through=last_snapshot_day(
            as_of,
            horizon_days=target.horizon_days,
            label_delay_days=target.label_delay_days,
        ),
        promoted=promoted,
        since=date.fromisoformat(since) if since else None,
        as_of=as_of,
        version=version,
        trigger=params.get("trigger") or "manual",
        reason=f"recorded by the next train run: {reason}" if reason else "",
        retrain=usecase.retrain,
    )
    write_state(lake.ledger, state)


def _reject_unjudgeable(
    settings: Settings, usecase: UseCase, version: str, why: str
) -> tuple[Decision, str | None]:
    """Record a rejection for a version the gate can no longer measure."""
    from tasks import gate as gating
    from tasks import registry

    _, model_spec, _ = _specs(usecase)
    name = model_spec.registered_name
    client = registry.client_for(settings.tracking_uri)
    lock = registry.promotion_lock_path(settings.state_path, name)
    while True:
        current = registry.champion_version(client, name)
        decision = gating.Decision(
            promote=False,
            reason=f"rejected: its run stopped before the gate, and {why}",
            metric=model_spec.metric,
            challenger_value=math.nan,
            champion_value=None,
            delta_ci=None,
            challenger_ece=math.nan,
            champion_ece=None,
            sanity={},
            samples=0,
            compared_with=current,
        )
        previous = registry.promote(client, name, version, decision, lock_path=lock)
        if previous != registry.STALE:
            return decision, previous


def _judge_leftover(
    settings: Settings,
    usecase: UseCase,
    lake: Lake,
    version: str,
    params: dict[str, str],
    store: Callable[[], FeatureStore],
) -> tuple[Decision, str | None, str]:
    """The gate for a version whose run stopped before it, on the holdout of the training set
    the version was trained on (rebuilt from its ``as_of`` and ``since``)."""
    from tasks import gate as gating

    _, model_spec, _ = _specs(usecase)
    name = model_spec.registered_name
    if not params.get("as_of"):
        decision, previous = _reject_unjudgeable(
            settings, usecase, version, "its training run records no as_of to rebuild the holdout"
        )
    else:
        since = params.get("since")
        try:
            data = build_training_set(
                lake,
                usecase,
                store(),
                as_of=date.fromisoformat(params["as_of"]),
                since=date.fromisoformat(since) if since else None,
            )
        except NotEnoughData as exc:
            decision, previous = _reject_unjudgeable(
                settings, usecase, version, f"its holdout cannot be rebuilt: {exc}"
            )
        else:
            return promotion_gate(settings, usecase, data, version, lake)
    key = promotion_report_key(name, version)
    html = gating.decision_report(decision, name=name, version=version)
    lake.reports.write_bytes(key, html.encode("utf-8"))
    return decision, previous, key


def _complete_report(
    lake: Lake, name: str, version: str, decision: Decision, decided_at: str
) -> str:
    """The promotion report of a decision whose run stopped before writing it, rebuilt from
    the decision recorded on the version (evidence and checks; no holdout curves)."""
    from tasks import gate as gating

    key = promotion_report_key(name, version)
    if not lake.reports.exists(key):
        html = gating.decision_report(
            decision,
            name=name,
            version=version,
            details={
                "decided at": decided_at or "(not recorded)",
                "report": "rebuilt from the decision recorded on the version: the run that "
                "made it stopped before writing this report",
            },
        )
        lake.reports.write_bytes(key, html.encode("utf-8"))
    return key


def recover_interrupted(
    settings: Settings,
    usecase: UseCase,
    lake: Lake,
    *,
    store: Callable[[], FeatureStore] | None = None,
) -> Recovery:
    """Finish what stopped train runs of the use case's model left unfinished. Call it holding
    :func:`tasks.training.training_lock`, before training.

    * MLflow runs of the model's experiment still RUNNING are marked KILLED (tag
      ``driftloop.killed_reason``).
    * Half-written report and loop-state files are removed.
    * Every version without a decision (registered, then stopped before the gate) is judged by
      the same gate on the holdout of the data it was trained on — the decision tags, the
      report and the loop state are recorded as a run that had not stopped would have. A
      version whose holdout cannot be rebuilt any more is recorded as rejected, saying why.
    * Every decided version whose event was not announced (no ``driftloop.announced`` tag)
      and that is the promoted champion or lacks its report gets its report (rebuilt from the
      recorded decision) and loop-state record.

    Returns what was done; ``announcements`` holds the decision events still to be emitted
    (emit each, then :func:`mark_announced`). ``store`` builds the Feast store, only when a
    holdout has to be rebuilt.
    """
    from tasks import registry

    _, model_spec, _ = _specs(usecase)
    name = model_spec.registered_name
    client = registry.client_for(settings.tracking_uri)
    out = Recovery()
    out.killed_runs = registry.kill_orphaned_runs(
        client,
        name,
        reason="the train run that owned it stopped before finishing it; marked by the next "
        "train run",
    )
    from tasks.storage import sweep_debris

    out.removed = sweep_debris(lake.root)  # temporary files of writers that are gone
    if store is None:
        from tasks.feature_store import feature_store

        def store() -> FeatureStore:
            return feature_store(settings)

    for mv in registry.versions(client, name):
        version = str(mv.version)
        decision = registry.decision_from_tags(mv.tags)
        if decision is None:
            params = _run_params(client, mv.run_id)
            decision, previous, key = _judge_leftover(
                settings, usecase, lake, version, params, store
            )
            out.judged[version] = "promoted" if decision.promote else "rejected"
        elif mv.tags.get(registry.ANNOUNCED_TAG) == "true":
            continue
        else:
            key = promotion_report_key(name, version)
            champion = registry.champion_version(client, name)
            if not (decision.promote and champion == version) and lake.reports.exists(key):
                continue  # an old decision, reported; its event is long past
            params = _run_params(client, mv.run_id)
            key = _complete_report(
                lake, name, version, decision, mv.tags.get("driftloop.decided_at", "")
            )
            previous = decision.compared_with
            out.completed.append(version)
        _record_in_policy(
            lake,
            usecase,
            params,
            promoted=decision.promote,
            version=version,
            reason=decision.reason,
        )
        out.reports[version] = key
        out.announcements.append(
            (version, decision_event(name, version, decision, previous, settings.tracking_uri))
        )
    return out
