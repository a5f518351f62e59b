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
    ObjectInfo,
    Storage,
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
    split_rows,
    to_storage_types,
)

if TYPE_CHECKING:
    from driftloop.usecase import DatasetSpec, UseCase

Status = Literal["validated", "partial", "rejected"]
ETAG_DIR = "etag"
NO_DATASET = "no dataset of the use case claims this landing key"


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
    """Landed objects whose (key, etag) the ledger has not seen, oldest key first."""
    objects = landing.list()
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
            text = data.decode("utf-8")
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
    key: str, data: bytes, spec: DatasetSpec, usecase: UseCase, validator: Validator
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[int, list[str]]]:
    """Parse and validate one object: (raw, valid rows typed, quarantined raw rows, reasons).

    Raises :class:`RejectedFile` when the batch suite rejects the file.
    """
    raw = parse_object(key, data).reset_index(drop=True)
    failures = check_batch(validator, raw, usecase.suite(spec.batch_suite))
    if failures:
        raise RejectedFile("; ".join(failures))
    typed, reasons = cast_frame(raw, spec.columns)
    for idx, why in exact_duplicates(raw, spec.key).items():
        reasons.setdefault(idx, []).extend(why)
    split = split_rows(validator, typed, usecase.suite(spec.row_suite), reasons)
    valid = to_storage_types(typed.loc[split.valid_index], spec.columns)
    bad_idx = sorted(split.reasons)
    quarantined = raw.loc[bad_idx].copy()
    quarantined["_row"] = pd.Series(bad_idx, index=quarantined.index, dtype="int64")
    quarantined["_reason"] = ["; ".join(split.reasons[i]) for i in bad_idx]
    quarantined["_source_object"] = key
    return raw, valid, quarantined.reset_index(drop=True), split.reasons


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
    rows_total: int = 0
    valid: pd.DataFrame | None = None
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
) -> CheckedObject:
    """Read and validate one landed object version; writes nothing.

    ``known`` are the content hashes the ledger already holds for the key (see
    :meth:`Ledger.contents`): content seen before is not validated again. Pure apart from
    reading the landing zone, so it can run on any worker that sees the lake.
    """
    spec = usecase.dataset_for_key(obj.key)
    if obj.size > max_bytes:
        data = b""
        sha = f"size-{obj.size}-etag-{_safe_name(obj.etag)}"
    else:
        data = lake.landing.read_bytes(obj.key)
        sha = sha256_hex(data)
    checked = CheckedObject(key=obj.key, sha256=sha, dataset=spec.name if spec else None)
    if sha in known:
        checked.known = True
        return checked
    try:
        if spec is None:
            raise RejectedFile(NO_DATASET)
        if obj.size > max_bytes:
            raise RejectedFile(f"file too large ({obj.size} bytes > limit {max_bytes})")
        validator = validator or default_validator()
        raw, valid, quarantined, reasons = validate_object(obj.key, data, spec, usecase, validator)
    except RejectedFile as exc:
        checked.rejected = str(exc)
        checked.data = data
    else:
        checked.rows_total = len(raw)
        checked.valid, checked.quarantined, checked.reasons = valid, quarantined, reasons
    return checked


def record_object(
    lake: Lake, ledger: Ledger, usecase: UseCase, obj: ObjectInfo, checked: CheckedObject
) -> IngestOutcome | None:
    """Write what :func:`check_object` found: outputs, report, and the ledger record last.

    The single writer of the ledger. Returns None when the content was already ingested.
    """
    if checked.known or ledger.knows_content(obj.key, checked.sha256):
        # e.g. a touched file: same bytes, new mtime
        ledger.remember_etag(obj.key, obj.etag, checked.sha256)
        return None
    previous = ledger.latest(obj.key)
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
    if checked.rejected is not None or spec is None:
        outcome.reasons = [checked.rejected or NO_DATASET]
        outcome.outputs = _write_rejected(lake, obj.key, checked.data, outcome)
    else:
        valid = checked.valid if checked.valid is not None else pd.DataFrame()
        quarantined = checked.quarantined if checked.quarantined is not None else pd.DataFrame()
        sample = quarantined
        outcome.rows_total = checked.rows_total
        outcome.rows_valid = len(valid)
        outcome.rows_quarantined = len(quarantined)
        outcome.status = "validated" if quarantined.empty else "partial"
        outcome.reason_counts = _count_reasons(checked.reasons)
        outcome.outputs, outcome.partitions = _write_rows(lake, spec, obj.key, valid, quarantined)
    outcome.processed_at = datetime.now(tz=UTC).isoformat()
    if previous is not None:
        _retire_outputs(lake, stale=set(previous.get("outputs", [])) - set(outcome.outputs))
    write_object_report(lake, outcome, sample)
    ledger.record(outcome)
    return outcome


def ingest_object(
    lake: Lake,
    ledger: Ledger,
    usecase: UseCase,
    obj: ObjectInfo,
    *,
    max_bytes: int,
    validator: Validator | None = None,
) -> IngestOutcome | None:
    """Ingest one landed object version. Returns None when its content was already ingested.

    :func:`check_object` then :func:`record_object`, in this process.
    """
    checked = check_object(
        lake,
        usecase,
        obj,
        max_bytes=max_bytes,
        known=ledger.contents(obj.key),
        validator=validator,
    )
    return record_object(lake, ledger, usecase, obj, checked)


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
        "event": REJECTED_EVENT if outcome.status == "rejected" else VALIDATED_EVENT,
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
            "reason": "; ".join(o.reasons)[:160]
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
        "accepted": sum(o.status != "rejected" for o in outcomes),
        "rejected": sum(o.status == "rejected" for o in outcomes),
        "rows_validated": sum(o.rows_valid for o in outcomes),
        "rows_quarantined": sum(o.rows_quarantined for o in outcomes),
    }


# ---- reading validated/ -------------------------------------------------------------------------


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
