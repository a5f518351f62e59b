"""Ingestion: landed objects → validated/ and quarantine/, exactly once per object content.

The **ledger** (``ledger/`` zone) keeps one JSON record per ingested object version, at
``ledger/<landing key>/<sha256>.json``, plus a marker ``ledger/<landing key>/etag/<etag>`` naming
the content hash an etag was seen with. One listing of ``ledger/`` therefore tells which
(key, etag) and (key, content) pairs are done, without reading any record.

Exactly-once: outputs are written first under deterministic names, the ledger record last. A run
that dies half-way leaves no record, so the object is picked up again and its outputs are
rewritten identically. The same content delivered again is a no-op; changed content under the
same key is a new version that replaces the previous version's outputs.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from tasks.storage import (
    Lake,
    NotRegularFile,
    ObjectInfo,
    ObjectTooLarge,
    Storage,
    StorageError,
    read_json,
    sha256_hex,
    write_json,
    write_parquet,
)
from tasks.validate import (
    Validator,
    cast_frame,
    check_batch,
    default_validator,
    exact_duplicates,
    implausible_dates,
    split_rows,
    to_storage_types,
)

if TYPE_CHECKING:
    from driftloop_config.usecase import DatasetSpec, UseCase

Status = Literal["validated", "partial", "rejected", "ignored"]
ETAG_DIR = "etag"
NO_DATASET = "no dataset of the use case claims this landing key"
DUPLICATE_KEY = "duplicate_key_in"  # reason: the row's key is already validated from another file


class RejectedFile(Exception):
    """The whole object is unusable; the message is the reason recorded in the ledger."""


@dataclass
class IngestOutcome:
    """What happened to one landed object version (also its ledger record)."""

    key: str
    sha256: str
    etag: str
    size: int
    dataset: str | None
    status: Status
    reasons: list[str] = field(default_factory=list)
    rows_total: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    partitions: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # keys relative to the lake root
    reason_counts: dict[str, int] = field(default_factory=dict)
    partition_rows: dict[str, int] = field(default_factory=dict)  # validated rows per partition
    kept_previous: bool = False  # rejected: the last good version's outputs stay in place
    processed_at: str = ""

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


# ---- ledger -------------------------------------------------------------------------------------


class Ledger:
    """Which landed object versions have been ingested (see module docstring for layout)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._contents: dict[str, set[str]] = {}
        self._etags: dict[str, dict[str, str]] = {}
        for info in storage.list():
            head, _, name = info.key.rpartition("/")
            if name.endswith(".json") and head:
                self._contents.setdefault(head, set()).add(name[: -len(".json")])
            elif head.endswith(f"/{ETAG_DIR}"):
                landing_key = head[: -len(ETAG_DIR) - 1]
                self._etags.setdefault(landing_key, {})[name] = ""

    def knows_etag(self, obj: ObjectInfo) -> bool:
        return _safe_name(obj.etag) in self._etags.get(obj.key, {})

    def knows_content(self, key: str, sha256: str) -> bool:
        return sha256 in self._contents.get(key, set())

    def landing_keys(self) -> list[str]:
        """Every landing key with at least one recorded version."""
        return sorted(self._contents)

    def contents(self, key: str) -> frozenset[str]:
        """The content hashes ingested under a landing key (a plain value for workers)."""
        return frozenset(self._contents.get(key, ()))

    def records(self, key: str) -> list[dict[str, Any]]:
        """Every recorded version of a landing key, oldest first."""
        recs = [read_json(self.storage, f"{key}/{sha}.json") for sha in self._contents.get(key, ())]
        return sorted(recs, key=lambda r: r["processed_at"])

    def latest(self, key: str) -> dict[str, Any] | None:
        recs = self.records(key)
        return recs[-1] if recs else None

    def live(self, key: str) -> dict[str, Any] | None:
        """The version of a key whose outputs are in validated/ now: the newest accepted one.

        A rejected or ignored delivery never replaces it (a broken re-send keeps the good data).
        """
        accepted = [r for r in self.records(key) if r["status"] in ("validated", "partial")]
        return accepted[-1] if accepted else None

    def remember_etag(self, key: str, etag: str, sha256: str) -> None:
        self.storage.write_bytes(f"{key}/{ETAG_DIR}/{_safe_name(etag)}", sha256.encode())
        self._etags.setdefault(key, {})[_safe_name(etag)] = sha256

    def record(self, outcome: IngestOutcome) -> None:
        write_json(self.storage, f"{outcome.key}/{outcome.sha256}.json", outcome.to_record())
        self._contents.setdefault(outcome.key, set()).add(outcome.sha256)
        self.remember_etag(outcome.key, outcome.etag, outcome.sha256)

    def all_records(self) -> list[dict[str, Any]]:
        return [r for key in sorted(self._contents) for r in self.records(key)]


