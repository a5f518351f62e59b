"""The storage interface, the same tests on a folder and on a real S3 endpoint."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest

from tasks.storage import (
    MIRROR_STATE,
    Lake,
    LocalStorage,
    StorageError,
    mirror_to_local,
    open_storage,
    read_json,
    read_parquet,
    sha256_hex,
    write_json,
    write_parquet,
)


def test_write_read_list_delete(lake: Lake) -> None:
    st = lake.landing
    assert st.list() == []
    info = st.write_bytes("usage/2026-01-01.csv", b"a,b\n1,2\n")
    st.write_bytes("labels/2026-01-01.csv", b"x\n")
    assert info.size == 8 and info.key == "usage/2026-01-01.csv"
    assert [o.key for o in st.list()] == ["labels/2026-01-01.csv", "usage/2026-01-01.csv"]
    assert [o.key for o in st.list("usage")] == ["usage/2026-01-01.csv"]
    assert st.read_bytes("usage/2026-01-01.csv") == b"a,b\n1,2\n"
    assert st.exists("usage/2026-01-01.csv") and not st.exists("usage/nope.csv")
    st.delete("usage/2026-01-01.csv")
    assert not st.exists("usage/2026-01-01.csv")
    st.delete("usage/2026-01-01.csv")  # deleting twice is fine


def test_etag_changes_with_content(lake: Lake) -> None:
    st = lake.landing
    first = st.write_bytes("k.csv", b"one")
    listed = st.list()[0]
    assert listed.etag == st.info("k.csv").etag
    second = st.write_bytes("k.csv", b"two!")
    assert st.info("k.csv").etag != first.etag
    assert second.size == 4


def test_missing_object_is_a_clear_error(lake: Lake) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        lake.landing.read_bytes("nope.csv")
    with pytest.raises(StorageError, match="does not exist"):
        lake.landing.info("nope.csv")


@pytest.mark.parametrize("key", ["", "/", "a/../b", "a//b", "./x"])
def test_bad_keys_are_refused(lake: Lake, key: str) -> None:
    with pytest.raises(StorageError, match="invalid object key"):
        lake.landing.write_bytes(key, b"x")


def test_zones_are_disjoint(lake: Lake) -> None:
    lake.landing.write_bytes("a.csv", b"1")
    lake.validated.write_bytes("a.csv", b"2")
    assert lake.landing.read_bytes("a.csv") == b"1"
    assert lake.zone("validated").read_bytes("a.csv") == b"2"
    assert lake.landing.uri.endswith("/landing") and lake.validated.uri.endswith("/validated")


def test_json_and_parquet_roundtrip(lake: Lake) -> None:
    write_json(lake.reports, "x/summary.json", {"a": 1, "b": [1, 2]})
    assert read_json(lake.reports, "x/summary.json") == {"a": 1, "b": [1, 2]}
    df = pd.DataFrame({"id": ["a", "b"], "v": [1.5, None], "d": pd.to_datetime(["2026-01-01"] * 2)})
    write_parquet(lake.validated, "t/part.parquet", df)
    pd.testing.assert_frame_equal(read_parquet(lake.validated, "t/part.parquet"), df)


def test_parquet_bytes_are_deterministic(lake: Lake) -> None:
    df = pd.DataFrame({"id": ["a", "b"], "v": [1, 2]})
    write_parquet(lake.validated, "a.parquet", df)
    write_parquet(lake.validated, "b.parquet", df)
    assert sha256_hex(lake.validated.read_bytes("a.parquet")) == sha256_hex(
        lake.validated.read_bytes("b.parquet")
    )


def test_local_write_is_atomic_under_concurrent_readers(tmp_path) -> None:
    st = LocalStorage(tmp_path)
    a, b = b"a" * 2_000_000, b"b" * 3_000_000
    st.write_bytes("obj", a)
    seen: set[int] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add(len(st.read_bytes("obj")))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(30):
        st.write_bytes("obj", a if i % 2 else b)
    stop.set()
    t.join()
    assert seen <= {len(a), len(b)}, "a reader saw a partially written object"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_listing_skips_hidden_and_temp_files(tmp_path) -> None:
    (tmp_path / ".obj.tmp-123").write_bytes(b"x")
    (tmp_path / "real.csv").write_bytes(b"x")
    assert [o.key for o in LocalStorage(tmp_path).list()] == ["real.csv"]


def test_open_storage_schemes(tmp_path) -> None:
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    with pytest.raises(StorageError, match="unsupported scheme"):
        open_storage("gs://bucket/x")
    with pytest.raises(StorageError, match="no bucket"):
        open_storage("s3:///x")


def test_s3_errors_name_the_uri(s3_endpoint: str) -> None:
    st = open_storage("s3://no-such-bucket-driftloop/x", endpoint_url=s3_endpoint)
    with pytest.raises(StorageError, match="s3://no-such-bucket-driftloop/x"):
        st.list()


def _tree(st: LocalStorage) -> dict[str, bytes]:
    return {o.key: st.read_bytes(o.key) for o in st.list()}


def test_mirror_copies_only_what_changed_and_removes_what_is_gone(lake: Lake, tmp_path) -> None:
    src = lake.zone("features")
    mirror = LocalStorage(tmp_path / "mirror")
    for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
        src.write_bytes(f"t/date={day}/part-00000.parquet", day.encode())
    src.write_bytes("_manifests/t.json", b"{}")

    first = mirror_to_local(src, mirror)
    assert first.copied == [o.key for o in src.list()] and first.deleted == []
    assert _tree(mirror) == {o.key: src.read_bytes(o.key) for o in src.list()}
    state = read_json(mirror, MIRROR_STATE)  # the source etags, not the copies' own
    assert state == {o.key: o.etag for o in src.list()}

    # unchanged source: nothing read or written (the copies keep their mtimes)
    stamps = {o.key: o.etag for o in mirror.list()}
    again = mirror_to_local(src, mirror)
    assert (again.copied, again.deleted, again.unchanged, again.changed) == ([], [], 4, False)
    assert {o.key: o.etag for o in mirror.list()} == stamps

    # one partition rewritten, one new, one deleted
    src.write_bytes("t/date=2026-01-02/part-00000.parquet", b"rebuilt")
    src.write_bytes("t/date=2026-01-04/part-00000.parquet", b"new day")
    src.delete("t/date=2026-01-01/part-00000.parquet")
    third = mirror_to_local(src, mirror)
    assert third.copied == [
        "t/date=2026-01-02/part-00000.parquet",
        "t/date=2026-01-04/part-00000.parquet",
    ]
    assert third.deleted == ["t/date=2026-01-01/part-00000.parquet"] and third.unchanged == 2
    assert _tree(mirror) == {o.key: src.read_bytes(o.key) for o in src.list()}
    assert not (tmp_path / "mirror" / "t" / "date=2026-01-01").exists()  # no empty folders left
    assert read_json(mirror, MIRROR_STATE) == {o.key: o.etag for o in src.list()}

    # a copy lost or tampered with locally is restored; a stray local file is removed
    mirror.delete("t/date=2026-01-03/part-00000.parquet")
    mirror.write_bytes("t/date=2026-01-09/part-00000.parquet", b"stray")
    fourth = mirror_to_local(src, mirror)
    assert fourth.copied == ["t/date=2026-01-03/part-00000.parquet"]
    assert fourth.deleted == ["t/date=2026-01-09/part-00000.parquet"]
    assert _tree(mirror) == {o.key: src.read_bytes(o.key) for o in src.list()}

    # the source emptied: so is the mirror
    before = sorted(_tree(mirror))
    for info in src.list():
        src.delete(info.key)
    assert mirror_to_local(src, mirror).deleted == before
    assert _tree(mirror) == {} and read_json(mirror, MIRROR_STATE) == {}


def test_concurrent_mirrors_of_one_folder_agree(lake: Lake, tmp_path) -> None:
    src = lake.zone("features")
    for i in range(12):
        src.write_bytes(f"t/date=2026-01-{i + 1:02d}/part-00000.parquet", bytes([i]) * 100)
    mirror = LocalStorage(tmp_path / "mirror")
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(mirror_to_local(src, mirror)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # serialised by the lock: exactly one sync copied everything, the others found it done
    assert sorted(len(r.copied) for r in results) == [0, 0, 12]
    assert _tree(mirror) == {o.key: src.read_bytes(o.key) for o in src.list()}


# ---- what a local lake lists and opens ---------------------------------------------------------


def test_only_regular_files_inside_the_root_are_objects(tmp_path: Path) -> None:
    import os

    from tasks.storage import LocalStorage, NotRegularFile, ObjectTooLarge

    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    root = tmp_path / "zone"
    store = LocalStorage(root)
    store.write_bytes("a/good.csv", b"x,y\n1,2\n")
    os.mkfifo(root / "a" / "pipe.csv")
    (root / "a" / "out.csv").symlink_to(outside)
    (root / "a" / "in.csv").symlink_to(root / "a" / "good.csv")
    (root / "a" / "zero.csv").symlink_to("/dev/zero")
    (root / "a" / ".hidden.csv").write_bytes(b"h")

    assert [o.key for o in store.list()] == ["a/good.csv", "a/in.csv"]
    every = {o.key: o.ignored for o in store.list(everything=True)}
    assert every == {
        "a/.hidden.csv": "hidden file name (starts with '.')",
        "a/good.csv": "",
        "a/in.csv": "",
        "a/out.csv": "symbolic link to a file outside the lake (not followed)",
        "a/pipe.csv": "not a regular file (named pipe)",
        "a/zero.csv": "symbolic link to a file outside the lake (not followed)",
    }
    assert store.read_bytes("a/in.csv") == b"x,y\n1,2\n"
    for key in ("a/out.csv", "a/pipe.csv", "a/zero.csv"):  # the FIFO does not block
        with pytest.raises(NotRegularFile):
            store.read_bytes(key)
    with pytest.raises(ObjectTooLarge):
        store.read_bytes("a/good.csv", max_bytes=4)
    assert store.read_bytes("a/good.csv", max_bytes=8) == b"x,y\n1,2\n"


def test_the_stat_fingerprint_changes_when_size_and_mtime_are_kept(tmp_path: Path) -> None:
    import os

    from tasks.storage import LocalStorage

    store = LocalStorage(tmp_path)
    first = store.write_bytes("f.csv", b"aaaa")
    st = (tmp_path / "f.csv").stat()
    (tmp_path / "f.csv").write_bytes(b"bbbb")
    os.utime(tmp_path / "f.csv", ns=(st.st_atime_ns, st.st_mtime_ns))
    second = store.info("f.csv")
    assert (second.size, second.modified) == (first.size, first.modified)
    assert second.etag != first.etag


def test_sweep_removes_only_dead_writers_temporary_files(tmp_path: Path) -> None:
    import os
    import subprocess

    from tasks.storage import LocalStorage, sweep_debris

    store = LocalStorage(tmp_path)
    store.write_bytes("z/kept.parquet", b"data")
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / "z" / f".kept.parquet.tmp-{gone.pid}-abc"
    alive = tmp_path / "z" / f".other.parquet.tmp-{os.getpid()}-abc"
    old = tmp_path / "z" / ".legacy.tmp-0123456789abcdef0123456789abcdef"
    young = tmp_path / "z" / ".young.tmp-fedcba9876543210fedcba9876543210"
    for p in (dead, alive, old, young):
        p.write_bytes(b"half")
    os.utime(old, (0, 0))
    assert sweep_debris(store) == sorted([f"z/{dead.name}", f"z/{old.name}"])
    assert sorted(p.name for p in (tmp_path / "z").iterdir()) == sorted(
        ["kept.parquet", alive.name, young.name]
    )
