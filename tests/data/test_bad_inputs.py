"""A corpus of bad landed input, ingested by the real ingest flow.

Every kind below lands in one landing zone next to good days. What a correct run produces:
nothing crashes or hangs; every landed object (hidden names, FIFOs and links included) has a
ledger record with the status and reason named here; for every accepted file validated +
quarantined = delivered, row for row; validated/ holds exactly the rows of the accepted files'
live versions; nothing outside the lake is read; a second run has nothing to do.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftloop.simulate import USAGE_COLUMNS
from driftloop_config.settings import Settings
from flows.ingest import IngestParams, ingest_flow
from tasks.ingest import open_ledger
from tasks.storage import Lake, read_parquet
from tests.helpers import to_csv, to_parquet, usage_rows

pytestmark = pytest.mark.usefixtures("prefect_harness")

SECRET = b"driftloop-test-secret-outside-the-lake\n"
N = 6  # rows of every generated usage file


@dataclass(frozen=True)
class Case:
    key: str
    status: str  # validated | partial | rejected | ignored
    reason: str = ""  # a substring of the first reason (file level) or a row reason
    bad_rows: int = 0  # quarantined rows (accepted files)


def csv_text(df: pd.DataFrame) -> str:
    return to_csv(df).decode("utf-8")


def day(i: int) -> str:
    return f"2026-02-{i:02d}"


def rows(i: int, n: int = N) -> pd.DataFrame:
    return usage_rows(n, day(i), start=1000 * i).astype(str)


def with_cell(i: int, column: str, value: str, row: int = 1) -> bytes:
    df = rows(i)
    df.loc[row, column] = value
    return to_csv(df)


# Each builder returns the bytes to land (or None when it makes the object itself).
def corpus(landing: Path, outside: Path) -> tuple[list[Case], dict[str, bytes]]:
    files: dict[str, bytes] = {}
    cases: list[Case] = []

    def add(case: Case, data: bytes | None = None) -> None:
        cases.append(case)
        if data is not None:
            files[case.key] = data

    u = "usage/"
    # ---- whole files that cannot be read or fail the batch suite -------------------------
    add(Case(f"{u}{day(1)}.csv", "rejected", "empty file (0 bytes)"), b"")
    add(Case(f"{u}{day(2)}.csv", "rejected", "empty file (only whitespace)"), b"  \n\n\t\n")
    add(
        Case(f"{u}{day(3)}.csv", "rejected", "not valid UTF-8"),
        csv_text(rows(3)).replace("north", "n\u00f6rth").encode("latin-1"),
    )
    add(Case(f"{u}{day(4)}.csv", "rejected", "not valid UTF-8"), csv_text(rows(4)).encode("utf-16"))
    add(Case(f"{u}{day(5)}.csv", "rejected", "not valid UTF-8"), gzip.compress(to_csv(rows(5))))
    add(
        Case(f"{u}{day(6)}.csv", "rejected", "expect_table_row_count_to_be_between"),
        (",".join(USAGE_COLUMNS) + "\n").encode(),
    )
    add(
        Case(f"{u}{day(7)}.csv", "rejected", "expect_table_columns_to_match_set"),
        csv_text(rows(7)).replace(",", ";").encode(),
    )
    add(
        Case(f"{u}{day(8)}.csv", "rejected", "expect_table_columns_to_match_set"),
        csv_text(rows(8)).replace(",", "\t").encode(),
    )
    add(
        Case(f"{u}{day(9)}.csv", "rejected", "expect_table_columns_to_match_set"),
        to_csv(rows(9).drop(columns=["minutes"])),
    )
    add(
        Case(f"{u}{day(10)}.csv", "rejected", "expect_table_columns_to_match_set"),
        to_csv(rows(10).assign(extra="x")),
    )
    dup_header = csv_text(rows(11)).replace("plan,", "customer_id,", 1)
    add(
        Case(f"{u}{day(11)}.csv", "rejected", "expect_table_columns_to_match_set"),
        dup_header.encode(),
    )
    add(
        Case(f"{u}{day(12)}.csv", "rejected", "expect_table_columns_to_match_set"),
        csv_text(rows(12)).replace("customer_id", "Customer_ID", 1).encode(),
    )
    wide = pd.concat([rows(13), pd.DataFrame({f"c{j}": ["1"] * N for j in range(1500)})], axis=1)
    add(Case(f"{u}{day(13)}.csv", "rejected", "expect_table_columns_to_match_set"), to_csv(wide))
    add(Case(f"{u}{day(14)}.parquet", "rejected", "unreadable Parquet"), to_parquet(rows(14))[:-40])
    add(Case(f"{u}{day(15)}.json", "rejected", "unsupported file type"), b'{"a": 1}')
    add(
        Case(f"{u}{day(16)}.csv", "rejected", "unreadable CSV"),
        csv_text(rows(16)).rstrip("\n").encode() + b',"unterminated\n',
    )
    ragged = csv_text(rows(17)).splitlines()
    ragged[3] += ",surplus"
    add(Case(f"{u}{day(17)}.csv", "rejected", "unreadable CSV"), "\n".join(ragged).encode())
    add(Case(f"{u}{day(18)}.csv", "rejected", "file too large"), to_csv(rows(18, 40000)))
    add(Case("stray/notes.csv", "rejected", "no dataset of the use case"), b"a\n1\n")
    # ---- single bad cells: the row is quarantined with the reason, the file goes on ------
    add(
        Case(f"{u}{day(19)}.csv", "partial", "wrong_type(tenure_months)", 1),
        with_cell(19, "tenure_months", "12.000001"),
    )
    add(
        Case(f"{u}{day(20)}.csv", "partial", "wrong_type(tenure_months)", 1),
        with_cell(20, "tenure_months", "99999999999999999999999"),
    )
    add(
        Case(f"{u}{day(21)}.csv", "partial", "wrong_type(minutes)", 1),
        with_cell(21, "minutes", "inf"),
    )
    add(
        Case(f"{u}{day(22)}.csv", "partial", "wrong_type(minutes)", 1),
        with_cell(22, "minutes", "NaN"),
    )
    mixed_tz = rows(23)
    mixed_tz.loc[1, "date"] = f"{day(23)}T08:00:00+05:00"
    mixed_tz.loc[2, "date"] = f"{day(23)}T08:00:00-03:00"
    mixed_tz.loc[3, "date"] = f"{day(23)}T08:00:00"
    add(Case(f"{u}{day(23)}.csv", "validated"), to_csv(mixed_tz))
    add(
        Case(f"{u}{day(24)}.csv", "partial", "implausible_date(date)", 1),
        with_cell(24, "date", "2199-12-31"),
    )
    add(
        Case(f"{u}{day(25)}.csv", "partial", "implausible_date(date)", 1),
        with_cell(25, "date", "1901-01-01"),
    )
    add(
        Case(f"{u}{day(26)}.csv", "partial", "wrong_type(date)", 1),
        with_cell(26, "date", "9999-12-31"),
    )
    add(
        Case(f"{u}{day(27)}.csv", "partial", "wrong_type(date)", 1),
        with_cell(27, "date", "31/02/2026"),
    )
    add(
        Case(f"{u}{day(28)}.csv", "partial", "expect_column_values_to_match_regex(customer_id)", 1),
        with_cell(28, "customer_id", "C0028001\n"),
    )
    add(
        Case(
            f"{u}{day(1)}-b.csv", "partial", "expect_column_values_to_match_regex(customer_id)", 1
        ),
        to_csv(
            rows(1)
            .assign(customer_id=[f"C{9100 + k:07d}" for k in range(N)])
            .pipe(lambda d: d.assign(customer_id=d.customer_id.where(d.index != 2, " C0009102")))
        ),
    )
    add(
        Case(f"{u}{day(2)}-b.csv", "partial", "expect_column_values_to_be_in_set(plan)", 1),
        to_csv(
            rows(2, N)
            .assign(customer_id=[f"C{9200 + k:07d}" for k in range(N)])
            .pipe(lambda d: d.assign(plan=d.plan.where(d.index != 0, "x" * 1_000_000)))
        ),
    )
    add(
        Case(f"{u}{day(3)}-b.csv", "partial", "expect_column_values_to_be_in_set(region)", 1),
        to_csv(
            rows(3)
            .assign(customer_id=[f"C{9300 + k:07d}" for k in range(N)])
            .pipe(lambda d: d.assign(region=d.region.where(d.index != 4, "north\nsouth")))
        ),
    )
    add(
        Case(f"{u}{day(4)}-b.csv", "validated"),
        b"\xef\xbb\xbf"
        + to_csv(rows(4).assign(customer_id=[f"C{9400 + k:07d}" for k in range(N)])),
    )
    add(
        Case(f"{u}{day(5)}-b.csv", "validated"),
        csv_text(rows(5).assign(customer_id=[f"C{9500 + k:07d}" for k in range(N)]))
        .replace("\n", "\r\n")
        .encode(),
    )
    exact = rows(6).assign(customer_id=[f"C{9600 + k:07d}" for k in range(N)])
    add(
        Case(f"{u}{day(6)}-b.csv", "partial", "duplicate_row", 1),
        to_csv(pd.concat([exact, exact.iloc[[0]]])),
    )
    clash = rows(7).assign(customer_id=[f"C{9700 + k:07d}" for k in range(N)])
    clash2 = clash.iloc[[0]].assign(minutes="99.0")
    add(
        Case(
            f"{u}{day(7)}-b.csv",
            "partial",
            "expect_compound_columns_to_be_unique(customer_id,date)",
            2,
        ),
        to_csv(pd.concat([clash, clash2])),
    )
    add(
        Case(f"{u}{day(8)}-b.csv", "partial", "expect_column_values_to_be_between(minutes)", 1),
        to_csv(
            rows(8)
            .assign(customer_id=[f"C{9800 + k:07d}" for k in range(N)])
            .pipe(lambda d: d.assign(minutes=d.minutes.where(d.index != 3, "-5")))
        ),
    )
    nested = pa.table(
        {c: pa.array(rows(29)[c].tolist()) for c in USAGE_COLUMNS if c != "minutes"}
        | {"minutes": pa.array([[1.0, 2.0]] * N, type=pa.list_(pa.float64()))}
    ).select(USAGE_COLUMNS)
    buf = io.BytesIO()
    pq.write_table(nested, buf)
    add(Case(f"{u}{day(29)}.parquet", "partial", "wrong_type(minutes)", N), buf.getvalue())
    add(
        Case("labels/2026-02-10.csv", "partial", "implausible_date(reported_date)", 1),
        b"customer_id,churn_date,reported_date\nC0001001,2026-02-01,2026-02-10\nC0001002,2026-02-02,2030-01-01\n",
    )
    # ---- names and special files: recorded, never read -----------------------------------
    add(Case(f"{u}.{day(9)}-hidden.csv", "ignored", "hidden file name"), to_csv(rows(9)))
    add(Case(f"{u}{day(10)}.csv.tmp-upload", "ignored", "temporary file name"), to_csv(rows(10)))
    os.mkfifo(landing / "usage" / "pipe.csv")
    add(Case(f"{u}pipe.csv", "ignored", "named pipe"))
    (landing / "usage" / "zero.csv").symlink_to("/dev/zero")
    add(Case(f"{u}zero.csv", "ignored", "outside the lake"))
    (landing / "usage" / "secret.csv").symlink_to(outside)
    add(Case(f"{u}secret.csv", "ignored", "outside the lake"))
    (landing / "usage" / "dir-link").symlink_to(landing.parent.parent, target_is_directory=True)
    add(Case(f"{u}dir-link", "ignored", "outside the lake"))
    # a link inside landing to a good file: followed, and its rows clash with the original's
    (landing / "usage" / "again.csv").symlink_to(landing / "usage" / f"{day(11)}-good.csv")
    add(Case(f"{u}again.csv", "partial", f"duplicate_key_in(usage/{day(11)}-good.csv)", N))
    add(Case(f"{u}{day(11)}-good.csv", "validated"), to_csv(rows(11)))
    # ---- the same day under a second key: first delivery wins, the copy is accounted -----
    add(Case(f"{u}{day(12)}-good.csv", "validated"), to_csv(rows(12)))
    add(
        Case(
            f"{u}{day(12)}-resent.csv", "partial", f"duplicate_key_in(usage/{day(12)}-good.csv)", N
        ),
        to_csv(rows(12)),
    )
    return cases, files


def _land(lake_root: Path, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        path = lake_root / "landing" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _delivered_rows(data: bytes) -> int:
    return len(
        pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    )


@pytest.fixture
def small_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    from driftloop_config.settings import load_settings

    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("DRIFTLOOP_MAX_FILE_BYTES", str(2_000_000))
    return load_settings()


def test_corpus_of_bad_input(small_files: Settings, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    landing = root / "landing"
    (landing / "usage").mkdir(parents=True)
    outside = tmp_path / "secret.txt"
    outside.write_bytes(SECRET)
    cases, files = corpus(landing, outside)
    assert len(cases) >= 40
    _land(root, files)

    result = ingest_flow(IngestParams())
    lake = Lake.from_settings(small_files)
    ledger = open_ledger(lake.ledger)

    # every landed object has a record, with the expected status and reason
    assert sorted(ledger.landing_keys()) == sorted(c.key for c in cases)
    problems = []
    for case in cases:
        rec = ledger.latest(case.key)
        assert rec is not None
        reasons = " | ".join([*rec["reasons"], *rec["reason_counts"]])
        if rec["status"] != case.status or case.reason not in reasons:
            problems.append(f"{case.key}: {rec['status']} {reasons[:200]!r}, expected {case}")
        elif case.status in ("validated", "partial") and rec["rows_quarantined"] != case.bad_rows:
            problems.append(
                f"{case.key}: {rec['rows_quarantined']} quarantined, expected {case.bad_rows}"
            )
    assert not problems, "\n".join(problems)
    assert result["totals"]["objects"] == len(cases)

    # the batch cause comes first: no column-level noise before a missing/extra column
    for key in (f"usage/{day(9)}.csv", f"usage/{day(10)}.csv", f"usage/{day(7)}.csv"):
        rec = ledger.latest(key)
        assert rec is not None
        assert rec["reasons"][0].startswith("expect_table_columns_to_match_set")

    # accepted files balance row for row, and validated/ holds exactly their valid rows
    validated_total = 0
    for case in cases:
        rec = ledger.latest(case.key)
        assert rec is not None
        if rec["status"] not in ("validated", "partial"):
            continue
        data = (landing / case.key).read_bytes()
        delivered = rec["rows_total"]
        if case.key.endswith(".csv"):
            assert delivered == _delivered_rows(data), case.key
        assert rec["rows_valid"] + rec["rows_quarantined"] == delivered, case.key
        assert rec["rows_valid"] == delivered - case.bad_rows, case.key
        validated_total += rec["rows_valid"]
    on_disk = sum(len(read_parquet(lake.validated, o.key)) for o in lake.validated.list("usage"))
    on_disk += sum(len(read_parquet(lake.validated, o.key)) for o in lake.validated.list("labels"))
    assert on_disk == validated_total
    # no customer-day is validated twice (the re-sent day and the linked copy were not doubled)
    usage = pd.concat([read_parquet(lake.validated, o.key) for o in lake.validated.list("usage")])
    assert not usage.duplicated(["customer_id", "date"]).any()
    # quarantined rows carry their reasons; their count matches the records
    quarantined = pd.concat(
        read_parquet(lake.quarantine, o.key) for o in lake.quarantine.list("rows")
    )
    assert len(quarantined) == sum(c.bad_rows for c in cases if c.status == "partial")
    assert quarantined["_reason"].str.len().min() > 0

    # nothing outside the lake was read or copied
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert SECRET.strip() not in path.read_bytes(), f"{path} holds the outside secret"
    # rejected files are kept (unless too large to copy), ignored ones are not read
    assert (root / "quarantine" / "files" / "usage" / f"{day(3)}.csv").read_bytes() == files[
        f"usage/{day(3)}.csv"
    ]
    assert not (root / "quarantine" / "files" / "usage" / "pipe.csv").exists()
    assert not (root / "quarantine" / "files" / "usage" / f"{day(18)}.csv").exists()

    # a second run has nothing to do
    again = ingest_flow(IngestParams())
    assert again["totals"]["objects"] == 0


def test_a_broken_resend_keeps_the_good_version(local_settings: Settings) -> None:
    lake = Lake.from_settings(local_settings)
    key = f"usage/{day(2)}.csv"
    lake.landing.write_bytes(key, to_csv(rows(2)))
    ingest_flow(IngestParams())
    good = {o.key: lake.validated.read_bytes(o.key) for o in lake.validated.list()}
    assert len(good) == 1

    lake.landing.write_bytes(key, b"\xff\xfe not utf-8 at all")
    out = ingest_flow(IngestParams())
    assert out["totals"]["rejected"] == 1
    ledger = open_ledger(lake.ledger)
    rejected = ledger.latest(key)
    assert rejected is not None
    assert rejected["status"] == "rejected"
    assert rejected["kept_previous"] is True
    assert {o.key: lake.validated.read_bytes(o.key) for o in lake.validated.list()} == good
    assert lake.quarantine.read_bytes(f"files/{key}") == b"\xff\xfe not utf-8 at all"

    # a good correction then replaces the kept version
    corrected = rows(2).assign(minutes="77.0")
    lake.landing.write_bytes(key, to_csv(corrected))
    ingest_flow(IngestParams())
    (only,) = lake.validated.list()
    assert read_parquet(lake.validated, only.key)["minutes"].tolist() == [77.0] * N


def test_a_same_size_same_mtime_change_is_ingested(local_settings: Settings) -> None:
    lake = Lake.from_settings(local_settings)
    key = f"usage/{day(3)}.csv"
    path = Path(lake.landing.local_path(key))  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True)
    path.write_bytes(to_csv(rows(3).assign(minutes="11.0")))
    ingest_flow(IngestParams())
    st = path.stat()
    path.write_bytes(to_csv(rows(3).assign(minutes="22.0")))  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p / rsync -a / touch -r
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    out = ingest_flow(IngestParams())
    assert out["totals"]["objects"] == 1
    (only,) = lake.validated.list()
    assert read_parquet(lake.validated, only.key)["minutes"].tolist() == [22.0] * N


def test_poison_pill_day_does_not_stop_the_days_after_it(local_settings: Settings) -> None:
    lake = Lake.from_settings(local_settings)
    poison = rows(1)
    poison.loc[0, "tenure_months"] = "12.000001"
    poison.loc[1, "date"] = f"{day(1)}T10:00:00+05:00"
    poison.loc[2, "date"] = f"{day(1)}T10:00:00"
    lake.landing.write_bytes(f"usage/{day(1)}.csv", to_csv(poison))
    for i in (2, 3, 4):
        lake.landing.write_bytes(f"usage/{day(i)}.csv", to_csv(rows(i)))
    out = ingest_flow(IngestParams())
    assert out["totals"] == {
        "objects": 4,
        "accepted": 4,
        "rejected": 0,
        "ignored": 0,
        "rows_validated": 4 * N - 1,
        "rows_quarantined": 1,
    }
    days = sorted(o.key.split("/")[1] for o in lake.validated.list("usage"))
    assert days == [f"date={day(i)}" for i in (1, 2, 3, 4)]
