"""The ``driftloop`` command line.

Exit codes: 0 done; 1 the local stack or the local Prefect API server could not be started or
stopped; 2 a bad setting, use-case
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
    from driftloop_config.settings import Settings
    from driftloop_config.usecase import UseCase
    from tasks.drain import IngestSummary
    from tasks.policy import TrainOutcome
    from tasks.reconcile import Reconciled
    from tasks.storage import Storage

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="driftloop: data → model → drift → retrain."
)
console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

EXIT_STACK = 1  # the local stack or the local Prefect API server could not be started/stopped
EXIT_USAGE = 2  # bad settings, use case, options; the data root does not exist
EXIT_NOT_READY = 3  # nothing to train on yet


def fail(message: str, code: int = EXIT_USAGE, *, style: str = "red") -> NoReturn:
    """Print ``message`` whole and literally (no markup: brackets in patterns stay) and exit."""
    err_console.print(Text(message, style=style), soft_wrap=True)
    raise typer.Exit(code)


def _settings(*, usecase: bool = True, lake: bool = False, checked: bool = False) -> Settings:
    """The settings, or exit 2 naming what is wrong. ``usecase``: the use-case file must load;
    ``lake``: a local data root must exist (commands that read the lake); ``checked``: the use
    case and its definitions must pass `driftloop check` (commands that run flows or start
    servers)."""
    from driftloop_config.redact import redact
    from driftloop_config.settings import (
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
        from driftloop_config.usecase import UseCaseError, load_usecase

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
    if checked:
        # the use case must pass `driftloop check` (its problems, the same lines, exit 2) before
        # a flow runs or a server starts; skipped while nothing it reads changed since it passed
        from driftloop.check import check_cached

        problems = check_cached(settings)
        if problems:
            fail("\n".join(map(str, problems)))
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


def _usecase_or_none(settings: Settings) -> UseCase | None:
    """The use case, or None when it does not load (commands that do not need it)."""
    from driftloop_config.usecase import UseCaseError, load_usecase

    try:
        return load_usecase(settings.usecase)
    except (UseCaseError, ValueError, OSError):
        return None


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
    label_delay: Annotated[
        int | None,
        typer.Option(min=1, help="Days until a churn becomes known; default: the use case's."),
    ] = None,
    truth: Annotated[
        Path | None, typer.Option(help="Write the injected defects as JSONL here.")
    ] = None,
) -> None:
    """Write a simulated telco's daily files into $DRIFTLOOP_DATA_ROOT/landing/."""
    from rich.progress import Progress

    from driftloop.simulate import simulate as run_simulation
    from driftloop.simulate import write_truth
    from tasks.storage import Lake

    settings = _settings(usecase=False)
    lake = Lake.from_settings(settings)
    usecase = _usecase_or_none(settings)
    if label_delay is None:
        target = usecase.target if usecase is not None else None
        label_delay = target.label_delay_days if target is not None else 14
    if usecase is not None and usecase.target is not None and usecase.model is not None:
        from driftloop.simulate import first_model_warning

        warning = first_model_warning(days, usecase)
        if warning:
            err_console.print(Text(warning, style="yellow"), soft_wrap=True)
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
    settings = _settings(lake=True, checked=True)
    _prefect_api(settings)
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
    _prefect_api(_settings(lake=True, checked=True))
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
    _prefect_api(_settings(lake=True, checked=True))
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
    from driftloop_config.usecase import load_usecase
    from tasks import registry

    if not rollback:
        raise typer.BadParameter(
            "nothing to do: pass --rollback (promotion runs in `driftloop train`)"
        )
    spec = load_usecase(settings.usecase).loop().model  # the use case's error without one
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

    settings = _settings(checked=True)
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
    """Batch-score the active entities with the champion (predictions/ zone)."""
    _prefect_api(_settings(lake=True, checked=True))
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
    _prefect_api(_settings(lake=True, checked=True))
    from flows.drift import DriftParams, drift_flow

    out = drift_flow(DriftParams(day=_parse_date(day) if day else None))
    if "detected" in out and "window" not in out:
        console.print(f"no check: {out.get('reason')}", markup=False)
        return
    if out.get("status") == "no-data":
        console.print(f"no data in {' → '.join(out['window'])}: nothing checked", markup=False)
        return
    verdict = "[red]drift detected[/red]" if out["detected"] else "[green]no drift[/green]"
    detail = f" in {' → '.join(out['window'])}: drifted {out['drifted'] or 'none'}; "
    console.print(verdict + escape(detail + f"report {out['report']}"))


