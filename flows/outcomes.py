"""Runs that decide not to do their work end in a named state (Completed, named for the
decision, with the reason as its message), so the Prefect UI shows the decision instead of a
plain green "Completed"."""

from __future__ import annotations

from typing import TypeVar, cast

from prefect.states import Completed

R = TypeVar("R")

#: a score run with nothing to score (no champion yet, no validated rows on the day)
SKIPPED = "Skipped"
#: a drift check of a window without data (the day's file was rejected or has not arrived)
NO_DATA = "NoData"
#: a train run the retraining policy deferred (not enough new labels, waiting after a change)
DEFERRED = "Deferred"


def decided(result: R, *, name: str, message: str) -> R:
    """Return this from a flow: the run ends Completed under ``name`` with ``message``, and
    whoever called the flow (the CLI, a parent flow) still receives ``result``."""
    # Prefect records a State returned by a flow as the run's final state and hands its data to
    # the caller: typed as what the caller gets
    return cast(R, Completed(name=name, message=message, data=result))


def ended(result: R, *, name: str, message: str, when: bool) -> R:
    """``result``; when ``when``, ending the run Completed under ``name`` (see :func:`decided`)."""
    return decided(result, name=name, message=message) if when else result
