"""The ``driftloop`` command line.

Exit codes: 0 done; 1 the local stack could not be started or stopped; 2 a bad setting, use-case
file or option, or a data root that does not exist (the message names the variable); 3 nothing to
train on yet (no validated data, or not enough labelled snapshots). Errors go to stderr as one
message, shown whole, without a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from driftloop.settings import Settings

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="driftloop: data → model → drift → retrain."
)
console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

EXIT_STACK = 1  # the local stack could not be started or stopped
EXIT_USAGE = 2  # bad settings, use case, options; the data root does not exist
EXIT_NOT_READY = 3  # nothing to train on yet


def fail(message: str, code: int = EXIT_USAGE, *, style: str = "red") -> NoReturn:
    """Print ``message`` whole and literally (no markup: brackets in patterns stay) and exit."""
    err_console.print(Text(message, style=style), soft_wrap=True)
    raise typer.Exit(code)


def _settings(*, usecase: bool = True, lake: bool = False) -> Settings:
    """The settings, or exit 2 naming what is wrong. ``usecase``: the use-case file must load;
    ``lake``: a local data root must exist (commands that read the lake)."""
    from driftloop.redact import redact
    from driftloop.settings import (
        SettingsError,
        export_artifact_endpoint,
        load_settings,
        quiet_telemetry,
    )

    quiet_telemetry()
    try:
        settings = load_settings()
    except SettingsError as exc:
        fail(str(exc))
    if usecase:
        from driftloop.usecase import UseCaseError, load_usecase

        try:
            load_usecase(settings.usecase)
        except (UseCaseError, ValueError, OSError) as exc:  # also: not UTF-8, unreadable
            fail(
                redact(
                    f"invalid driftloop settings:\n  DRIFTLOOP_USECASE={settings.usecase}: {exc}"
                )
            )
    if lake and settings.is_local and not settings.local_root.is_dir():
        fail(
            f"invalid driftloop settings:\n  DRIFTLOOP_DATA_ROOT={settings.data_root}: the folder "
            f"{settings.local_root} does not exist (point DRIFTLOOP_DATA_ROOT at the lake, or "
            "create it: `driftloop simulate` writes a simulated one)"
        )
    export_artifact_endpoint(settings)  # also reaches the processes `driftloop up` starts
    return settings


class _DropTraceback(logging.Filter):
    """Keep Prefect's log line about an expected failure but not its traceback: the CLI reports
    the cause itself, in one line."""

    def __init__(self, expected: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.expected):
            record.exc_info = None
            record.exc_text = None
        return True


@contextmanager
def expected_failures(*expected: type[BaseException]) -> Iterator[None]:
    """Run a flow in-process; exceptions of the ``expected`` types are logged without traceback."""
    loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs")]
    drop = _DropTraceback(expected)
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def _parse_date(value: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


@app.command()
def simulate(
    days: Annotated[int, typer.Option(min=1, help="Number of days to simulate.")] = 30,
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")] = "2026-01-01",
    customers: Annotated[int, typer.Option(min=10, help="Size of the customer base.")] = 2000,
    drift_day: Annotated[
        int | None, typer.Option(help="Day (0-based) of the reality change.")
    ] = None,
    defect_rate: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share of rows with defects.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed → same files).")] = 7,
    label_delay: Annotated[int, typer.Option(min=1, help="Days until a churn becomes known.")] = 14,
    truth: Annotated[
        Path | None, typer.Option(help="Write the injected defects as JSONL here.")
    ] = None,
) -> None:
    """Write a simulated telco's daily files into $DRIFTLOOP_DATA_ROOT/landing/."""
    from rich.progress import Progress

    from tasks.simulate import simulate as run_simulation
    from tasks.simulate import write_truth
    from tasks.storage import Lake

    settings = _settings(usecase=False)
    lake = Lake.from_settings(settings)
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("simulating", total=days)
        try:
            result = run_simulation(
                lake.landing,
                days=days,
                start=_parse_date(start),
                customers=customers,
                drift_day=drift_day,
                defect_rate=defect_rate,
                seed=seed,
                label_delay_days=label_delay,
                progress=lambda n: progress.update(bar, completed=n),
            )
        except ValueError as exc:
            progress.stop()
            fail(str(exc))
    if truth is not None:
        write_truth(result, truth)
    console.print(
        f"wrote {len(result.objects)} files ({result.rows_written:,} rows) to {lake.landing.uri}; "
        f"{len(result.truth)} defects injected" + (f" (truth: {truth})" if truth else ""),
        markup=False,
    )


