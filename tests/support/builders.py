"""A feature builder module of a test's own, written into a temporary folder: what the tests of
the build's fingerprint of a builder's code change and re-import (tests/tasks/test_features.py,
tests/tasks/test_feature_code.py)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BUILDER = """
from examples.telco_churn import telco_daily_features


def build(usage, start, end):
    return telco_daily_features(usage, start, end)
"""


@contextmanager
def own_builder_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path]]:
    """A builder module of its own (name, file), importable from ``tmp_path/builders``, written
    as :data:`BUILDER`; forgotten (as by a new process) by ``sys.modules.pop(name)``."""
    name = f"features_builder_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "builders"
    folder.mkdir()
    path = folder / f"{name}.py"
    path.write_text(BUILDER)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # a rewrite is always read anew
    yield name, path
    sys.modules.pop(name, None)
