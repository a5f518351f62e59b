"""One small interface over the lake: ``file://`` folders and ``s3://`` buckets.

Keys are ``/``-separated paths relative to the storage's root. Writes are atomic: a reader sees
either the old object or the new one, never a partial file (temp file + rename locally, a single
PUT on S3). No other module talks to boto3 or the filesystem for lake data.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import stat
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from driftloop_config.settings import Settings

_TMP_MARK = ".tmp-"


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI."""


class ObjectTooLarge(StorageError):
    """A bounded read found more bytes than allowed."""


class NotRegularFile(StorageError):
    """The key names something that is not a regular file inside the storage (FIFO, device,
    socket, a symbolic link leading outside): it is never opened for reading."""


def ignored_name(name: str) -> str:
    """Why a file name is not a delivery ("" when it is one): hidden and temporary names."""
    if name.startswith("."):
        return "hidden file name (starts with '.')"
    if _TMP_MARK in name:
        return f"temporary file name (contains {_TMP_MARK!r})"
    return ""


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing tells about one object without reading it."""

    key: str
    size: int
    # S3 ETag; locally a stat fingerprint (size, mtime, ctime, inode): cheap, and it changes on
    # every write, even one that keeps size and mtime (``cp -p``, ``rsync -a``, ``touch -r``)
    etag: str
    modified: datetime
    # why the object must not be read, for listings that include everything (see ``list``):
    # a hidden or temporary name, or not a regular file inside the storage's root
    ignored: str = ""


class Storage(Protocol):
    uri: str

    def list(self, prefix: str = "", *, everything: bool = False) -> list[ObjectInfo]: ...
    def info(self, key: str) -> ObjectInfo: ...
    def exists(self, key: str) -> bool: ...
    def read_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> ObjectInfo: ...
    def delete(self, key: str) -> None: ...
    def child(self, prefix: str) -> Storage: ...


def _clean_key(key: str) -> str:
    key = key.strip("/")
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        raise StorageError(f"invalid object key {key!r}")
    return key


class LocalStorage:
    """A folder on disk.

    Only regular files inside the folder are objects: a symbolic link is followed only when its
    target is a regular file inside the same root, and FIFOs, devices and sockets are never
    opened (a listing with ``everything=True`` shows them with the reason they are ignored).
    Reads never block on a special file and can be bounded (``max_bytes``).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.uri = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    def list(self, prefix: str = "", *, everything: bool = False) -> list[ObjectInfo]:
        """Objects under ``prefix``, by key. Hidden/temporary names and anything that is not a
        regular file inside the root are left out, unless ``everything``: then they are listed
        with :attr:`ObjectInfo.ignored` saying why they must not be read."""
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root
        if not base.is_dir() or not self._inside(base.resolve()):
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(base):  # does not descend into dir symlinks
            dirnames.sort()
            names = sorted(filenames) + sorted(d for d in dirnames if Path(dirpath, d).is_symlink())
            for name in names:
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                info = self._stat_info(rel)
                if info.ignored and not everything:
                    continue
                out.append(info)
        return sorted(out, key=lambda o: o.key)

    def _inside(self, path: Path) -> bool:
        return path == self.root or self.root in path.parents

    def _why_not_readable(self, path: Path) -> str:
        """ "" for a regular file inside the root (directly or by a link); else the reason."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            return "does not exist"
        if stat.S_ISLNK(st.st_mode):
            target = path.resolve()
            if not self._inside(target):
                return "symbolic link to a file outside the lake (not followed)"
            try:
                st = target.stat()
            except OSError:
                return "broken symbolic link"
        if stat.S_ISREG(st.st_mode):
            return ""
        if stat.S_ISFIFO(st.st_mode):
            return "not a regular file (named pipe)"
        if stat.S_ISDIR(st.st_mode):
            return "not a regular file (directory link)"
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            return "not a regular file (device)"
        if stat.S_ISSOCK(st.st_mode):
            return "not a regular file (socket)"
        return "not a regular file"

    def _stat_info(self, key: str) -> ObjectInfo:
        path = self._path(key)
        why = ignored_name(path.name) or self._why_not_readable(path)
        try:
            st = path.stat() if not why else path.lstat()
        except FileNotFoundError:
            raise StorageError(f"{self.uri}/{key} does not exist") from None
        return ObjectInfo(
            key=_clean_key(key),
            size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
            etag=f"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ctime_ns:x}-{st.st_ino:x}",
            modified=datetime.fromtimestamp(st.st_mtime, tz=UTC),
            ignored=why,
        )

    def info(self, key: str) -> ObjectInfo:
        return self._stat_info(key)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        return path.exists() and not self._why_not_readable(path)

    def read_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes. Raises :class:`NotRegularFile` for anything but a regular file
        inside the root (without blocking on a FIFO) and :class:`ObjectTooLarge` when more than
        ``max_bytes`` are there."""
        path = self._path(key)
        why = self._why_not_readable(path)
        if why == "does not exist":
            raise StorageError(f"{self.uri}/{key} does not exist")
        if why:
            raise NotRegularFile(f"{self.uri}/{key}: {why}")
        real = path.resolve()
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StorageError(f"{self.uri}/{key} does not exist") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotRegularFile(f"{self.uri}/{key}: symbolic link changed") from None
            raise StorageError(f"{self.uri}/{key}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped after the check
                raise NotRegularFile(f"{self.uri}/{key}: not a regular file")
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        if max_bytes is not None and len(data) > max_bytes:
            raise ObjectTooLarge(f"{self.uri}/{key}: more than {max_bytes} bytes")
        return data

    def write_bytes(self, key: str, data: bytes) -> ObjectInfo:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # the writer's PID in the name lets a later run tell a dead writer's leftover
        tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return self.info(key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def child(self, prefix: str) -> LocalStorage:
        return LocalStorage(self.root / _clean_key(prefix))

    def local_path(self, key: str) -> Path:
        """Filesystem path of a key (for tools that need a path, e.g. DuckDB)."""
        return self._path(key)

    def sweep_temp(self, *, stale_after: float = 3600.0) -> builtins.list[str]:
        """Remove temporary files left by writers that died (e.g. killed mid-write).

        A temporary file is removed when the process that wrote it is gone (its PID is in the
        name) or, for names without a PID, when it is older than ``stale_after`` seconds.
        Returns the removed keys.
        """
        import time

        removed: builtins.list[str] = []
        if not self.root.is_dir():
            return removed
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if _TMP_MARK not in name or not name.startswith("."):
                    continue
                path = Path(dirpath, name)
                owner = name.rsplit(_TMP_MARK, 1)[1].split("-", 1)[0]
                if owner.isdigit() and len(owner) < 10:
                    stale = not Path(f"/proc/{owner}").exists()
                else:
                    try:
                        stale = time.time() - path.lstat().st_mtime > stale_after
                    except FileNotFoundError:
                        continue
                if stale:
                    path.unlink(missing_ok=True)
                    removed.append(path.relative_to(self.root).as_posix())
        return sorted(removed)


class S3Storage:
    """A bucket and prefix on S3 or an S3-compatible endpoint, through boto3."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        if client is None:
            import boto3

            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region
            )
        self._s3 = client

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (e.g. sent to a Dask worker): the boto3 client stays behind."""
        return {**self.__dict__, "_s3": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import boto3

        self.__dict__.update(state)
        self._s3 = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region
        )

    def _full(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _wrap(self, exc: Exception, key: str) -> StorageError:
        return StorageError(f"{self.uri}/{key}: {exc}")

    def list(self, prefix: str = "", *, everything: bool = False) -> list[ObjectInfo]:
        """Objects under ``prefix``; hidden/temporary names only with ``everything`` (marked
        :attr:`ObjectInfo.ignored`)."""
        from botocore.exceptions import BotoCoreError, ClientError

        base = "/".join(p for p in (self.prefix, prefix.strip("/")) if p)
        base = f"{base}/" if base else ""
        out = []
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    rel = self._rel(obj["Key"])
                    why = ignored_name(rel.rsplit("/", 1)[-1])
                    if (why and not everything) or rel.endswith("/"):
                        continue
                    out.append(
                        ObjectInfo(
                            key=rel,
                            size=int(obj["Size"]),
                            etag=str(obj["ETag"]).strip('"'),
                            modified=obj["LastModified"],
                            ignored=why,
                        )
                    )
        except (BotoCoreError, ClientError) as exc:
            raise self._wrap(exc, prefix) from exc
        return sorted(out, key=lambda o: o.key)

    def info(self, key: str) -> ObjectInfo:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise StorageError(f"{self.uri}/{key} does not exist") from None
            raise self._wrap(exc, key) from exc
        except BotoCoreError as exc:
            raise self._wrap(exc, key) from exc
        return ObjectInfo(
            key=_clean_key(key),
            size=int(head["ContentLength"]),
            etag=str(head["ETag"]).strip('"'),
            modified=head["LastModified"],
        )

    def exists(self, key: str) -> bool:
        try:
            self.info(key)
        except StorageError as exc:
            if "does not exist" in str(exc):
                return False
            raise
        return True

    def read_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            stream = self._s3.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
            body: bytes = stream.read() if max_bytes is None else stream.read(max_bytes + 1)
            if max_bytes is not None and len(body) > max_bytes:
                stream.close()
                raise ObjectTooLarge(f"{self.uri}/{key}: more than {max_bytes} bytes")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise StorageError(f"{self.uri}/{key} does not exist") from None
            raise self._wrap(exc, key) from exc
        except BotoCoreError as exc:
            raise self._wrap(exc, key) from exc
        return body

    def write_bytes(self, key: str, data: bytes) -> ObjectInfo:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self._s3.put_object(Bucket=self.bucket, Key=self._full(key), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._wrap(exc, key) from exc
        return ObjectInfo(
            key=_clean_key(key),
            size=len(data),
            etag=str(resp.get("ETag", "")).strip('"'),
            modified=datetime.now(tz=UTC),
        )

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._s3.delete_object(Bucket=self.bucket, Key=self._full(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._wrap(exc, key) from exc

    def child(self, prefix: str) -> S3Storage:
        sub = "/".join(p for p in (self.prefix, _clean_key(prefix)) if p)
        return S3Storage(
            self.bucket, sub, endpoint_url=self.endpoint_url, region=self.region, client=self._s3
        )


def open_storage(
    uri: str, *, endpoint_url: str | None = None, region: str = "us-east-1"
) -> Storage:
    """A storage for ``file:///abs/path`` or ``s3://bucket/prefix``."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise StorageError(f"{uri}: no bucket")
        return S3Storage(bucket, prefix, endpoint_url=endpoint_url, region=region)
    if uri.startswith("file://"):
        return LocalStorage(uri[len("file://") :])
    raise StorageError(f"{uri}: unsupported scheme (use file:// or s3://)")


@dataclass(frozen=True)
class Lake:
    """The zones of the data lake, each as a :class:`Storage`."""

    root: Storage

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        return cls(
            open_storage(
                settings.data_root,
                endpoint_url=settings.aws_endpoint_url,
                region=settings.aws_region,
            )
        )

    def zone(self, name: str) -> Storage:
        return self.root.child(name)

    @property
    def landing(self) -> Storage:
        return self.zone("landing")

    @property
    def validated(self) -> Storage:
        return self.zone("validated")

    @property
    def quarantine(self) -> Storage:
        return self.zone("quarantine")

    @property
    def ledger(self) -> Storage:
        return self.zone("ledger")

    @property
    def reports(self) -> Storage:
        return self.zone("reports")


def sweep_debris(storage: Storage) -> list[str]:
    """Remove the temporary files of writers that died under ``storage`` (see
    :meth:`LocalStorage.sweep_temp`); S3 writes are single PUTs and leave none."""
    return storage.sweep_temp() if isinstance(storage, LocalStorage) else []


MIRROR_STATE = ".mirror-state.json"  # in the mirror's root: the source etag of every copy
MIRROR_LOCK = ".mirror.lock"


@dataclass(frozen=True)
class MirrorResult:
    """What one :func:`mirror_to_local` did."""

    copied: list[str]  # new or changed objects (by etag), copied
    deleted: list[str]  # gone from the source, removed from the mirror
    unchanged: int

    @property
    def changed(self) -> bool:
        return bool(self.copied or self.deleted)


def mirror_to_local(
    source: Storage, target: LocalStorage, *, timeout: float = 600.0
) -> MirrorResult:
    """Make the folder ``target`` a copy of everything under ``source``, incrementally.

    Only objects that are new or whose etag changed since the last sync are read and copied;
    objects gone from the source are removed from the mirror (and empty folders with them).
    The source etag of every copy is kept in the mirror's ``.mirror-state.json`` (a local
    copy's own etag is a size+mtime fingerprint, not comparable with an S3 ETag), so a sync of
    an unchanged source lists it once and reads nothing. Every copy is written atomically;
    concurrent syncs of the same mirror are serialised by a lock file next to it. A sync that
    dies half-way is completed by the next one.
    """
    from filelock import FileLock

    target.root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.root / MIRROR_LOCK), timeout=timeout):
        state_path = target.root / MIRROR_STATE
        try:
            state: dict[str, str] = json.loads(state_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            state = {}
        listing = {info.key: info.etag for info in source.list()}
        present = {info.key for info in target.list()}
        copied = sorted(
            k for k, etag in listing.items() if state.get(k) != etag or k not in present
        )
        deleted = sorted((present | set(state)) - set(listing))
        for key in copied:
            target.write_bytes(key, source.read_bytes(key))
            state[key] = listing[key]
        for key in deleted:
            target.delete(key)
            state.pop(key, None)
        if copied or deleted or set(state) != set(listing):
            write_json(target, MIRROR_STATE, dict(sorted(state.items())))
        for key in deleted:  # folders left empty by the deletions
            folder = target.local_path(key).parent
            while folder != target.root and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent
    return MirrorResult(copied=copied, deleted=deleted, unchanged=len(listing) - len(copied))


# ---- content helpers shared by every stage --------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_json(storage: Storage, key: str, obj: Any) -> ObjectInfo:
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8")
    return storage.write_bytes(key, data)


def read_json(storage: Storage, key: str) -> Any:
    return json.loads(storage.read_bytes(key))


def write_parquet(storage: Storage, key: str, df: pd.DataFrame) -> ObjectInfo:
    """Write a frame as Parquet, atomically, with deterministic bytes for the same frame."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return storage.write_bytes(key, buf.getvalue())


def read_parquet(storage: Storage, key: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(storage.read_bytes(key))).to_pandas()
