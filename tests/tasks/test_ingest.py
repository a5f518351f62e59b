from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from driftloop_config.settings import PROJECT_ROOT
from driftloop_config.usecase import load_usecase
from tasks.drain import drain
from tasks.ingest import (
    REJECTED_EVENT,
    VALIDATED_EVENT,
    Ledger,
    RejectedFile,
    event_for,
    find_pending,
    output_name,
    parse_object,
    summary_rows,
    totals,
    validated_partitions,
    write_index_report,
)
from tasks.storage import Lake, read_json, read_parquet
from tests.helpers import to_csv, to_parquet, usage_rows

USECASE = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
MAX = 10_000_000


def ingest_all(lake: Lake, **kw):
    ledger = Ledger(lake.ledger)
    return drain(lake, ledger, USECASE, max_bytes=kw.get("max_bytes", MAX)).outcomes


# ---- parse_object -------------------------------------------------------------------------------


def test_parse_csv_keeps_strings_and_blanks_as_null() -> None:
    df = parse_object("usage/a.csv", b"a,b\n001,\n2,x\n")
    assert df["a"].tolist() == ["001", "2"] and df["b"].isna().tolist() == [True, False]


def test_parse_parquet_keeps_types() -> None:
    df = parse_object("usage/a.parquet", to_parquet(usage_rows(2)))
    assert df["minutes"].dtype == "float64"


@pytest.mark.parametrize(
    ("key", "data", "reason"),
    [
        ("usage/a.csv", b"", "empty file"),
        ("usage/a.csv", b"  \n", "empty file"),
        ("usage/a.csv", "a,b\nsüd,1\n".encode("latin-1"), "not valid UTF-8: byte 0xfc at offset 5"),
        ("usage/a.csv", b'a,b\n1,2,3,4\n"x', "unreadable CSV"),
        ("usage/a.parquet", to_parquet(usage_rows(50))[:300], "unreadable Parquet"),
        ("usage/a.parquet", b"PAR1 not really", "unreadable Parquet"),
        ("usage/a.json", b"{}", "unsupported file type"),
    ],
)
def test_parse_rejects_unreadable_files(key: str, data: bytes, reason: str) -> None:
    with pytest.raises(RejectedFile, match=reason):
        parse_object(key, data)


def test_output_name() -> None:
    spec = USECASE.datasets["usage"]
    assert output_name(spec, "usage/2026-01-01.csv") == "2026-01-01.csv"
    assert output_name(spec, "usage/eu/2026-01-01.csv") == "eu__2026-01-01.csv"


# ---- drain (check_object, then record_object) ---------------------------------------------------------------------------


def test_clean_file_is_validated_and_partitioned(lake: Lake) -> None:
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(10)))
    [out] = ingest_all(lake)
    assert (out.status, out.rows_total, out.rows_valid, out.rows_quarantined) == (
        "validated",
        10,
        10,
        0,
    )
    assert out.partitions == ["2026-01-01"]
    df = read_parquet(lake.validated, "usage/date=2026-01-01/2026-01-01.csv.parquet")
    assert len(df) == 10 and str(df["tenure_months"].dtype) == "Int64"
    assert df["date"].dtype == "datetime64[ns]"
    assert lake.reports.exists("validation/usage/2026-01-01.csv.html")
    assert read_json(lake.reports, "validation/usage/2026-01-01.csv.json")["status"] == "validated"


def test_bad_rows_go_to_quarantine_with_reasons(lake: Lake) -> None:
    df = usage_rows(10).astype(str)
    df.loc[3, "plan"] = "platinum_x"
    df.loc[7, "minutes"] = "n/a"
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(df))
    [out] = ingest_all(lake)
    assert (out.status, out.rows_valid, out.rows_quarantined) == ("partial", 8, 2)
    q = read_parquet(lake.quarantine, "rows/usage/2026-01-01.csv.parquet")
    assert q["_row"].tolist() == [3, 7]
    assert q["_reason"].tolist() == [
        "expect_column_values_to_be_in_set(plan)",
        "wrong_type(minutes)",
    ]
    assert set(q["_source_object"]) == {"usage/2026-01-01.csv"}
    assert q.loc[1, "minutes"] == "n/a", "quarantine keeps the value as delivered"
    valid = read_parquet(lake.validated, "usage/date=2026-01-01/2026-01-01.csv.parquet")
    assert set(valid["customer_id"]) == {f"C{i:07d}" for i in range(10)} - {"C0000003", "C0000007"}


