from __future__ import annotations

import sqlite3
from pathlib import Path

from mlflow import MlflowClient
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from tasks.registry import client_for
from tasks.tracking_store import empty_store, seed_sqlite_store, sqlite_path


def _schema(db: Path) -> list[tuple[str, str, list[str]]]:
    """Every table and index with the clauses of its definition, sorted: MLflow's own
    migrations do not write a table's constraints in the same order twice."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name"
        ).fetchall()
    con.close()
    return [(kind, name, sorted(sql.split(", \n"))) for kind, name, sql in rows]


def _rows(db: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as con:
        rows = con.execute(query).fetchall()
    con.close()
    return rows


def test_a_seeded_store_is_what_mlflow_would_have_migrated(tmp_path: Path) -> None:
    migrated, seeded = tmp_path / "migrated.db", tmp_path / "seeded.db"
    SqlAlchemyStore(f"sqlite:///{migrated}", str(tmp_path / "art-a"))
    assert seed_sqlite_store(f"sqlite:///{seeded}") is True
    # the same tables, indexes and schema revision, and no experiment yet
    assert _schema(seeded) == _schema(migrated)
    revision = "SELECT version_num FROM alembic_version"
    assert _rows(seeded, revision) == _rows(migrated, revision)
    assert _rows(seeded, "SELECT * FROM experiments") == []
    # opened by a client, it gets its Default experiment with that client's artifact root
    client = client_for(f"sqlite:///{seeded}")
    default = client.get_experiment("0")
    assert default.name == "Default" and default.lifecycle_stage == "active"
    made = client.create_experiment("x", artifact_location=(tmp_path / "art-x").as_uri())
    assert client.get_experiment(made).name == "x" and made == "1"
    assert [e.name for e in client.search_experiments()] == ["x", "Default"]


def test_an_existing_store_is_never_replaced(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    client.create_experiment("kept")
    before = db.read_bytes()
    assert seed_sqlite_store(f"sqlite:///{db}") is False
    assert db.read_bytes() == before
    assert client_for(f"sqlite:///{db}").get_experiment_by_name("kept") is not None


def test_only_sqlite_files_are_seeded(tmp_path: Path) -> None:
    assert sqlite_path("sqlite:////abs/mlflow.db") == Path("/abs/mlflow.db")
    assert sqlite_path("sqlite:////abs/mlflow.db?timeout=20") == Path("/abs/mlflow.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql+psycopg2://u@127.0.0.1:5432/mlflow") is None
    assert sqlite_path("http://127.0.0.1:5000") is None
    assert seed_sqlite_store("http://127.0.0.1:5000") is False
    # a new folder is created for it, and nothing but the database is left there
    db = tmp_path / "state" / "deep" / "mlflow.db"
    assert seed_sqlite_store(f"sqlite:///{db}") is True
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db"]
    assert db.read_bytes() == empty_store()