def open_ledger(storage: Storage) -> Ledger:
    """Read the ledger's index (one listing)."""
    return Ledger(storage)


def _safe_name(etag: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in etag) or "none"


def find_pending(
    landing: Storage, ledger: Ledger, keys: list[str] | None = None
) -> list[ObjectInfo]:
    """Landed objects whose (key, etag) the ledger has not seen, by key.

    Everything in landing/ is listed, hidden names and special files included (marked
    :attr:`ObjectInfo.ignored`), so every landed object gets a ledger record.
    """
    objects = landing.list(everything=True)
    if keys is not None:
        wanted = {k.strip("/") for k in keys}
        objects = [o for o in objects if o.key in wanted]
    return [o for o in objects if not ledger.knows_etag(o)]


# ---- parsing ------------------------------------------------------------------------------------


def parse_object(key: str, data: bytes) -> pd.DataFrame:
    """Read a landed CSV or Parquet file as delivered (CSV values stay strings).

    Raises :class:`RejectedFile` when the file cannot be read at all.
    """
    if not data:
        raise RejectedFile("empty file (0 bytes)")
    lower = key.lower()
    if lower.endswith(".csv"):
        try:
            text = data.decode("utf-8-sig")  # a byte-order mark is not part of the header
        except UnicodeDecodeError as exc:
            raise RejectedFile(
                f"not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}"
            ) from None
        if not text.strip():
            raise RejectedFile("empty file (only whitespace)")
        try:
            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
            raise RejectedFile(f"unreadable CSV: {str(exc).strip()}") from None
    if lower.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(io.BytesIO(data)).to_pandas()
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise RejectedFile(f"unreadable Parquet: {str(exc).strip()}") from None
    raise RejectedFile("unsupported file type (expected .csv or .parquet)")


# ---- one object ---------------------------------------------------------------------------------


def output_name(spec: DatasetSpec, key: str) -> str:
    """File name for outputs derived from a landing key: unique per key, stable across runs."""
    rel = key[len(spec.landing_prefix) :] if key.startswith(spec.landing_prefix) else key
    return rel.replace("/", "__")


def validate_object(
    key: str,
    data: bytes,
    spec: DatasetSpec,
    usecase: UseCase,
    validator: Validator,
    today: date | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[int, list[str]]]:
    """Parse and validate one object: (raw, valid rows typed, quarantined raw rows, reasons).

    ``today`` anchors the dataset's date window (default: today's date, UTC).
    Raises :class:`RejectedFile` when the batch suite rejects the file.
    """
    raw = parse_object(key, data).reset_index(drop=True)
    failures = check_batch(validator, raw, usecase.suite(spec.batch_suite))
    if failures:
        raise RejectedFile("; ".join(failures))
    typed, reasons = cast_frame(raw, spec.columns)
    today = today or datetime.now(tz=UTC).date()
    dated = implausible_dates(typed, spec.columns, spec.partition_by, spec.date_window, today)
    for idx, why in dated.items():
        reasons.setdefault(idx, []).extend(why)
    for idx, why in exact_duplicates(raw, spec.key).items():
        reasons.setdefault(idx, []).extend(why)
    split = split_rows(validator, typed, usecase.suite(spec.row_suite), reasons)
    valid = to_storage_types(typed.loc[split.valid_index], spec.columns)
    valid["_row"] = pd.Series(split.valid_index.to_numpy(), dtype="int64")
    return raw, valid, quarantine_frame(raw, split.reasons, key), split.reasons


def quarantine_frame(raw: pd.DataFrame, reasons: dict[int, list[str]], key: str) -> pd.DataFrame:
    """Failing rows as delivered, with their row number, every reason, and their source."""
    bad_idx = sorted(reasons)
    quarantined = raw.loc[bad_idx].copy()
    quarantined["_row"] = pd.Series(bad_idx, index=quarantined.index, dtype="int64")
    quarantined["_reason"] = ["; ".join(reasons[i]) for i in bad_idx]
    quarantined["_source_object"] = key
    return quarantined.reset_index(drop=True)


