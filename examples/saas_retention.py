"""A second, differently shaped use case: a SaaS subscription business
(``usecases/saas_retention.yaml``, the worked example of docs/own-data.md).

Nothing here is telco: the entity is an account (``A000123``), the feature source is a *weekly*
activity export (one row per account and week, dated by the Sunday that ends the week, first as
CSV, later as Parquet), and the labels are cancellations logged up to three days after they
happen, exported once a week as CSV. The cancellation hazard depends on a hidden account health
that also drives seat utilisation, logins, API calls, support tickets and overdue invoices, so
the features carry a real signal. A second feature source is context shared by many accounts: a
weekly status export per plan tier (incidents, outage minutes), keyed by the tier, which the
feature service joins to each account through the tier its activity reports.

The module holds what a user of driftloop writes in Python for their own data: the feature
builders, named in the use case as ``examples.saas_retention:saas_weekly_features`` (the
accounts) and ``examples.saas_retention:saas_tier_features`` (the plan tiers' context). Unlike
the other examples it has no public dataset to convert: :func:`simulate_saas` generates the
landed files of a simulated business, with a few deliberately defective rows. Its suites are
in ``expectations/saas_retention/``, its Feast repository in
``examples/feature_repos/saas_retention/``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from tasks.storage import Storage

NAME = "saas_retention"
ENTITY = "account_id"
FEATURE_SERVICE = "retention_v1"
ID_REGEX = r"^A[0-9]{6}\Z"
FIRST_WEEK_END = date(2026, 1, 4)  # a Sunday: weeks run Monday to Sunday
LOOKBACK_DAYS = 28
PLANS = ("starter", "team", "business", "enterprise")
CYCLES = ("monthly", "annual")
ACTIVITY_COLUMNS = {
    "account_id": "string",
    "week_end": "date",
    "plan_tier": "string",
    "billing_cycle": "string",
    "seats": "int",
    "seats_used": "int",
    "logins": "int",
    "api_calls": "int",
    "support_tickets": "int",
    "invoice_amount": "float",
    "invoice_overdue": "bool",
}
TIER_COLUMNS = {
    "plan_tier": "string",
    "week_end": "date",
    "incidents": "int",
    "outage_minutes": "float",
}
CANCELLATION_COLUMNS = {
    "account_id": "string",
    "cancelled_on": "date",
    "logged_on": "date",
    "reason": "string",
}
# The features the builders write, with the dtypes they need. Each feature is declared once,
# with its type and description, by the Feast views of examples/feature_repos/saas_retention;
# the builders do not import Feast, and tests check that these lists equal the views'
# (tests/tasks/test_feature_declarations.py). The account_profile view's plan_tier,
# billing_cycle and seats are written by name.
ENGAGEMENT = {  # feature view engagement (and features_asof)
    "seat_utilisation": "float64",
    "logins_per_seat": "float64",
    "logins_trend_4w": "float64",
    "api_calls_mean_4w": "float64",
    "support_tickets_sum_4w": "int64",
    "overdue_weeks_4w": "int64",
    "weeks_reported_4w": "int64",
}
TIER_FEATURES = {"incidents_4w": "int64", "outage_minutes_4w": "float64"}  # tier_reliability

# ---- the feature builder --------------------------------------------------------------------------


def saas_weekly_features(activity: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """One feature row per account and weekly report dated in ``[start, end]``.

    ``activity`` holds validated weekly rows covering ``[start - 27 days, end]``. A report dated
    ``d`` (the Sunday ending its week) is known once ``d`` is over, so its row carries
    ``event_timestamp = features_asof = d + 1 day, 00:00 UTC``. Features: the plan, billing cycle
    and seats of the report; seat utilisation and logins per seat of that week; over the reports
    in the 28 days ending on ``d``: logins this week relative to their mean, the mean of API
    calls, the sum of support tickets, the number of overdue weeks and of reports. Pure.
    """
    day = pd.to_datetime(activity["week_end"]).dt.normalize().astype("datetime64[ns]")
    rows = activity.assign(day=day).drop_duplicates([ENTITY, "day"], keep="last")
    first = pd.Timestamp(start) - pd.Timedelta(days=LOOKBACK_DAYS - 1)
    rows = rows.loc[(rows["day"] >= first) & (rows["day"] <= pd.Timestamp(end))]
    out = rows.loc[rows["day"] >= pd.Timestamp(start)]
    if out.empty:
        return _empty_features()

    history = pd.DataFrame(
        {
            ENTITY: rows[ENTITY].astype(str),
            "past": rows["day"],
            "logins": rows["logins"].astype("float64"),
            "api_calls": rows["api_calls"].astype("float64"),
            "support_tickets": rows["support_tickets"].astype("float64"),
            "overdue": rows["invoice_overdue"].astype("float64"),
        }
    )
    pairs = out[[ENTITY, "day"]].astype({ENTITY: str}).merge(history, on=ENTITY)
    window = (pairs["past"] <= pairs["day"]) & (
        pairs["past"] > pairs["day"] - pd.Timedelta(days=LOOKBACK_DAYS)
    )
    agg = (
        pairs.loc[window]
        .groupby([ENTITY, "day"], sort=True)
        .agg(
            logins_mean=("logins", "mean"),
            api_calls_mean_4w=("api_calls", "mean"),
            support_tickets_sum_4w=("support_tickets", "sum"),
            overdue_weeks_4w=("overdue", "sum"),
            weeks_reported_4w=("past", "size"),
        )
        .reset_index()
    )
    base = out.assign(**{ENTITY: out[ENTITY].astype(str)}).merge(agg, on=[ENTITY, "day"])
    base = base.sort_values([ENTITY, "day"], ignore_index=True)

    seats = base["seats"].astype("float64")
    logins = base["logins"].astype("float64")
    asof = (base["day"] + pd.Timedelta(days=1)).dt.tz_localize(UTC)
    result = pd.DataFrame(
        {
            ENTITY: base[ENTITY].astype(object),
            "date": base["day"],
            "event_timestamp": asof,
            "features_asof": asof,
            "plan_tier": base["plan_tier"].astype(object),
            "billing_cycle": base["billing_cycle"].astype(object),
            "seats": base["seats"].astype("int64"),
            "seat_utilisation": _ratio(base["seats_used"].astype("float64"), seats),
            "logins_per_seat": _ratio(logins, seats),
            "logins_trend_4w": _ratio(logins, base["logins_mean"]),
            "api_calls_mean_4w": base["api_calls_mean_4w"].astype("float64"),
            "support_tickets_sum_4w": base["support_tickets_sum_4w"].round().astype("int64"),
            "overdue_weeks_4w": base["overdue_weeks_4w"].round().astype("int64"),
            "weeks_reported_4w": base["weeks_reported_4w"].astype("int64"),
        }
    )
    return result


def saas_tier_features(status: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """One feature row per plan tier and weekly status report dated in ``[start, end]``: the
    incidents and outage minutes of the tier over the reports in the 28 days ending on the
    report's Sunday ``d``, known once ``d`` is over (``event_timestamp = features_asof = d + 1
    day``). Pure."""
    day = pd.to_datetime(status["week_end"]).dt.normalize().astype("datetime64[ns]")
    rows = status.assign(day=day).drop_duplicates(["plan_tier", "day"], keep="last")
    out_days = rows.loc[(rows["day"] >= pd.Timestamp(start)) & (rows["day"] <= pd.Timestamp(end))]
    columns = ["plan_tier", "date", "event_timestamp", "features_asof", *TIER_FEATURES]
    if out_days.empty:
        dtypes = {
            "plan_tier": "object",
            "date": "datetime64[ns]",
            "event_timestamp": "datetime64[ns, UTC]",
            "features_asof": "datetime64[ns, UTC]",
            **TIER_FEATURES,
        }
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})[columns]
    pairs = out_days[["plan_tier", "day"]].merge(
        rows[["plan_tier", "day", "incidents", "outage_minutes"]].rename(columns={"day": "past"}),
        on="plan_tier",
    )
    window = (pairs["past"] <= pairs["day"]) & (
        pairs["past"] > pairs["day"] - pd.Timedelta(days=LOOKBACK_DAYS)
    )
    agg = (
        pairs.loc[window]
        .groupby(["plan_tier", "day"], sort=True)
        .agg(
            incidents_4w=("incidents", "sum"),
            outage_minutes_4w=("outage_minutes", "sum"),
        )
        .reset_index()
    )
    asof = (agg["day"] + pd.Timedelta(days=1)).dt.tz_localize(UTC)
    return pd.DataFrame(
        {
            "plan_tier": agg["plan_tier"].astype(object),
            "date": agg["day"],
            "event_timestamp": asof,
            "features_asof": asof,
            "incidents_4w": agg["incidents_4w"].astype("int64"),
            "outage_minutes_4w": agg["outage_minutes_4w"].astype("float64"),
        }
    )


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num.to_numpy(dtype="float64") / den.to_numpy(dtype="float64")
    out[~np.isfinite(out)] = np.nan
    return pd.Series(out, index=num.index)


def _empty_features() -> pd.DataFrame:
    dtypes: dict[str, str] = {
        ENTITY: "object",
        "date": "datetime64[ns]",
        "event_timestamp": "datetime64[ns, UTC]",
        "features_asof": "datetime64[ns, UTC]",
        "plan_tier": "object",
        "billing_cycle": "object",
        "seats": "int64",
        **ENGAGEMENT,
    }
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})


# ---- the business that produces the data ---------------------------------------------------------


@dataclass
class Landed:
    """What :func:`simulate_saas` delivered, and the defects it injected on purpose."""

    week_ends: list[date]
    objects: list[str] = field(default_factory=list)
    activity_rows: int = 0
    cancellations: int = 0
    bad_rows: dict[str, list[str]] = field(default_factory=dict)  # landing key -> defects
    rejected_files: list[str] = field(default_factory=list)
    tier_status: pd.DataFrame | None = None  # every delivered tier row, bad ones included

    @property
    def quarantined_rows(self) -> int:
        return sum(len(v) for v in self.bad_rows.values())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


SEATS = {"starter": (1, 5), "team": (5, 25), "business": (20, 100), "enterprise": (80, 400)}
PRICE = {"starter": 8.0, "team": 12.0, "business": 20.0, "enterprise": 30.0}
API_CALLS = {"starter": 40.0, "team": 300.0, "business": 1500.0, "enterprise": 8000.0}
PLAN_RISK = {"starter": 0.6, "team": 0.2, "business": -0.2, "enterprise": -0.7}
REASONS = ("price", "missing_feature", "switched_vendor", "business_closed", "other")


def simulate_saas(
    landing: Storage,
    *,
    weeks: int = 14,
    accounts: int = 700,
    signups_per_week: int = 25,
    csv_weeks: int = 2,
    seed: int = 11,
) -> Landed:
    """Deliver ``weeks`` weekly activity exports and cancellation exports into ``landing``.

    Activity: ``activity/week-<sunday>.csv`` for the first ``csv_weeks`` weeks, then
    ``.parquet`` (typed). Cancellations: ``cancellations/<sunday>.csv`` with the cancellations
    logged during that week. Defects: a value that is not a number (CSV), an id of the wrong
    shape, a negative count, an unknown plan, more seats used than bought, an exact duplicate
    row, a cancellation logged before it happened, and one file missing columns.
    """
    rng = np.random.default_rng(seed)
    week_ends = [FIRST_WEEK_END + timedelta(days=7 * w) for w in range(weeks)]
    landed = Landed(week_ends=week_ends)

    # the account base: static traits and a hidden, slowly moving health
    n_total = accounts + signups_per_week * weeks
    ids = np.array([f"A{100000 + i:06d}" for i in range(n_total)], dtype=object)
    plans = rng.choice(PLANS, size=n_total, p=[0.4, 0.3, 0.2, 0.1])
    annual = rng.random(n_total) < np.where(np.isin(plans, ["business", "enterprise"]), 0.6, 0.25)
    lo = np.array([SEATS[p][0] for p in plans])
    hi = np.array([SEATS[p][1] for p in plans])
    seats = rng.integers(lo, hi + 1)
    base = rng.normal(0.0, 0.8, n_total)
    health = base + rng.normal(0.0, 0.5, n_total)
    joined = np.concatenate(
        [np.full(accounts, -1), np.repeat(np.arange(weeks), signups_per_week)]
    )  # first week reported
    cancelled_on: list[date | None] = [None] * n_total
    plan_risk = np.array([PLAN_RISK[p] for p in plans])
    price = np.array([PRICE[p] for p in plans])
    api_base = np.array([API_CALLS[p] for p in plans])

    logged: list[dict[str, Any]] = []
    for w, week_end in enumerate(week_ends):
        health = 0.7 * health + 0.3 * base + rng.normal(0.0, 0.45, n_total)
        alive = (joined <= w) & np.array(
            [c is None or c > week_end for c in cancelled_on], dtype=bool
        )
        idx = np.flatnonzero(alive)
        h = health[idx]
        used = rng.binomial(seats[idx], _sigmoid(0.6 + 1.3 * h))
        overdue = rng.random(len(idx)) < _sigmoid(-2.6 - 1.3 * h)
        week = pd.DataFrame(
            {
                "account_id": ids[idx],
                "week_end": week_end,
                "plan_tier": plans[idx],
                "billing_cycle": np.where(annual[idx], "annual", "monthly"),
                "seats": seats[idx].astype("int64"),
                "seats_used": used.astype("int64"),
                "logins": rng.poisson(used * 3.5 * np.exp(0.35 * h)).astype("int64"),
                "api_calls": rng.poisson(api_base[idx] * np.exp(0.6 * h)).astype("int64"),
                "support_tickets": rng.poisson(0.15 + 0.8 * _sigmoid(-1.8 * h)).astype("int64"),
                "invoice_amount": np.round(
                    seats[idx] * price[idx] * np.where(annual[idx], 0.85, 1.0) * 12 / 52, 2
                ),
                "invoice_overdue": overdue,
            }
        )
        # who cancels during the next week: riskier when unhealthy, overdue, small, monthly
        logit = -3.9 - 2.0 * h + plan_risk[idx] - 0.8 * annual[idx] + 0.9 * overdue
        leaving = idx[rng.random(len(idx)) < _sigmoid(logit)]
        for i in leaving:
            when = week_end + timedelta(days=int(rng.integers(1, 8)))
            cancelled_on[i] = when
            logged.append(
                {
                    "account_id": ids[i],
                    "cancelled_on": when,
                    "logged_on": when + timedelta(days=int(rng.integers(0, 4))),
                    "reason": str(rng.choice(REASONS)),
                }
            )

        as_csv = w < csv_weeks
        key = f"activity/week-{week_end.isoformat()}.{'csv' if as_csv else 'parquet'}"
        week, defects = _inject_activity_defects(week, w, as_csv=as_csv)
        landed.activity_rows += len(week)
        if defects:
            landed.bad_rows[key] = defects
        _deliver(landing, key, week, as_csv=as_csv)
        landed.objects.append(key)

        # the cancellations logged during this week (Monday to Sunday)
        this_week = [
            r for r in logged if week_end - timedelta(days=6) <= r["logged_on"] <= week_end
        ]
        cancellations = pd.DataFrame(this_week, columns=list(CANCELLATION_COLUMNS))
        key = f"cancellations/{week_end.isoformat()}.csv"
        if w == weeks // 2 and len(cancellations):  # an operator typo: logged before it happened
            bad = cancellations.iloc[[0]].copy()
            bad["account_id"] = f"A{900000 + w:06d}"
            bad["logged_on"] = bad["cancelled_on"] - timedelta(days=5)
            cancellations = pd.concat([cancellations, bad], ignore_index=True)
            landed.bad_rows[key] = ["logged_before_cancelled"]
        landed.cancellations += len(cancellations)
        _deliver(landing, key, cancellations, as_csv=True)
        landed.objects.append(key)

    landed.tier_status = _deliver_tier_status(landing, landed, week_ends, seed)

    # a re-export that lost columns on the way: rejected whole by the batch suite
    key = f"activity/week-{week_ends[1].isoformat()}-reexport.csv"
    _deliver(landing, key, week.drop(columns=["seats_used", "logins"]).head(50), as_csv=True)
    landed.objects.append(key)
    landed.rejected_files.append(key)
    return landed


def _deliver_tier_status(
    landing: Storage, landed: Landed, week_ends: list[date], seed: int
) -> pd.DataFrame:
    """One status file per week (``tier_status/<sunday>.csv``): a row per tier with its
    incidents and outage minutes (its own random stream: the activity stays as it was). In the
    fourth week a row with negative outage minutes for a fifth, unknown tier is appended: the
    row suite quarantines it alone."""
    rng = np.random.default_rng(seed + 1000)
    delivered = []
    for w, week_end in enumerate(week_ends):
        status = pd.DataFrame(
            {
                "plan_tier": list(PLANS),
                "week_end": week_end,
                "incidents": rng.poisson([3.0, 2.0, 1.0, 0.5]).astype("int64"),
                "outage_minutes": np.round(rng.gamma(2.0, [30.0, 20.0, 10.0, 5.0]), 1),
            }
        )
        key = f"tier_status/{week_end.isoformat()}.csv"
        if w == 3:
            bad = status.iloc[[0]].assign(plan_tier="legacy", outage_minutes=-15.0)
            status = pd.concat([status, bad], ignore_index=True)
            landed.bad_rows[key] = ["in_set(plan_tier)+between(outage_minutes)"]
        _deliver(landing, key, status, as_csv=True)
        landed.objects.append(key)
        delivered.append(status)
    return pd.concat(delivered, ignore_index=True)


def _inject_activity_defects(
    week: pd.DataFrame, w: int, *, as_csv: bool
) -> tuple[pd.DataFrame, list[str]]:
    """A few bad rows in two of the weekly files (appended, so every account keeps its row)."""
    if w == 1 and as_csv:
        bad = week.iloc[[0]].astype({"logins": object}).copy()
        bad["account_id"] = "A999001"
        bad["logins"] = "n/a"
        return pd.concat([week.astype({"logins": object}), bad], ignore_index=True), [
            "wrong_type(logins)"
        ]
    if w == 5:
        extra = week.iloc[[0, 1, 2, 3]].copy()
        extra["account_id"] = ["A12", "A999002", "A999003", "A999004"]
        extra.loc[extra.index[1], "logins"] = -4
        extra.loc[extra.index[2], "plan_tier"] = "platinum"
        extra.loc[extra.index[3], "seats_used"] = extra["seats"].iloc[3] + 3
        duplicate = week.iloc[[10]]
        return pd.concat([week, extra, duplicate], ignore_index=True), [
            "regex(account_id)",
            "between(logins)",
            "in_set(plan_tier)",
            "seats_used>seats",
            "duplicate_row",
        ]
    return week, []


def _deliver(landing: Storage, key: str, frame: pd.DataFrame, *, as_csv: bool) -> None:
    if as_csv:
        out = frame.copy()
        for col in out.columns:
            if out[col].dtype == bool:
                out[col] = out[col].map({True: "true", False: "false"})
        landing.write_bytes(key, out.to_csv(index=False).encode("utf-8"))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf)
    landing.write_bytes(key, buf.getvalue())