def test_rejected_file_is_kept_in_quarantine_with_reason(lake: Lake) -> None:
    data = to_csv(usage_rows(5).drop(columns=["region"]))
    lake.landing.write_bytes("usage/2026-01-02.csv", data)
    [out] = ingest_all(lake)
    assert out.status == "rejected" and "expect_table_columns_to_match_set" in out.reasons[0]
    assert lake.quarantine.read_bytes("files/usage/2026-01-02.csv") == data
    reason = read_json(lake.quarantine, "files/usage/2026-01-02.csv.reason.json")
    assert reason["reasons"] == out.reasons
    assert lake.validated.list() == []


def test_unknown_dataset_and_oversized_files_are_rejected(lake: Lake) -> None:
    lake.landing.write_bytes("stray/notes.csv", b"a\n1\n")
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(200)))
    outs = {o.key: o for o in ingest_all(lake, max_bytes=1000)}
    assert "no dataset" in outs["stray/notes.csv"].reasons[0]
    assert "too large" in outs["usage/2026-01-01.csv"].reasons[0]
    assert not lake.quarantine.exists("files/usage/2026-01-01.csv"), (
        "oversized files are not copied"
    )


def test_same_content_again_is_a_noop(lake: Lake) -> None:
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(10)))
    assert len(ingest_all(lake)) == 1
    before = {
        o.key: o.etag for o in lake.root.list() if not o.key.startswith(("ledger/", "landing/"))
    }
    assert ingest_all(lake) == []
    # re-delivery of identical bytes (new mtime / etag) is recognised by content
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(10)))
    assert ingest_all(lake) == []
    after = {
        o.key: o.etag for o in lake.root.list() if not o.key.startswith(("ledger/", "landing/"))
    }
    assert after == before
    assert find_pending(lake.landing, Ledger(lake.ledger)) == []


def test_changed_content_is_a_new_version_that_replaces_outputs(lake: Lake) -> None:
    two_days = pd.concat(
        [usage_rows(4, "2026-01-01"), usage_rows(4, "2026-01-02")], ignore_index=True
    )
    lake.landing.write_bytes("usage/batch.csv", to_csv(two_days))
    [first] = ingest_all(lake)
    assert first.partitions == ["2026-01-01", "2026-01-02"]
    lake.landing.write_bytes("usage/batch.csv", to_csv(usage_rows(6, "2026-01-01")))
    [second] = ingest_all(lake)
    assert second.sha256 != first.sha256 and second.partitions == ["2026-01-01"]
    keys = [o.key for o in lake.validated.list()]
    assert keys == ["usage/date=2026-01-01/batch.csv.parquet"], "stale partition of v1 retired"
    assert len(read_parquet(lake.validated, keys[0])) == 6
    history = Ledger(lake.ledger).records("usage/batch.csv")
    assert [r["sha256"] for r in history] == [first.sha256, second.sha256]


def test_crash_before_ledger_record_is_retried_with_identical_outputs(lake: Lake) -> None:
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(10)))
    [out] = ingest_all(lake)
    snapshot = {
        o.key: lake.root.read_bytes(o.key)
        for o in lake.root.list()
        if o.key.startswith("validated/")
    }
    for info in lake.ledger.list():  # simulate a run that died after writing outputs
        lake.ledger.delete(info.key)
    [again] = ingest_all(lake)
    assert again.sha256 == out.sha256
    assert {
        o.key: lake.root.read_bytes(o.key)
        for o in lake.root.list()
        if o.key.startswith("validated/")
    } == snapshot


def test_parquet_with_wrong_typed_column(lake: Lake) -> None:
    df = usage_rows(5)
    df["minutes"] = df["minutes"].astype(str)
    df.loc[2, "minutes"] = "abc"
    lake.landing.write_bytes("usage/2026-01-01.parquet", to_parquet(df))
    [out] = ingest_all(lake)
    assert (out.rows_valid, out.rows_quarantined) == (4, 1)
    assert out.reason_counts == {"wrong_type(minutes)": 1}