@dataclass
class CheckedObject:
    """What reading and validating one landed object version found; nothing written yet.

    Made by :func:`check_object` (anywhere: a thread or a Dask worker), written by
    :func:`record_object` (in the one process that owns the ledger).
    """

    key: str
    sha256: str
    dataset: str | None
    known: bool = False  # this content of the key is already in the ledger
    rejected: str | None = None  # why the whole file is rejected
    data: bytes = b""  # a rejected file's bytes, kept in quarantine
    ignored: str | None = None  # why the object is not a delivery at all (never read)
    rows_total: int = 0
    raw: pd.DataFrame | None = None  # as delivered (rows may still move to quarantine)
    valid: pd.DataFrame | None = None  # typed, with ``_row``: the row number in ``raw``
    quarantined: pd.DataFrame | None = None
    reasons: dict[int, list[str]] = field(default_factory=dict)


def check_object(
    lake: Lake,
    usecase: UseCase,
    obj: ObjectInfo,
    *,
    max_bytes: int,
    known: frozenset[str] = frozenset(),
    validator: Validator | None = None,
    today: date | None = None,
) -> CheckedObject:
    """Read and validate one landed object version; writes nothing and never raises on data.

    ``known`` are the content hashes the ledger already holds for the key (see
    :meth:`Ledger.contents`): content seen before is not validated again. Whatever goes wrong
    with one object (bad bytes, a value no rule foresaw) makes it a rejected object with the
    reason; it never stops the objects after it. Pure apart from reading the landing zone, so
    it can run on any worker that sees the lake.
    """
    spec = usecase.dataset_for_key(obj.key)
    name = spec.name if spec else None
    unread = f"unread-{obj.size}-{_safe_name(obj.etag)}"  # identity of what is never read
    if obj.ignored:
        return CheckedObject(key=obj.key, sha256=unread, dataset=name, ignored=obj.ignored)
    if obj.size > max_bytes:
        return CheckedObject(
            key=obj.key,
            sha256=unread,
            dataset=name,
            rejected=f"file too large ({obj.size} bytes > limit {max_bytes})",
        )
    try:
        data = lake.landing.read_bytes(obj.key, max_bytes=max_bytes)
    except ObjectTooLarge:
        return CheckedObject(
            key=obj.key,
            sha256=unread,
            dataset=name,
            rejected=f"file too large (grew beyond the limit of {max_bytes} bytes while read)",
        )
    except NotRegularFile as exc:
        why = str(exc).rsplit(": ", 1)[-1]
        return CheckedObject(key=obj.key, sha256=unread, dataset=name, ignored=why)
    except StorageError as exc:  # e.g. gone between the listing and the read
        why = f"could not be read: {exc}"
        return CheckedObject(key=obj.key, sha256=unread, dataset=name, ignored=why)
    checked = CheckedObject(key=obj.key, sha256=sha256_hex(data), dataset=name)
    if checked.sha256 in known:
        checked.known = True
        return checked
    try:
        if spec is None:
            raise RejectedFile(NO_DATASET)
        validator = validator or default_validator()
        raw, valid, quarantined, reasons = validate_object(
            obj.key, data, spec, usecase, validator, today
        )
    except RejectedFile as exc:
        checked.rejected = str(exc)
        checked.data = data
    except Exception as exc:  # a poison pill must not stop the objects after it
        checked.rejected = f"could not be validated ({type(exc).__name__}: {exc})"
        checked.data = data
    else:
        checked.rows_total = len(raw)
        checked.raw = raw
        checked.valid, checked.quarantined, checked.reasons = valid, quarantined, reasons
    return checked


