"""A new SQLite MLflow tracking store starts as a copy of an empty one.

MLflow creates a new SQLite store by running its whole chain of schema migrations (alembic):
2–4 s per database on this kind of machine, paid by every fresh lake, every ``driftloop up``
on a new state folder and every test that trains. :func:`seed_sqlite_store` instead writes a
copy of an empty store that MLflow migrated once in this process (its ``Default`` experiment
removed, so that MLflow creates it again on first open with the artifact root of the client
that opens it, exactly as in a store it migrated itself). An existing database is never
touched; other tracking URIs (PostgreSQL, HTTP) are left to MLflow.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"

_lock = threading.Lock()
_empty: bytes | None = None


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (None for any other URI, or an
    in-memory database)."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    path = tracking_uri[len(SQLITE_PREFIX) :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def empty_store() -> bytes:
    """The bytes of an empty SQLite tracking store of the installed MLflow's schema, without
    its ``Default`` experiment (migrated once per process)."""
    global _empty
    with _lock:
        if _empty is None:
            _empty = _migrate_empty()
        return _empty


def _migrate_empty() -> bytes:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with tempfile.TemporaryDirectory(prefix="driftloop-mlflow-") as tmp:
        db = Path(tmp) / "mlflow.db"
        uri = f"{SQLITE_PREFIX}{db}"
        store = SqlAlchemyStore(uri, str(Path(tmp) / "artifacts"))
        store.engine.dispose()
        SqlAlchemyStore._engine_map.pop(uri, None)  # a class-level cache of engines by URI
        with sqlite3.connect(db) as con:
            con.execute("DELETE FROM experiment_tags WHERE experiment_id = 0")
            con.execute("DELETE FROM experiments WHERE experiment_id = 0")
        con.close()
        return db.read_bytes()


def seed_sqlite_store(tracking_uri: str) -> bool:
    """Create the database of a ``sqlite:///`` tracking URI as a copy of :func:`empty_store`
    when it does not exist; returns whether it did. Safe against another process creating the
    same store at the same time: the copy is linked into place only if the path is still free."""
    path = sqlite_path(tracking_uri)
    if path is None or path.exists():
        return False
    content = empty_store()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)