@app.command()
def ingest(
    key: Annotated[
        list[str] | None, typer.Option(help="Only this landing key (repeatable).")
    ] = None,
) -> None:
    """Validate newly landed objects: accepted rows to validated/, the rest to quarantine/."""
    settings = _settings(lake=True)
    from flows.ingest import IngestParams, ingest_flow

    summary = ingest_flow(IngestParams(objects=key or None))
    print_ingest_summary(summary)
    console.print(f"reports: {settings.zone('reports')}/validation/index.html", markup=False)


@app.command()
def features(
    day: Annotated[
        list[str] | None, typer.Option("--date", help="Only this day (repeatable).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when inputs are unchanged.")] = False,
) -> None:
    """Build features for newly validated days, apply the Feast repo, materialise online."""
    _settings(lake=True)
    from flows.features import FeaturesParams, features_flow

    dates = [_parse_date(d) for d in day] if day else None
    summary = features_flow(FeaturesParams(dates=dates, force=force))
    console.print(summary["totals"])


@app.command()
def train(
    as_of: Annotated[
        str | None, typer.Option(help="Train with what was known on this day.")
    ] = None,
    seed: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """Train a challenger and run the promotion gate (exit 3: nothing to train on yet)."""
    _settings(lake=True)
    from flows.train import TrainParams, train_flow
    from tasks.training import NotEnoughData

    params = TrainParams(as_of=_parse_date(as_of) if as_of else None, seed=seed)
    try:
        with expected_failures(NotEnoughData):
            out = train_flow(params)
    except NotEnoughData as exc:
        fail(f"not enough data to train yet: {exc}", EXIT_NOT_READY, style="yellow")
    if not out.get("trained"):
        hint = (
            " (run `driftloop ingest` first)"
            if out.get("reason") == "nothing validated yet"
            else ""
        )
        fail(f"nothing trained: {out.get('reason')}{hint}", EXIT_NOT_READY, style="yellow")
    print_training_summary(out)


@app.command()
def promote(
    rollback: Annotated[
        bool, typer.Option(help="Move champion back to the previous champion.")
    ] = False,
) -> None:
    """Champion management (``--rollback``)."""
    settings = _settings()
    from driftloop.usecase import load_usecase
    from tasks import registry

    if not rollback:
        raise typer.BadParameter(
            "nothing to do: pass --rollback (promotion runs in `driftloop train`)"
        )
    spec = load_usecase(settings.usecase).model
    assert spec is not None
    lock = registry.promotion_lock_path(settings.state_path, spec.registered_name)
    try:
        restored = registry.rollback(
            registry.client_for(settings.tracking_uri), spec.registered_name, lock_path=lock
        )
    except registry.RegistryError as exc:
        fail(str(exc))
    console.print(f"champion of {spec.registered_name} is now v{restored}", markup=False)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8765,
    refresh_seconds: Annotated[
        float, typer.Option(min=0.0, help="Re-read the champion alias at most this often.")
    ] = 5.0,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Larger request bodies are refused with 413.")
    ] = 1024 * 1024,
) -> None:
    """Serve the champion's predictions over HTTP (POST /predict, /predict/batch; GET /health)."""
    import uvicorn

    from driftloop.serve import create_app

    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    console.print(f"docs: http://{host}:{port}/docs", markup=False)
    uvicorn.run(
        create_app(settings, refresh_seconds=refresh_seconds, max_body_bytes=max_body_bytes),
        host=host,
        port=port,
    )