# the day range and feed of `replay` and `backfill`
FirstDay = Annotated[
    str | None, typer.Option("--from", help="First day (default: the feed's first).")
]
LastDay = Annotated[str | None, typer.Option("--to", help="Last day (default: the feed's last).")]
Feed = Annotated[
    str | None,
    typer.Option(
        help="A folder (or s3:// URI) of files named with the day they arrive on; each day's "
        "files are landed on their day. Default: what landing/ holds."
    ),
]


def _feed_and_days(
    settings: Settings, feed: str | None, first: str | None, last: str | None
) -> tuple[Storage | None, date, date]:
    """The feed (None: landing/ itself), and the first and last day to play (default: the
    feed's first and last day); exits 2 on a bad feed or range, or while the stack runs."""
    from driftloop.replay import days_in
    from driftloop.stack import processes
    from tasks.storage import Lake, StorageError, open_storage

    if any(alive for _, alive in processes(settings)):
        fail(
            "the local stack is running: its deployments would act on the replayed days' "
            "events too. Stop it first (`driftloop down`)"
        )
    lake = Lake.from_settings(settings)
    source = None
    if feed is not None:
        uri = feed if "://" in feed else f"file://{Path(feed).resolve()}"
        if uri.startswith("file://") and not Path(uri[len("file://") :]).is_dir():
            fail(f"--feed {feed}: no such folder")
        try:
            source = open_storage(
                uri, endpoint_url=settings.aws_endpoint_url, region=settings.aws_region
            )
        except StorageError as exc:
            fail(f"--feed {feed}: {exc}")
    days = sorted(days_in(lake, source))
    if not days and (first is None or last is None):
        where = feed if feed is not None else settings.zone("landing")
        fail(f"{where} holds no file named with a day (YYYY-MM-DD): nothing to play")
    start = _parse_date(first) if first else days[0]
    end = _parse_date(last) if last else days[-1]
    if end < start:
        fail(f"--to {end} is before --from {start}")
    return source, start, end


@app.command()
def replay(first: FirstDay = None, last: LastDay = None, feed: Feed = None) -> None:
    """Run the loop day by day over a history: ingest, features, training when the policy or a
    drift event asks (with the parameters prefect.yaml's triggers render), score, drift.
    The feed's days before --from that were never ingested are first landed in bulk (one
    ingest run, one features run, as backfill does). Resumable: days already played are
    skipped."""
    settings = _settings(lake=True, checked=True)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from driftloop.replay import DayOutcome, summarise
    from driftloop.replay import replay as play
    from driftloop_config.usecase import load_usecase

    source, start, end = _feed_and_days(settings, feed, first, last)
    _prefect_api(settings)
    usecase = load_usecase(settings.usecase)
    total = (end - start).days + 1
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        console=err_console,
        transient=False,
    ) as bar:
        task = bar.add_task("replay", total=total, last="")

        def on_day(o: DayOutcome) -> None:
            bar.update(task, advance=1, last=day_line(o))
            bar.console.print(day_line(o), markup=False)

        def on_history(first: date, last: date, filled: dict[str, Any]) -> None:
            bar.console.print(
                f"history {first} → {last}: {filled['objects']} files landed in one ingest run "
                f"({filled['ingest'].get('rows_validated', 0):,} rows validated), "
                f"{filled['feature_days']} feature days built",
                markup=False,
            )

        try:
            outcomes = play(
                settings, usecase, source, start, end, on_day=on_day, on_history=on_history
            )
        except ValueError as exc:
            fail(str(exc))
    counts = summarise(outcomes)
    console.print(
        f"{counts['days']} days: {counts['rows_validated']:,} rows validated, "
        f"{counts['rows_quarantined']:,} quarantined, {counts['files_rejected']} files rejected; "
        f"drift on {len(counts['alarm_days'])} days; {counts['trained']} trained, "
        f"{counts['promoted']} promoted, {counts['rejected']} rejected, "
        f"{counts['deferred']} deferred; champions {counts['champions'] or 'none'}",
        markup=False,
    )