def record_object(
    lake: Lake, ledger: Ledger, usecase: UseCase, obj: ObjectInfo, checked: CheckedObject
) -> IngestOutcome | None:
    """Write what :func:`check_object` found: outputs, report, and the ledger record last.

    The single writer of the ledger. Returns None when the content was already ingested.
    A rejected delivery never removes the outputs of the key's last good version; an accepted
    one replaces them. Rows whose key is already validated from another landed object are
    quarantined (``duplicate_key_in(<other key>)``): the first delivery of a key wins, and a
    correction is a new version of the same landing key.
    """
    if checked.known or ledger.knows_content(obj.key, checked.sha256):
        # e.g. a touched file: same bytes, new mtime
        ledger.remember_etag(obj.key, obj.etag, checked.sha256)
        return None
    live = ledger.live(obj.key)
    outcome = IngestOutcome(
        key=obj.key,
        sha256=checked.sha256,
        etag=obj.etag,
        size=obj.size,
        dataset=checked.dataset,
        status="rejected",
    )
    sample: pd.DataFrame | None = None  # quarantined rows, shown in the report
    spec = usecase.dataset_for_key(obj.key)
    if checked.ignored is not None:
        outcome.status = "ignored"
        outcome.reasons = [checked.ignored]
    elif checked.rejected is not None or spec is None:
        outcome.reasons = [checked.rejected or NO_DATASET]
        outcome.outputs = _write_rejected(lake, obj.key, checked.data, outcome)
    else:
        valid = checked.valid if checked.valid is not None else pd.DataFrame()
        quarantined = checked.quarantined if checked.quarantined is not None else pd.DataFrame()
        reasons = dict(checked.reasons)
        valid, quarantined = _quarantine_cross_file_duplicates(
            lake, spec, obj.key, valid, quarantined, checked.raw, reasons
        )
        sample = quarantined
        outcome.rows_total = checked.rows_total
        outcome.rows_valid = len(valid)
        outcome.rows_quarantined = len(quarantined)
        outcome.status = "validated" if quarantined.empty else "partial"
        outcome.reason_counts = _count_reasons(reasons)
        outcome.outputs, outcome.partitions = _write_rows(lake, spec, obj.key, valid, quarantined)
        outcome.partition_rows = _partition_rows(valid, spec.partition_by)
    outcome.processed_at = datetime.now(tz=UTC).isoformat()
    if outcome.status in ("validated", "partial"):
        if live is not None:
            _retire_outputs(lake, stale=set(live.get("outputs", [])) - set(outcome.outputs))
    else:
        outcome.kept_previous = live is not None
    write_object_report(lake, outcome, sample)
    ledger.record(outcome)
    return outcome


def _partition_rows(valid: pd.DataFrame, part_col: str) -> dict[str, int]:
    if valid.empty:
        return {}
    counts = valid[part_col].dt.strftime("%Y-%m-%d").value_counts()
    return {str(day): int(n) for day, n in sorted(counts.items())}


