"""The one-row-per-entity SQLite online store answers exactly as Feast's own SQLite store does,
through Feast's interfaces (materialize, the feast CLI, pushes, get_online_features)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from tasks.feature_store import ONLINE_SQLITE, ONLINE_SQLITE_PROVIDER
from tasks.online_sqlite import EntitySqliteOnlineStore, entity_keys, table_name

FEAST = Path(sys.executable).with_name("feast")
T0 = datetime(2026, 3, 1, tzinfo=UTC)
FEATURES = ["v:x", "v:n", "v:s", "v:b", "v:t"]

REPO = textwrap.dedent(
    """
    from datetime import timedelta

    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Bool, Float64, Int64, String, UnixTimestamp

    customer = Entity(name="customer", join_keys=["cid"])
    source = FileSource(
        name="rows",
        path="{path}",
        timestamp_field="ts",
        created_timestamp_column="created",
    )
    v = FeatureView(
        name="v",
        entities=[customer],
        ttl=timedelta(days=30),
        schema=[
            Field(name="cid", dtype=String),
            Field(name="x", dtype=Float64),
            Field(name="n", dtype=Int64),
            Field(name="s", dtype=String),
            Field(name="b", dtype=Bool),
            Field(name="t", dtype=UnixTimestamp),{extra}
        ],
        source=source,
        online=True,
    )
    """
)


def rows() -> pd.DataFrame:
    """Two days of rows for five customers: the later row wins; nulls, NaN and unicode ids."""
    day1, day2 = T0, T0 + timedelta(days=1)
    frame = pd.DataFrame(
        {
            "cid": ["a", "b", "c", "é-ü", "a", "b", "c", "d"],
            "ts": [day1] * 4 + [day2] * 4,
            "created": [day1 + timedelta(hours=1)] * 4 + [day2 + timedelta(hours=1)] * 4,
            "x": [1.5, 2.0, 3.25, 0.0, 10.5, float("nan"), -3.0, 7.0],
            "n": pd.array([1, 2, 3, 4, 11, None, 13, 14], dtype="Int64"),
            "s": ["p", "q", "r", "s", "P", "Q", None, "D"],
            "b": pd.array([True, False, True, False, False, True, None, True], dtype="boolean"),
            "t": [day1] * 4 + [day2, pd.NaT, day2, day2],
            "y": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        }
    )
    stamps = ["ts", "created", "t"]  # microseconds, as the feature builders write them
    return frame.astype(dict.fromkeys(stamps, "datetime64[us, UTC]"))


def make_repo(root: Path, online: str, *, extra: str = "") -> Path:
    """A feature repo over ``rows()`` with the given online store ("stock" or "ours")."""
    repo = root / online
    repo.mkdir(parents=True, exist_ok=True)
    path = root / "rows.parquet"
    if not path.exists():
        rows().to_parquet(path)
    (repo / "repo.py").write_text(REPO.format(path=path, extra=extra), encoding="utf-8")
    store = (
        {"type": "sqlite", "path": str(repo / "online.db")}
        if online == "stock"
        else {"type": ONLINE_SQLITE, "path": str(repo / "online.db")}
    )
    lines = [
        "project: t",
        f"provider: {'local' if online == 'stock' else ONLINE_SQLITE_PROVIDER}",
        f"registry: {repo / 'registry.db'}",
        "offline_store:\n  type: duckdb",
        "online_store:\n" + "".join(f"  {k}: {v}\n" for k, v in store.items()),
        "entity_key_serialization_version: 3",
    ]
    (repo / "feature_store.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return repo


def feast(repo: Path, *args: str) -> str:
    done = subprocess.run(
        [str(FEAST), *args], cwd=repo, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def answers(store: FeatureStore, ids: list[str], features: list[str] = FEATURES) -> Any:
    response = store.get_online_features(features=features, entity_rows=[{"cid": i} for i in ids])
    return response.to_dict(include_event_timestamps=True)


IDS = ["a", "b", "c", "d", "é-ü", "nobody"]


def test_entity_keys_are_feasts_own_serialisation() -> None:
    strings = ["a", "cust-000017", "é-ü", "", "x" * 300]
    ints = [0, 7, -1, 2**40]
    cases: list[tuple[str, list[Any], list[ValueProto]]] = [
        ("cid", strings, [ValueProto(string_val=v) for v in strings]),
        ("n", ints, [ValueProto(int64_val=v) for v in ints]),
    ]
    for key, values, protos in cases:
        feasts = [
            serialize_entity_key(
                EntityKeyProto(join_keys=[key], entity_values=[p]),
                entity_key_serialization_version=3,
            )
            for p in protos
        ]
        assert entity_keys(key, pa.array(values), 3) == feasts


def test_cli_materialize_answers_like_feasts_sqlite_store(tmp_path: Path) -> None:
    """`feast apply` + `feast materialize` through the CLI, then the same online answers as
    Feast's own SQLite store on the same rows: later rows win, nulls stay null, unknown ids
    get nothing, event timestamps included."""
    stores = {}
    for kind in ("stock", "ours"):
        repo = make_repo(tmp_path, kind)
        feast(repo, "apply")
        out = feast(repo, "materialize", "2026-02-01T00:00:00", "2026-03-05T00:00:00")
        assert "v" in out
        stores[kind] = FeatureStore(repo_path=str(repo))
    ours, stock = answers(stores["ours"], IDS), answers(stores["stock"], IDS)
    assert ours == stock
    assert ours["x"][0] == 10.5 and ours["n"][0] == 11 and ours["s"][0] == "P"  # day 2 wins
    assert ours["x"][1] is None and ours["n"][1] is None  # NaN and null read as null
    assert ours["t"][1] is None and ours["b"][2] is None
    assert ours["s"][4] == "s" and ours["b"][4] is False  # day-1-only customer, unicode id
    assert all(ours[f][5] is None for f in ("x", "n", "s", "b", "t"))  # unknown id
    layout = pd.read_sql(
        f'SELECT * FROM "{table_name("t", stores["ours"].get_feature_view("v"))}"',
        __import__("sqlite3").connect(tmp_path / "ours" / "online.db"),
    )
    assert len(layout) == 5  # one row per entity, not one per (entity, feature)
    assert {"x", "n", "s", "b", "t", "event_ts", "created_ts"} <= set(layout.columns)


def test_pushes_and_rematerialising_write_only_what_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stores = {}
    for kind in ("stock", "ours"):
        repo = make_repo(tmp_path, kind)
        feast(repo, "apply")
        store = FeatureStore(repo_path=str(repo))
        store.materialize(T0 - timedelta(days=5), T0 + timedelta(days=3))
        stores[kind] = store
    caplog.set_level(logging.INFO, logger="tasks.online_sqlite")
    stores["ours"].materialize(T0 - timedelta(days=5), T0 + timedelta(days=3))  # same window
    assert "v: 5 entities materialised, 0 written" in caplog.text

    # Feast's write interface (protobuf rows): one customer changes, a new one arrives
    late = T0 + timedelta(days=2)
    pushed = pd.DataFrame(
        {
            "cid": ["a", "z"],
            "ts": [late, late],
            "created": [late, late],
            "x": [99.0, None],
            "n": [99, 5],
            "s": ["new", "zed"],
            "b": [True, None],
            "t": [late, late],
        }
    )
    for store in stores.values():
        store.write_to_online_store("v", pushed)
    ids = [*IDS, "z"]
    assert answers(stores["ours"], ids) == answers(stores["stock"], ids)
    assert answers(stores["ours"], ["a"])["x"] == [99.0]

    # the same row again through the store's own upsert: nothing is written
    online = stores["ours"]._get_provider().online_store
    assert isinstance(online, EntitySqliteOnlineStore)
    view = stores["ours"].get_feature_view("v")
    same = online.write_rows(
        stores["ours"].config,
        view,
        entity_keys("cid", pa.array(["a"]), 3),
        [int(late.timestamp() * 1e6)],
        [int(late.timestamp() * 1e6)],
        {"x": [99.0], "n": [99], "s": ["new"], "b": [True], "t": [int(late.timestamp())]},
    )
    assert same == 0
    assert answers(stores["ours"], ids) == answers(stores["stock"], ids)


def test_a_feature_added_later_reads_null_until_materialised(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "ours")
    feast(repo, "apply")
    FeatureStore(repo_path=str(repo)).materialize(T0 - timedelta(days=5), T0 + timedelta(days=3))
    serving = FeatureStore(repo_path=str(repo))  # a long-lived reader, e.g. driftloop serve
    assert answers(serving, ["a"], ["v:x"])["x"] == [10.5]
    make_repo(tmp_path, "ours", extra='\n            Field(name="y", dtype=Float64),')
    feast(repo, "apply")
    store = FeatureStore(repo_path=str(repo))
    assert answers(store, ["a"], ["v:x", "v:y"])["y"] == [None]
    store.materialize(T0 - timedelta(days=5), T0 + timedelta(days=3))
    assert answers(store, ["a", "é-ü"], ["v:x", "v:y"])["y"] == [5.0, 4.0]
    serving.refresh_registry()  # the reader learns of y, and reads the column another wrote
    assert answers(serving, ["a", "é-ü"], ["v:x", "v:y"])["y"] == [5.0, 4.0]
    store.teardown()
    assert not (repo / "online.db").exists()


def test_two_writers_add_the_same_new_feature_without_a_clash(tmp_path: Path) -> None:
    """Two processes' stores on one database (a features run and a push, say): the one whose
    knowledge of the table is stale does not add a column the other added already."""
    from feast import Entity, FeatureView, Field, FileSource, RepoConfig
    from feast.types import Float64

    config = RepoConfig(
        project="t",
        provider=ONLINE_SQLITE_PROVIDER,
        registry=str(tmp_path / "registry.db"),
        online_store={"type": ONLINE_SQLITE, "path": str(tmp_path / "online.db")},
        entity_key_serialization_version=3,
        repo_path=tmp_path,
    )
    customer = Entity(name="customer", join_keys=["cid"])
    source = FileSource(name="rows", path=str(tmp_path / "rows.parquet"), timestamp_field="ts")

    def view(*names: str) -> FeatureView:
        fields = [Field(name=n, dtype=Float64) for n in names]
        return FeatureView(name="v", entities=[customer], schema=fields, source=source)

    first, second = EntitySqliteOnlineStore(), EntitySqliteOnlineStore()
    key = entity_keys("cid", pa.array(["a"]), 3)
    stamp = [int(T0.timestamp() * 1e6)]
    assert first.write_rows(config, view("x"), key, stamp, [None], {"x": [1.0]}) == 1
    assert (
        second.write_rows(config, view("x", "y"), key, stamp, [None], {"x": [1.0], "y": [2.0]}) == 1
    )
    stamp = [int((T0 + timedelta(days=1)).timestamp() * 1e6)]
    assert (
        first.write_rows(config, view("x", "y"), key, stamp, [None], {"x": [3.0], "y": [4.0]}) == 1
    )
    [(when, values)] = second.online_read(config, view("x", "y"), [_key_proto("a")])
    assert when == T0 + timedelta(days=1)
    assert values is not None and (values["x"].double_val, values["y"].double_val) == (3.0, 4.0)


def _key_proto(cid: str) -> EntityKeyProto:
    return EntityKeyProto(join_keys=["cid"], entity_values=[ValueProto(string_val=cid)])