def day_line(o: Any) -> str:
    """One replayed day in one line."""
    parts = [
        o.day.isoformat(),
        f"{o.rows_validated:,} valid",
        f"{o.rows_quarantined:,} quarantined",
        f"champion v{o.champion}" if o.champion else "no champion",
    ]
    if o.drift_status:
        parts.append("DRIFT" if o.drift_detected else o.drift_status)
    for t in o.trainings:
        parts.append(
            f"v{t.version} {'promoted' if t.promoted else 'rejected'} ({t.reason})"
            if t.trained
            else f"train deferred: {t.deferred}"
        )
    return "  ".join(parts)


@app.command()
def backfill(
    first: FirstDay = None,
    last: LastDay = None,
    feed: Feed = None,
    checks: Annotated[
        bool,
        typer.Option(help="Also score each day with the champion and run its drift check."),
    ] = True,
) -> None:
    """Ingest and build the features of past days in one go (no training); with a champion,
    score each day and check it for drift, as the schedules would have."""
    settings = _settings(lake=True, checked=True)
    from driftloop.replay import backfill as fill
    from driftloop_config.usecase import load_usecase

    source, start, end = _feed_and_days(settings, feed, first, last)
    _prefect_api(settings)

    def on_day(day: date, done: dict[str, Any]) -> None:
        drift = "DRIFT" if done["drift"] else done["drift_status"]
        console.print(f"{day}  {done['scored']:,} scored  {drift}", markup=False)

    try:
        out = fill(
            settings,
            load_usecase(settings.usecase),
            source,
            start,
            end,
            checks=checks,
            on_day=on_day,
        )
    except ValueError as exc:
        fail(str(exc))
    ingested = out["ingest"]
    console.print(
        f"{start} → {end}: {out['objects']} files, "
        f"{ingested.get('rows_validated', 0):,} rows validated, "
        f"{ingested.get('rows_quarantined', 0):,} quarantined; "
        f"{out['feature_days']} feature days built",
        markup=False,
    )
    if checks and out.get("champion") is None:
        console.print("no champion yet: nothing scored or checked", markup=False)
    elif checks:
        console.print(
            f"scored {len(out['scored'])} days with v{out['champion']}; drift on "
            f"{len(out['drift_days'])} days",
            markup=False,
        )