def test_labels_dataset(lake: Lake) -> None:
    lake.landing.write_bytes(
        "labels/2026-01-15.csv",
        b"customer_id,churn_date,reported_date\nC0000001,2026-01-01,2026-01-15\n"
        b"C0000002,2026-01-20,2026-01-15\n",
    )
    lake.landing.write_bytes("labels/2026-01-16.csv", b"customer_id,churn_date,reported_date\n")
    outs = {o.key: o for o in ingest_all(lake)}
    assert outs["labels/2026-01-15.csv"].rows_valid == 1
    assert "greater_than_b" in next(iter(outs["labels/2026-01-15.csv"].reason_counts))
    assert outs["labels/2026-01-16.csv"].status == "validated"  # no churn revealed that day


def test_index_report_links_every_object(lake: Lake) -> None:
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(3)))
    lake.landing.write_bytes("usage/2026-01-02.csv", b"")
    ingest_all(lake)
    key = write_index_report(lake, Ledger(lake.ledger))
    page = lake.reports.read_bytes(key).decode()
    assert 'href="usage/2026-01-01.csv.html"' in page and "empty file" in page
    assert "<style>" in page and "http" not in page.split("<body>")[0], "no external CSS"


def test_event_and_summary_shapes() -> None:
    from tasks.ingest import IngestOutcome

    ok = IngestOutcome(
        key="usage/a.csv",
        sha256="s",
        etag="e",
        size=1,
        dataset="usage",
        status="partial",
        rows_total=3,
        rows_valid=2,
        rows_quarantined=1,
        partitions=["2026-01-01"],
    )
    bad = IngestOutcome(
        key="usage/b.csv",
        sha256="t",
        etag="e",
        size=0,
        dataset="usage",
        status="rejected",
        reasons=["empty file (0 bytes)"],
    )
    ev = event_for(ok, "file:///lake/landing")
    assert ev["event"] == VALIDATED_EVENT
    assert (
        ev["resource"]["prefect.resource.id"] == "driftloop.object.file:///lake/landing/usage/a.csv"
    )
    assert ev["payload"]["partitions"] == ["2026-01-01"]
    assert event_for(bad, "x")["event"] == REJECTED_EVENT
    assert totals([ok, bad]) == {
        "objects": 2,
        "accepted": 1,
        "rejected": 1,
        "ignored": 0,
        "rows_validated": 2,
        "rows_quarantined": 1,
    }
    assert summary_rows([bad])[0]["reason"] == "empty file (0 bytes)"


def test_newest_day_ignores_stray_rows_ahead_of_their_file(lake: Lake) -> None:
    """A row dated two days ahead of its file is valid but never becomes the pipeline's today."""
    from tasks.ingest import newest_day
    from tasks.training import latest_day

    stray = usage_rows(10, "2026-01-02")
    stray.loc[0, "date"] = "2026-01-04"
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(10, "2026-01-01")))
    lake.landing.write_bytes("usage/2026-01-02.csv", to_csv(stray))
    ingest_all(lake)
    assert sorted(validated_partitions(lake, USECASE.datasets["usage"])) == [
        date(2026, 1, 1),
        date(2026, 1, 2),
        date(2026, 1, 4),
    ]
    assert newest_day(Ledger(lake.ledger), USECASE) == date(2026, 1, 2)
    assert latest_day(lake, USECASE) == date(2026, 1, 2)


def test_hidden_and_temporary_names_get_an_ignored_record(lake: Lake) -> None:
    """On a folder and on S3 alike: recorded with the reason, never read or copied."""
    lake.landing.write_bytes("usage/.partial-upload.csv", to_csv(usage_rows(3)))
    lake.landing.write_bytes("usage/2026-01-01.csv.tmp-9", to_csv(usage_rows(3)))
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(3)))
    outs = {o.key: o for o in ingest_all(lake)}
    assert {k: (o.status, o.reasons) for k, o in outs.items()} == {
        "usage/.partial-upload.csv": ("ignored", ["hidden file name (starts with '.')"]),
        "usage/2026-01-01.csv.tmp-9": ("ignored", ["temporary file name (contains '.tmp-')"]),
        "usage/2026-01-01.csv": ("validated", []),
    }
    assert lake.quarantine.list() == []
    assert ingest_all(lake) == []
