"""Resolving a feature builder and hashing the code it runs (tasks/feature_code.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.telco_churn import telco_daily_features
from tasks.feature_code import builder_code, load_builder
from tests.support.builders import own_builder_module


@pytest.fixture
def builder_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A builder module of its own (name, file): see
    :func:`tests.support.builders.own_builder_module`."""
    with own_builder_module(tmp_path, monkeypatch) as found:
        yield found


def test_load_builder() -> None:
    assert load_builder("examples.telco_churn:telco_daily_features") is telco_daily_features
    with pytest.raises(ValueError, match="module:function"):
        load_builder("tasks.features")
    with pytest.raises(ValueError, match="cannot import"):
        load_builder("tasks.nope:fn")
    with pytest.raises(ValueError, match="has no function"):
        load_builder("tasks.features:nope")


def test_builder_code_covers_the_modules_the_builder_calls_into(
    tmp_path: Path, builder_module: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper module the builder reaches through its globals is hashed (a change of it
    changes the digest); libraries are not; a builder module that is unchanged keeps its
    digest."""
    name, path = builder_module
    helper = f"{name}_helper"
    (path.parent / f"{helper}.py").write_text("def scale(x):\n    return x * 2\n")
    path.write_text(
        f"from {helper} import scale\nimport pandas as pd\n\n\n"
        "def build(usage, start, end):\n    return pd.DataFrame({'x': scale(usage['x'])})\n"
    )
    try:
        first = builder_code(f"{name}:build")
        assert sorted(first) == [name, helper]
        assert builder_code(f"{name}:build") == first
        (path.parent / f"{helper}.py").write_text("def scale(x):\n    return x * 3\n")
        second = builder_code(f"{name}:build")
        assert second[name] == first[name] and second[helper] != first[helper]
    finally:
        sys.modules.pop(helper, None)
    assert sorted(builder_code("examples.nyc_flight_delays:flight_daily_features")) == [
        "examples._grid",
        "examples.nyc_flight_delays",
    ]
    # the telco builder is its own module: an edit of the build or Feast code rebuilds nothing
    assert sorted(builder_code("examples.telco_churn:telco_daily_features")) == [
        "examples.telco_churn"
    ]