def _quarantine_cross_file_duplicates(
    lake: Lake,
    spec: DatasetSpec,
    key: str,
    valid: pd.DataFrame,
    quarantined: pd.DataFrame,
    raw: pd.DataFrame | None,
    reasons: dict[int, list[str]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Move rows whose key another landed object already validated into quarantine.

    When the partition column is part of the key, only the same partitions can clash; else
    the whole dataset is compared. ``reasons`` gains the new reasons (by row number).
    """
    if valid.empty or raw is None:
        return valid, quarantined
    own = output_name(spec, key)
    days = None
    if spec.partition_by in spec.key:
        days = set(valid[spec.partition_by].dt.date)
    owners: list[pd.DataFrame] = []
    for day, objs in validated_partitions(lake, spec).items():
        if days is not None and day not in days:
            continue
        for info in objs:
            if info.key.rsplit("/", 1)[-1] == f"{own}.parquet":
                continue
            frame = read_parquet_columns(lake, info.key, spec.key)
            frame["_owner"] = info.key
            owners.append(frame)
    if not owners:
        return valid, quarantined
    seen = pd.concat(owners, ignore_index=True).drop_duplicates(spec.key)
    clash = valid[[*spec.key, "_row"]].merge(seen, on=spec.key, how="inner")
    if clash.empty:
        return valid, quarantined
    names = {o: _landing_key_of(lake, spec, o) for o in clash["_owner"].unique()}
    moved: dict[int, list[str]] = {}
    for row, owner in zip(clash["_row"], clash["_owner"], strict=True):
        moved.setdefault(int(row), []).append(f"{DUPLICATE_KEY}({names[owner]})")
    for row, why in moved.items():
        reasons.setdefault(row, []).extend(why)
    keep = ~valid["_row"].isin(list(moved))
    extra = quarantine_frame(raw, {r: reasons[r] for r in moved}, key)
    quarantined = pd.concat([quarantined, extra], ignore_index=True).sort_values("_row")
    return valid.loc[keep].reset_index(drop=True), quarantined.reset_index(drop=True)


def read_parquet_columns(lake: Lake, validated_key: str, columns: list[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    data = lake.validated.read_bytes(f"{validated_key}")
    return pq.read_table(io.BytesIO(data), columns=columns).to_pandas()


def _landing_key_of(lake: Lake, spec: DatasetSpec, validated_key: str) -> str:
    """The landing key a validated file came from (its name encodes it)."""
    stem = validated_key.rsplit("/", 1)[-1][: -len(".parquet")]
    return spec.landing_prefix + stem.replace("__", "/")


def report_key(landing_key: str, suffix: str) -> str:
    return f"validation/{landing_key}.{suffix}"


def write_object_report(
    lake: Lake, outcome: IngestOutcome, quarantined: pd.DataFrame | None
) -> None:
    """Validation summary (JSON) and readable report (HTML) for one object version."""
    from tasks.report import validation_page

    record = outcome.to_record()
    write_json(lake.reports, report_key(outcome.key, "json"), record)
    html = validation_page(record, quarantined)
    lake.reports.write_bytes(report_key(outcome.key, "html"), html.encode("utf-8"))


def write_index_report(lake: Lake, ledger: Ledger) -> str:
    """Regenerate ``reports/validation/index.html`` from the ledger; returns its key."""
    from tasks.report import validation_index_page

    records = ledger.all_records()
    links = {r["key"]: f"{r['key']}.html" for r in records}  # relative to validation/
    key = "validation/index.html"
    lake.reports.write_bytes(key, validation_index_page(records, links).encode("utf-8"))
    return key


def _count_reasons(reasons: dict[int, list[str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for why in reasons.values():
        for rule in why:
            counts[rule] = counts.get(rule, 0) + 1
    return dict(sorted(counts.items()))


def _write_rows(
    lake: Lake, spec: DatasetSpec, key: str, valid: pd.DataFrame, quarantined: pd.DataFrame
) -> tuple[list[str], list[str]]:
    name = output_name(spec, key)
    outputs, partitions = [], []
    part_col = spec.partition_by
    valid = valid.drop(columns=["_row"], errors="ignore")
    for day, rows in valid.groupby(valid[part_col].dt.strftime("%Y-%m-%d"), sort=True):
        out_key = f"{spec.name}/{part_col}={day}/{name}.parquet"
        write_parquet(lake.validated, out_key, rows.reset_index(drop=True))
        outputs.append(f"validated/{out_key}")
        partitions.append(str(day))
    if not quarantined.empty:
        q_key = f"rows/{spec.name}/{name}.parquet"
        write_parquet(lake.quarantine, q_key, _stringify_objects(quarantined))
        outputs.append(f"quarantine/{q_key}")
    return outputs, partitions


def _stringify_objects(df: pd.DataFrame) -> pd.DataFrame:
    """Mixed-type object columns (e.g. a bad value in a numeric Parquet column) as strings."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: None if v is None or v is pd.NA else str(v))
    return out


def _write_rejected(lake: Lake, key: str, data: bytes, outcome: IngestOutcome) -> list[str]:
    """Keep the rejected bytes (unless too large to copy) and the reason beside them."""
    base = f"files/{key}"
    outputs = []
    if data or outcome.size == 0:
        lake.quarantine.write_bytes(base, data)
        outputs.append(f"quarantine/{base}")
    reason = {"object": key, "sha256": outcome.sha256, "reasons": outcome.reasons}
    write_json(lake.quarantine, f"{base}.reason.json", reason)
    return [*outputs, f"quarantine/{base}.reason.json"]


def _retire_outputs(lake: Lake, stale: set[str]) -> None:
    """Remove outputs of a superseded version that the new version did not rewrite."""
    for full in sorted(stale):
        zone, _, rest = full.partition("/")
        lake.zone(zone).delete(rest)


# ---- what the flow publishes --------------------------------------------------------------------

VALIDATED_EVENT = "driftloop.data.validated"
REJECTED_EVENT = "driftloop.data.rejected"


def event_for(outcome: IngestOutcome, landing_uri: str) -> dict[str, Any]:
    """The Prefect event (name, resource, payload) announcing one ingested object."""
    return {
        "event": VALIDATED_EVENT if outcome.status in ("validated", "partial") else REJECTED_EVENT,
        "resource": {
            "prefect.resource.id": f"driftloop.object.{landing_uri}/{outcome.key}",
            "prefect.resource.name": outcome.key,
            "driftloop.dataset": outcome.dataset or "",
            "driftloop.sha256": outcome.sha256,
            "driftloop.status": outcome.status,
        },
        "payload": {
            "key": outcome.key,
            "dataset": outcome.dataset,
            "status": outcome.status,
            "rows_valid": outcome.rows_valid,
            "rows_quarantined": outcome.rows_quarantined,
            "partitions": outcome.partitions,
            "reasons": outcome.reasons,
        },
    }


def summary_rows(outcomes: list[IngestOutcome]) -> list[dict[str, Any]]:
    """One row per object for tables (CLI, Prefect artifact)."""
    return [
        {
            "object": o.key,
            "status": o.status,
            "rows": o.rows_total,
            "validated": o.rows_valid,
            "quarantined": o.rows_quarantined,
            "reason": "; ".join(o.reasons)
            or ", ".join(f"{short_rule(r)} x{n}" for r, n in o.reason_counts.items()),
        }
        for o in outcomes
    ]


def short_rule(rule: str) -> str:
    """``expect_column_values_to_be_between(minutes)`` → ``be_between(minutes)``."""
    for prefix in ("expect_column_values_to_", "expect_column_pair_values_", "expect_"):
        if rule.startswith(prefix):
            return rule[len(prefix) :]
    return rule


def totals(outcomes: list[IngestOutcome]) -> dict[str, int]:
    return {
        "objects": len(outcomes),
        "accepted": sum(o.status in ("validated", "partial") for o in outcomes),
        "rejected": sum(o.status == "rejected" for o in outcomes),
        "ignored": sum(o.status == "ignored" for o in outcomes),
        "rows_validated": sum(o.rows_valid for o in outcomes),
        "rows_quarantined": sum(o.rows_quarantined for o in outcomes),
    }


# ---- reading validated/ -------------------------------------------------------------------------


def newest_day(ledger: Ledger, usecase: UseCase) -> date | None:
    """The pipeline's "today": the newest day that some delivered file is mainly about.

    Each accepted object version counts with its main partition (the one holding most of its
    validated rows), so a few stray rows dated days ahead of their file never become the
    newest day. Only the live version of each landing key counts.
    """
    names = set(usecase.datasets)
    best: date | None = None
    for key in ledger.landing_keys():
        rec = ledger.live(key)
        if rec is None or rec.get("dataset") not in names:
            continue
        rows: dict[str, int] = rec.get("partition_rows") or {}
        if rows:
            main = max(sorted(rows), key=lambda d: rows[d])
        elif rec.get("partitions"):  # a record written before partition_rows existed
            main = max(rec["partitions"])
        else:
            continue
        day = date.fromisoformat(main)
        best = day if best is None or day > best else best
    return best


def validated_partitions(lake: Lake, spec: DatasetSpec) -> dict[date, list[ObjectInfo]]:
    """The validated files of a dataset by partition day (one listing)."""
    marker = f"{spec.partition_by}="
    out: dict[date, list[ObjectInfo]] = {}
    for info in lake.validated.list(spec.name):
        parts = info.key.split("/")
        if len(parts) != 3 or not parts[1].startswith(marker) or not parts[2].endswith(".parquet"):
            continue
        try:
            day = date.fromisoformat(parts[1][len(marker) :])
        except ValueError:
            continue  # not a partition folder of ours
        out.setdefault(day, []).append(info)
    return dict(sorted(out.items()))


def read_validated(
    lake: Lake,
    spec: DatasetSpec,
    *,
    first: date | None = None,
    last: date | None = None,
    columns: list[str] | None = None,
    partitions: dict[date, list[ObjectInfo]] | None = None,
) -> pd.DataFrame:
    """Validated rows of a dataset whose partition day is in ``[first, last]`` (typed)."""
    import pyarrow.parquet as pq

    parts = validated_partitions(lake, spec) if partitions is None else partitions
    frames = [
        pq.read_table(io.BytesIO(lake.validated.read_bytes(o.key)), columns=columns).to_pandas()
        for day, objs in parts.items()
        if (first is None or day >= first) and (last is None or day <= last)
        for o in objs
    ]
    frames = [f for f in frames if not f.empty]
    if not frames:
        cols = columns or list(spec.columns)
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    return pd.concat(frames, ignore_index=True)
