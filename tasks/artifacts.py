"""What a run shows people in the Prefect UI, described as plain values: the stages decide what
to show (and whether), the flows only publish it (``flows.shared.show``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Markdown:
    """A Markdown artifact."""

    key: str
    markdown: str
    description: str | None = None


@dataclass(frozen=True)
class Table:
    """A table artifact: one dict per row."""

    key: str
    table: list[dict[str, Any]]
    description: str | None = None


@dataclass(frozen=True)
class Link:
    """A link artifact (a report in the lake, when it has an address people can open)."""

    key: str
    link: str
    description: str | None = None


Artifact = Markdown | Table | Link
