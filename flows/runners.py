"""The task runner that runs a flow's partition-parallel work, chosen from the settings.

Flows keep Prefect's default runner for their own steps; only the pure per-partition work
(validating one landed object, building one range of feature days, scoring one group of drift
features) goes to the runner returned here, entered for the span of that work::

    with partition_runner(settings) as runner:
        futures = [runner.submit(check_object, {"obj": o, ...}) for o in pending]
        for future in futures:
            record(future.result())  # single-writer steps stay in the flow's process

The runner is picked when the flow *runs* (``DRIFTLOOP_TASK_RUNNER`` and friends are read by
``load_settings()`` in the flow body), so the same deployment can run on threads or on Dask.

* ``thread`` (default): Prefect's :class:`~prefect.task_runners.ThreadPoolTaskRunner` in the
  flow's process.
* ``dask`` with ``dask_address``: :class:`prefect_dask.DaskTaskRunner` connected to that
  scheduler (the workers must run the same image/code and reach the lake and the Prefect API).
* ``dask`` without an address: a temporary :class:`distributed.LocalCluster` of
  ``dask_workers`` single-threaded worker processes, bound to 127.0.0.1 with no dashboard,
  started for the block and closed after it.

Dask workers are other processes: everything a task needs travels as its (pickled) arguments.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner
    from prefect.tasks import Task

    from driftloop_config.settings import Settings

LOOPBACK = "127.0.0.1"
R = TypeVar("R")


def local_cluster_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments of the temporary ``distributed.LocalCluster`` (no network beyond loopback)."""
    return {
        "n_workers": settings.dask_workers,
        "processes": True,
        "threads_per_worker": 1,
        "host": LOOPBACK,
        "dashboard_address": None,  # no dashboard
        "worker_dashboard_address": None,
        # the scheduler's plain HTTP endpoints (health, metrics) on a free loopback port
        "scheduler_kwargs": {"dashboard_address": f"{LOOPBACK}:0"},
    }


def task_runner(settings: Settings) -> TaskRunner[Any]:
    """A fresh, not yet started task runner for the settings (see the module docstring)."""
    if settings.task_runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(settings)
    )


def partitions(settings: Settings) -> int:
    """How many pieces divisible work (feature days, drift features) is cut into.

    One per Dask worker (``dask_workers``, also with an existing cluster). One with threads:
    the pieces would share one interpreter, and each extra range of feature days re-reads its
    30-day lookback, so cutting would cost more than it brings.
    """
    return settings.dask_workers if settings.task_runner == "dask" else 1


@contextmanager
def partition_runner(settings: Settings) -> Iterator[TaskRunner[Any]]:
    """The task runner of :func:`task_runner`, started for the block and shut down after it
    (a temporary local cluster lives exactly as long as the block)."""
    with task_runner(settings) as runner:
        yield runner


def run_partitions(
    settings: Settings, task: Task[..., R], calls: Sequence[Mapping[str, Any]]
) -> Iterator[R]:
    """Run ``task`` once per parameter set on the settings' runner; yield the results in the
    order of ``calls``.

    All calls are submitted at once; each result is yielded as soon as it and those before it
    are done, so the caller can write one partition while later ones are still computed. The
    runner (and a temporary Dask cluster) is only started when there is work, and is shut down
    once the results are consumed. A failed call raises its exception here.
    """
    if not calls:
        return
    with partition_runner(settings) as runner:
        futures = [runner.submit(task, dict(call)) for call in calls]
        for future in futures:
            yield future.result()