@app.command()
def score(
    day: Annotated[
        str | None, typer.Option(help="Day to score (YYYY-MM-DD); default newest.")
    ] = None,
) -> None:
    """Batch-score the active customers with the champion (predictions/ zone)."""
    _settings(lake=True)
    from flows.score import ScoreParams, score_flow

    out = score_flow(ScoreParams(day=_parse_date(day) if day else None))
    if not out.get("scored"):
        console.print(f"nothing scored: {out.get('reason')}", markup=False)
        return
    console.print(
        f"{out['scored']:,} predictions for {out['day']} by v{out['model_version']}", markup=False
    )


@app.command()
def drift(
    day: Annotated[
        str | None, typer.Option(help="Last day of the window (YYYY-MM-DD); default newest.")
    ] = None,
) -> None:
    """Check the newest window for drift against the champion's training reference."""
    _settings(lake=True)
    from flows.drift import DriftParams, drift_flow

    out = drift_flow(DriftParams(day=_parse_date(day) if day else None))
    if "detected" in out and "window" not in out:
        console.print(f"no check: {out.get('reason')}", markup=False)
        return
    verdict = "[red]drift detected[/red]" if out["detected"] else "[green]no drift[/green]"
    detail = f" in {' → '.join(out['window'])}: drifted {out['drifted'] or 'none'}; "
    console.print(verdict + escape(detail + f"report {out['report']}"))


@app.command()
def watch(
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between scans.")] = 2.0,
    settle: Annotated[
        float, typer.Option(min=0.0, help="Announce an object once unchanged this long.")
    ] = 2.0,
    once: Annotated[bool, typer.Option(help="Scan once and exit.")] = False,
) -> None:
    """Announce newly landed objects as driftloop.data.landed events (needs a Prefect API)."""
    import signal
    import time

    settings = _settings()
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from driftloop.usecase import load_usecase
    from tasks.ingest import open_ledger
    from tasks.storage import Lake
    from tasks.watch import scan_once

    lake = Lake.from_settings(settings)
    usecase = load_usecase(settings.usecase)
    stop = False

    def _stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    def emit(event: dict[str, Any]) -> None:
        emit_event(**event)
        console.print(
            f"landed: {event['payload']['key']} ({event['payload']['etag']})", markup=False
        )

    console.print(f"watching {lake.landing.uri} every {interval:g}s", markup=False)
    while not stop:
        found = scan_once(
            lake.landing,
            lake.ledger,
            open_ledger(lake.ledger),
            usecase,
            emit,
            settle_seconds=settle,
        )
        if found.events:
            EventsWorker.drain_all()
        if once:
            if found.waiting:
                console.print(f"{found.waiting} objects still changing; not announced yet")
            break
        deadline = time.monotonic() + interval
        while not stop and time.monotonic() < deadline:
            time.sleep(0.1)
    EventsWorker.drain_all()


@app.command()
def up(
    prefect_port: Annotated[
        int, typer.Option(help="Prefect server port (another if busy).")
    ] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow UI port (another if busy).")] = 5000,
) -> None:
    """Start the local stack: Prefect server, MLflow UI, pools, deployments, workers, watcher."""
    settings = _settings()
    from driftloop.redact import redact
    from driftloop.stack import StackError, describe
    from driftloop.stack import up as start

    try:
        stack = start(settings, prefect_port=prefect_port, mlflow_port=mlflow_port)
    except StackError as exc:
        fail(redact(str(exc)), EXIT_STACK)
    info = describe(stack)
    lines = [
        f"Prefect UI   {info['prefect_ui']}",
        f"Prefect API  {info['prefect_api']}  (export PREFECT_API_URL to use the CLI)",
        f"MLflow UI    {info['mlflow_ui']}",
        f"work pools   {', '.join(info['pools'])} (one worker each)",
        f"landing      {settings.zone('landing')} (watched; new files start ingest)",
    ]
    if info["crashed_runs"]:
        lines.append(f"crashed      {info['crashed_runs']} runs left running by a previous stack")
    lines.append("stop with: make down")
    for line in lines:
        console.print(line, markup=False)


