"""One declaration per feature: the ``Field(name, dtype, description)`` of the Feast views of each
shipped repository. Everything else is checked against it: the builders' column lists (they do
not import Feast), the columns each builder writes, the feature tables of the docs (generated:
``.venv/bin/python -m tests.tasks.test_feature_declarations`` rewrites them) and the views of
the worked example in docs/own-data.md."""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import examples.nyc_flight_delays as flights
import examples.saas_retention as saas
import examples.us_low_birth_days as births
from driftloop.check import TRIAL_DAY, _trial_frames, feature_table
from driftloop_config.settings import PROJECT_ROOT
from driftloop_config.usecase import load_usecase
from examples.telco_churn import AGGREGATE_COLUMNS, PROFILE_COLUMNS
from tasks.feature_code import load_builder
from tasks.feature_store import RepoObjects, load_repo_objects
from tests.support.usecases import feature_repo_of

EXAMPLES = PROJECT_ROOT / "examples" / "feature_repos"
#: Every shipped Feast repository, by the name its feature table is marked with in the docs.
REPOS = {
    "feature_repo": PROJECT_ROOT / "feature_repo",
    **{p.name: p for p in sorted(EXAMPLES.iterdir()) if (p / "views.py").is_file()},
}
#: Where each repository's feature table is documented.
DOCS = {
    name: (path / "README.md" if name == "feature_repo" else EXAMPLES / "README.md")
    for name, path in REPOS.items()
}
USECASES = sorted((PROJECT_ROOT / "usecases").glob("*.yaml"))
TIMESTAMPS = ("date", "event_timestamp", "features_asof")
#: Feast type → the dtype the builders' lists give it.
DTYPES = {"Int64": "int64", "Float64": "float64"}
#: The builders' column lists: (repository, view, the list: names, or names → dtypes).
BUILDER_LISTS: list[tuple[str, str, Any]] = [
    ("feature_repo", "customer_profile", PROFILE_COLUMNS),
    ("feature_repo", "usage_aggregates", AGGREGATE_COLUMNS),
    ("nyc_flight_delays", "aircraft_activity", flights.ACTIVITY),
    ("nyc_flight_delays", "origin_conditions", flights.CONDITIONS),
    ("saas_retention", "engagement", saas.ENGAGEMENT),
    ("saas_retention", "tier_reliability", saas.TIER_FEATURES),
    ("us_low_birth_days", "birth_counts", births.COUNTS),
    ("us_low_birth_days", "calendar_ahead", births.CALENDAR),
]


def _load(repo: Path, data_root: Path) -> RepoObjects:
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.setenv("DRIFTLOOP_DATA_ROOT", str(data_root))  # the sources read the settings
        return load_repo_objects(repo)


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RepoObjects]:
    """The objects of every shipped repository, imported once."""
    root = tmp_path_factory.mktemp("declarations") / "lake"
    return {name: _load(path, root) for name, path in REPOS.items()}


def _views(objects: RepoObjects) -> dict[str, Any]:
    return {v.name: v for v in objects.feature_views}


def test_every_shipped_repository_is_covered() -> None:
    assert {feature_repo_of(u).name for u in USECASES} | {"feature_repo"} == set(REPOS)
    assert {r for r, _, _ in BUILDER_LISTS} == set(REPOS)


def test_every_feature_has_a_one_line_description(repos: dict[str, RepoObjects]) -> None:
    lacking = [
        f"{name}: {view.name}.{field.name}"
        for name, objects in repos.items()
        for view in objects.feature_views
        for field in view.features
        if not field.description.strip() or "\n" in field.description
    ]
    assert lacking == []
    assert sum(len(v.features) for o in repos.values() for v in o.feature_views) >= 60


@pytest.mark.parametrize(
    ("repo", "view", "columns"), [pytest.param(*x, id=f"{x[0]}-{x[1]}") for x in BUILDER_LISTS]
)
def test_a_builders_column_list_equals_its_view(
    repos: dict[str, RepoObjects], repo: str, view: str, columns: Any
) -> None:
    """The names (and dtypes, where the list has them) in the view's order; ``features_asof``,
    which every builder writes as a timestamp, aside."""
    fields = [f for f in _views(repos[repo])[view].features if f.name != "features_asof"]
    assert list(columns) == [f.name for f in fields]
    if isinstance(columns, dict):
        assert columns == {f.name: DTYPES[str(f.dtype)] for f in fields}


