"""``python -m examples.<name> FEED``: an example's feed writer from the command line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer


def run_feed_writer(write_feed: Callable[..., Any], first: str, last: str) -> None:
    """Run ``write_feed(storage, first, last, defects_from=...)`` on the command line's FEED
    folder and days (``first``/``last`` are the defaults), and say what it delivered."""

    def main(
        feed: Annotated[Path, typer.Argument(help="Folder to deliver the daily files into.")],
        start: Annotated[str, typer.Option("--from", help="First day.")] = first,
        end: Annotated[str, typer.Option("--to", help="Last day.")] = last,
        defects_from: Annotated[
            str | None, typer.Option(help="Inject a few defects on the days after this one.")
        ] = None,
    ) -> None:
        """Deliver the days FROM..TO into FEED as the daily CSV files a provider would send
        (a feed for ``driftloop backfill`` and ``driftloop replay``)."""
        from tasks.storage import LocalStorage

        out = write_feed(
            LocalStorage(feed),
            _day(start, "--from"),
            _day(end, "--to"),
            defects_from=_day(defects_from, "--defects-from") if defects_from else None,
        )
        print(
            f"{len(out.objects)} files in {feed}: {out.quarantined():,} rows the row suites "
            f"should quarantine, {len(out.rejected_files)} file(s) to reject"
        )

    typer.run(main)


def _day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a day (YYYY-MM-DD)", param_hint=flag) from None