@app.command()
def down() -> None:
    """Stop exactly what `driftloop up` started (its runs still in flight are marked crashed)."""
    settings = _settings(usecase=False)
    from driftloop.redact import redact
    from driftloop.stack import StackError
    from driftloop.stack import down as stop

    crashed: list[str] = []
    try:
        stopped = stop(settings, crashed=crashed)
    except StackError as exc:
        fail(redact(str(exc)), EXIT_STACK)
    if crashed:
        console.print(f"marked {len(crashed)} runs still in flight as crashed", markup=False)
    console.print(
        f"stopped {', '.join(stopped)}" if stopped else "nothing was running", markup=False
    )


@app.command()
def status() -> None:
    """The champion, the last flow runs, the last drift check and what is pending."""
    settings = _settings()
    from driftloop.status import collect

    info = collect(settings)
    lines = [f"champion: {info['champion']}"]
    lines += [f"{name}: {value}" for name, value in info["backends"].items() if value]
    if info["stack"]:
        lines.append(f"stack: {info['stack']}")
    drift = info["last_drift"]
    lines.append(
        "last drift check: "
        + (
            f"{'DRIFT' if drift['detected'] else 'no drift'} in {' → '.join(drift['window'])} "
            f"(v{drift['model_version']}; drifted {drift['drifted'] or 'none'})"
            if drift
            else "none yet"
        )
    )
    lines.append(f"pending landed objects: {len(info['pending_objects'])}")
    lines += [f"  {key}" for key in info["pending_objects"][:10]]
    if info["runs"] is None:
        lines.append(f"flow runs: no Prefect API reachable ({info['api_error']})")
    for line in lines:
        console.print(line, markup=False)
    if info["runs"] is None:
        return
    table = Table(title="last flow runs")
    for col in ("flow", "deployment", "state", "started", "name"):
        table.add_column(col)
    for r in info["runs"]:
        cells = (r["flow"], r["deployment"] or "-", r["state"], r["start"] or "-", r["name"])
        table.add_row(*(Text(str(c)) for c in cells))
    console.print(table)
    console.print(f"pending flow runs (scheduled/late/pending): {info['pending_runs']}")


def print_training_summary(out: dict[str, Any]) -> None:
    table = Table(title=escape(f"challenger v{out['version']} (as of {out['as_of']})"))
    for col in ("split", "rows", "positives", "roc_auc", "pr_auc", "brier", "ece"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split, m in out["metrics"].items():
        table.add_row(
            split,
            str(m["n"]),
            str(m["positives"]),
            *(f"{m[k]:.4f}" for k in ("roc_auc", "pr_auc", "brier", "ece")),
        )
    console.print(table)
    verdict = "[green]promoted[/green]" if out["promoted"] else "[yellow]not promoted[/yellow]"
    console.print(f"gate: {verdict} — " + escape(str(out["decision"]["reason"])))


def print_ingest_summary(summary: dict[str, Any], *, only_problems: bool = False) -> None:
    rows = summary["objects"]
    if only_problems:
        rows = [r for r in rows if r["status"] == "rejected"]
    if not summary["objects"]:
        console.print("nothing new landed: the ledger already holds every object")
        return
    table = Table(title="rejected files" if only_problems else "ingest")
    table.add_column("object", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for col in ("rows", "validated", "quarantined"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("reason", overflow="fold", ratio=1)
    colour = {"validated": "green", "partial": "yellow", "rejected": "red"}
    for r in rows:
        table.add_row(
            Text(r["object"]),
            Text(r["status"], style=colour[r["status"]]),
            str(r["rows"]),
            str(r["validated"]),
            str(r["quarantined"]),
            Text(r["reason"]),  # whole (the column folds long reasons), brackets kept
        )
    console.print(table)
    t = summary["totals"]
    console.print(
        f"accepted {t['accepted']} objects ({t['rows_validated']:,} rows validated, "
        f"{t['rows_quarantined']:,} quarantined), rejected {t['rejected']} files"
    )


if __name__ == "__main__":
    app()