@app.command()
def watch(
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between scans.")] = 2.0,
    settle: Annotated[
        float, typer.Option(min=0.0, help="Announce an object once unchanged this long.")
    ] = 2.0,
    once: Annotated[bool, typer.Option(help="Scan once and exit.")] = False,
) -> None:
    """Announce newly landed objects as driftloop.data.landed events, one per scan (needs a
    Prefect API)."""
    import signal
    import time

    settings = _settings(checked=True)
    _prefect_api(settings)
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from driftloop_config.usecase import load_usecase
    from tasks.ingest import open_ledger
    from tasks.reconcile import shortlist
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
        keys = [o["key"] for o in event["payload"]["objects"]]
        console.print(f"landed: {len(keys)} objects: {shortlist(keys)}", markup=False)

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
    settings = _settings(checked=True)
    from driftloop.stack import StackError, describe
    from driftloop.stack import up as start
    from driftloop_config.redact import redact

    try:
        stack = start(
            settings,
            prefect_port=prefect_port,
            mlflow_port=mlflow_port,
            progress=lambda line: console.print(line, markup=False),
        )
    except StackError as exc:
        fail(redact(str(exc)), EXIT_STACK)
    info = describe(stack)
    lines = [
        f"Prefect UI   {info['prefect_ui']}",
        f"Prefect API  {info['prefect_api']}  (the CLI commands use it)",
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
    """Stop exactly what `driftloop up` started (its runs still in flight are marked crashed), and
    the local Prefect API server the other commands share."""
    settings = _settings(usecase=False)
    from driftloop.stack import StackError
    from driftloop.stack import down as stop
    from driftloop_config.redact import redact

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


def _prefect_api(settings: Settings) -> str:
    """The Prefect API of a command that runs flows or talks to Prefect, exported as
    ``PREFECT_API_URL``: the configured one, the running stack's, else the local API server of the
    state folder, started once and reused (``driftloop.localapi``; exit 1 when it cannot start)."""
    from driftloop.localapi import ensure_api
    from driftloop.procs import StackError
    from driftloop_config.redact import redact

    try:
        return ensure_api(settings)
    except StackError as exc:
        fail(redact(str(exc)), EXIT_STACK)


@app.command()
def reconcile(
    dry_run: Annotated[
        bool, typer.Option(help="Only show what is missing; start no runs.")
    ] = False,
    settle: Annotated[
        float,
        typer.Option(min=0.0, help="Leave objects landed less than this many seconds ago."),
    ] = 60.0,
) -> None:
    """Start the ingest, features or train run the lake says is missing (once; the reconcile
    deployment does it every 5 minutes)."""
    settings = _settings(lake=True, checked=True)
    api_url = _prefect_api(settings)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.reconcile import ReconcileParams, reconcile_flow

    with temporary_settings({PREFECT_API_URL: api_url}):
        out = reconcile_flow(ReconcileParams(settle_seconds=settle, dry_run=dry_run))
    print_reconcile(out, dry_run=dry_run)


def print_reconcile(out: Reconciled, *, dry_run: bool = False) -> None:
    if not out["wanted"]:
        console.print("nothing missing: the lake has no pending work", markup=False)
        return
    for want in out["wanted"]:
        dep = want["deployment"]
        started = [s for s in out["started"] if s["deployment"] == dep]
        if started:
            done = f"started {started[0]['flow_run_name']} ({started[0]['flow_run_id']})"
        elif dep in out["on_its_way"]:
            done = "already on its way: " + ", ".join(out["on_its_way"][dep])
        elif dep in out["not_deployed"]:
            done = "not deployed (prefect deploy --all)"
        else:
            done = "would start (dry run)" if dry_run else "not started"
        console.print(f"{dep}: {want['reason']}\n  → {done}", markup=False)


@app.command()
def status() -> None:
    """What the loop is doing and why: champion, pending work, retraining policy, last runs,
    failed and crashed runs and failed automation actions of the last day."""
    settings = _settings()
    from driftloop.status import collect

    info = collect(settings)
    for line in status_lines(info):
        console.print(line, markup=False)
    if info["api"] is None:
        return
    table = Table(title="last flow runs")
    for col in ("flow", "deployment", "state", "started", "name"):
        table.add_column(col)
    for r in info["api"]["runs"]:
        cells = (r["flow"], r["deployment"] or "-", r["state"], r["start"] or "-", r["name"])
        table.add_row(*(Text(str(c)) for c in cells))
    console.print(table)
    for line in api_lines(info["api"]):
        console.print(line, markup=False)


def _listed(
    items: list[str], limit: int = 10, *, total: int | None = None, indent: str = "  "
) -> list[str]:
    """One line per item, at most ``limit``, then ``+N more`` (of ``total`` when more exist
    than were read): nothing is cut silently."""
    total = len(items) if total is None else total
    lines = [f"{indent}{item}" for item in items[:limit]]
    if total > len(lines):
        lines.append(f"{indent}+{total - len(lines)} more")
    return lines


def status_lines(info: dict[str, Any]) -> list[str]:
    """The part of ``driftloop status`` that needs no Prefect API."""
    lines = [f"champion: {info['champion']}"]
    lines += [f"{name}: {value}" for name, value in info["backends"].items() if value]
    if info["stack"]:
        lines.append(f"stack: {info['stack']}")
    if info.get("local_api"):
        lines.append(f"local Prefect API server: {info['local_api']}")
    drift = info["last_drift"]
    lines.append(
        "last drift check: "
        + (
            f"no data in {' → '.join(drift['window'])}"
            if drift and drift.get("status") == "no-data"
            else f"{'DRIFT' if drift['detected'] else 'no drift'} in {' → '.join(drift['window'])} "
            f"(v{drift['model_version']}; drifted {drift['drifted'] or 'none'})"
            if drift
            else "none yet"
        )
    )
    pending = info["pending"]
    training = pending["training"]
    if training is not None:
        verdict = (
            f"train ({training['reason']})"
            if training["train"]
            else f"not training: {training['reason']}"
        )
        if training["train"] and not training["due"]:
            verdict += "; a training already used these labels"
        lines.append(f"retraining policy (as of {pending['day']}): {verdict}")
    state = pending["loop_state"]
    if state is not None:
        lines.append(
            f"loop state: last trained through {state['last_trained_through'] or '-'}, "
            f"drift since {state['drift_since'] or '-'}"
            + (f" (last signalled {state['drift_seen']})" if state.get("drift_seen") else "")
            + ", trains from "
            f"{state['train_since'] or 'the start'}"
        )
    lines += policy_lines(info.get("policy"))
    recent = pending["objects_recent"]
    lines.append(
        f"pending landed objects: {len(pending['objects']) + len(recent)}"
        + (f" ({len(recent)} just landed, left to their event)" if recent else "")
    )
    lines += _listed(pending["objects"] + recent)
    lines.append(f"validated days without current features: {len(pending['feature_days'])}")
    lines += _listed(pending["feature_days"])
    if pending["unrecorded_drift"]:
        lines.append(f"drift detected from {pending['unrecorded_drift']} is not recorded yet")
    nxt = info["next_action"]
    lines.append(
        "reconcile would start: "
        + ("; ".join(f"{a['deployment']} ({a['reason']})" for a in nxt) if nxt else "nothing")
    )
    if info["api"] is None:
        lines.append(f"flow runs: no Prefect API reachable ({info['api_error']})")
    return lines


def policy_lines(policy: dict[str, Any] | None) -> list[str]:
    """The retraining policy's current back-off, pending change and last decisions."""
    if policy is None:
        return []
    lines = []
    backoff = policy["backoff"]
    if backoff is None:
        lines.append("back-off: none")
    else:
        lines.append(
            f"back-off since {backoff['since']} (after {backoff['why']} as of "
            f"{backoff['as_of']}): {backoff['rows']}/{backoff['rows_needed']} newly labelled "
            f"rows and {backoff['positives']}/{backoff['positives_needed']} positives after "
            f"{backoff['after']}"
            + (" — over, the next request may train" if backoff["over"] else "")
        )
    if policy["post_change_days_wanted"] is not None:
        lines.append(
            f"pending change ({', '.join(policy['drift_signals']) or 'input-drift'}): waits for "
            f"{policy['post_change_days_wanted']} labelled days after it"
            + (
                f" (widened after {policy['drift_attempts']} unsuccessful attempts)"
                if policy["drift_attempts"]
                else ""
            )
        )
    shown = policy["decision_lines"]
    lines.append(
        f"last policy decisions ({len(shown)} of {policy['decisions_total']}, newest last):"
        if shown
        else "last policy decisions: none yet"
    )
    lines += [f"  {line}" for line in shown]
    return lines


def api_lines(api: dict[str, Any]) -> list[str]:
    """Runs waiting, failed/crashed runs and failed automation actions of the last day."""
    lines = []
    waiting = api["pending_runs"]
    lines.append(f"flow runs waiting to run: {len(waiting)}")
    lines += _listed(
        [f"{r['deployment'] or r['flow']}: {r['state']} (since {r['expected']})" for r in waiting]
    )
    problems = api["problem_runs"]
    lines.append(f"failed or crashed runs in the last day: {len(problems)}")
    lines += _listed(
        [
            f"{r['expected']} {r['deployment'] or r['flow']} {r['name']}: {r['state']}"
            + (f": {r['message']}" if r["message"] else "")
            for r in problems
        ]
    )
    failed = api["failed_actions"]
    lines.append(f"failed automation actions in the last day: {api['failed_actions_total']}")
    lines += _listed(
        [f"{a['occurred']} {a['automation']}: {a['reason']}" for a in failed],
        total=api["failed_actions_total"],
    )
    if api["runs_truncated"]:
        lines.append(f"(only the newest {api['runs_last_day']} runs of the last day were read)")
    return lines


@app.command()
def check() -> None:
    """Check the settings, the use case, its suites, feature builder and Feast repository: every
    problem, one per line (exit 2), else a one-line summary. Runs no flow and starts nothing."""
    settings = _settings(usecase=False)
    from driftloop.check import run_check

    report = run_check(settings)
    if report.problems:
        fail("\n".join(map(str, report.problems)))
    console.print(f"OK: {report.summary()}", markup=False, soft_wrap=True)


def print_training_summary(out: TrainOutcome) -> None:
    table = Table(title=escape(f"challenger v{out['version']} (as of {out['as_of']})"))
    regression = any("rmse" in m for m in out["metrics"].values())
    shown = ("rmse", "mae", "bias") if regression else ("roc_auc", "pr_auc", "brier", "ece")
    for col in ("split", "rows", "positives", *shown):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split, m in out["metrics"].items():
        table.add_row(split, str(m["n"]), str(m["positives"]), *(f"{m[k]:.4f}" for k in shown))
    console.print(table)
    verdict = "[green]promoted[/green]" if out["promoted"] else "[yellow]not promoted[/yellow]"
    console.print(f"gate: {verdict} — " + escape(str(out["decision"]["reason"])))


def print_ingest_summary(summary: IngestSummary) -> None:
    rows = summary["objects"]
    if not rows:
        console.print("nothing new landed: the ledger already holds every object")
        return
    table = Table(title="ingest")
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