@pytest.mark.parametrize("usecase", USECASES, ids=lambda p: p.stem)
def test_every_column_a_builder_writes_is_declared(
    repos: dict[str, RepoObjects], usecase: Path
) -> None:
    """Each builder writes exactly its key, the timestamps and the features of the views that
    read its table: no feature without a declaration (``driftloop check`` checks that the
    declared ones are there, with fitting dtypes)."""
    spec = load_usecase(usecase)
    views = repos[feature_repo_of(usecase).name].feature_views
    for table in spec.feature_tables:
        declared = {f.name for v in views if v.batch_source.name == table.name for f in v.features}
        expected = {table.key, *TIMESTAMPS, *declared}
        builder = load_builder(table.builder)
        for frame in _trial_frames(spec, table):
            out = builder(frame, TRIAL_DAY, TRIAL_DAY)
            assert set(out.columns) == expected, (table.builder, len(out))
            assert len(out.columns) == len(expected)


# ---- the docs -----------------------------------------------------------------------------------


def _markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- feature table of {name}: generated from its views.py by "
        "tests/tasks/test_feature_declarations.py, do not edit -->\n",
        f"<!-- end of the feature table of {name} -->\n",
    )


def documented_table(name: str) -> str | None:
    """The feature table of repository ``name`` in its doc (None: not there)."""
    text = DOCS[name].read_text(encoding="utf-8")
    begin, end = _markers(name)
    found = re.search(re.escape(begin) + "(.*?)" + re.escape(end), text, re.S)
    return found[1] if found else None


@pytest.mark.parametrize("name", sorted(REPOS))
def test_the_documented_feature_table_is_what_the_views_declare(
    repos: dict[str, RepoObjects], name: str
) -> None:
    expected = feature_table(repos[name])
    assert documented_table(name) == expected, (
        f"the feature table of {name} in {DOCS[name]} is out of date: "
        ".venv/bin/python -m tests.tasks.test_feature_declarations rewrites it"
    )


def test_a_wrong_documented_description_is_found(repos: dict[str, RepoObjects]) -> None:
    """The comparison above is on the text: one changed description makes it differ."""
    table = documented_table("feature_repo")
    assert table is not None and "Days with usage in the 30 days" in table
    assert table.replace("Days with usage", "Days without usage") != feature_table(
        repos["feature_repo"]
    )


def _sample_views(markdown: str) -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """``(view name, [(field, Feast type, description), ...])`` of every ``FeatureView(...)`` in
    the Python blocks of a Markdown file."""
    for block in re.findall(r"```python\n(.*?)```", markdown, re.S):
        for node in ast.walk(ast.parse(textwrap.dedent(block))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "FeatureView"):
                continue
            kw = {k.arg: k.value for k in node.keywords}
            assert isinstance(kw["schema"], ast.List)
            fields = []
            for call in kw["schema"].elts:
                assert isinstance(call, ast.Call)
                args = {k.arg: k.value for k in call.keywords}
                dtype = args["dtype"]
                assert isinstance(dtype, ast.Name)
                described = args.get("description")
                text = ast.literal_eval(described) if described is not None else ""
                fields.append((str(ast.literal_eval(args["name"])), dtype.id, str(text)))
            yield str(ast.literal_eval(kw["name"])), fields


def test_the_worked_example_declares_the_shipped_views(repos: dict[str, RepoObjects]) -> None:
    """docs/own-data.md shows the views of examples/feature_repos/saas_retention: the same
    fields, types and descriptions."""
    shipped = _views(repos["saas_retention"])
    samples = dict(_sample_views((PROJECT_ROOT / "docs" / "own-data.md").read_text("utf-8")))
    assert set(samples) == {"account_profile", "engagement", "tier_reliability"}
    for name, fields in samples.items():
        view = shipped[name]
        assert fields == [
            (f.name, str(f.dtype), f.description) for f in [*view.entity_columns, *view.features]
        ], name


# ---- rewriting the docs -------------------------------------------------------------------------


def write_tables(data_root: Path) -> list[Path]:
    """Rewrite every documented feature table from its views; returns the files changed."""
    changed = []
    for name, repo in REPOS.items():
        doc = DOCS[name]
        text = doc.read_text(encoding="utf-8")
        begin, end = _markers(name)
        table = feature_table(_load(repo, data_root))
        found = re.search(re.escape(begin) + ".*?" + re.escape(end), text, re.S)
        if found is None:
            raise SystemExit(f"{doc} has no feature table of {name}: add the markers {begin}")
        new = text[: found.start()] + begin + table + end + text[found.end() :]
        if new != text:
            doc.write_text(new, encoding="utf-8")
            changed += [doc] if doc not in changed else []
    return changed


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for path in write_tables(Path(tmp) / "lake"):
            print(f"rewrote {path}")
