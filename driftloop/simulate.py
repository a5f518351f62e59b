"""A deterministic telco churn world that delivers daily files to the landing zone.

Every simulated day each active customer produces one *usage* row (profile as of that day plus the
day's usage), and churn events become known after a delay as *labels*. The same arguments always
produce byte-identical files.

Population
    Customers have a plan, a contract, a region, a payment method, a tenure and a monthly charge
    (plan price x contract discount x noise). Each customer also carries persistent usage
    propensities: a mean of daily voice minutes, a mean of daily data volume, a rate of dropped
    calls and a rate of support tickets. Daily usage is drawn around them (gamma for minutes and
    data, Poisson for dropped calls and tickets; tickets also rise with the day's dropped calls),
    so 7- and 30-day rolling means of the usage columns carry signal. ``bill_amount`` is a day's
    share of the monthly charge plus data overage (and voice overage on ``basic``). Tenure grows by
    one month every 30 days. New customers (new ids, never reused) join every day at a rate that
    pulls the population back towards ``customers``.

Churn hazard
    On every day each active customer churns with probability ``sigmoid(z)`` where::

        z = intercept
            + contract_effect[contract] + payment_effect[payment_method] + plan_effect[plan]
            + tenure * log1p(tenure_months)
            + charge * (monthly_charge - 55) / 25
            + dropped * ewm(dropped_calls) + tickets * ewm(support_tickets)
            + usage * (ewm(log1p(minutes / 30) + log1p(data_gb)) - 1.6)

    ``ewm`` is an exponentially weighted mean of the customer's recent days (weight 0.15 on the
    newest day), so recent trouble and recent disengagement raise the hazard. Before the reality
    change (:data:`PRE_DRIFT`) the hazard is higher for month-to-month contracts, electronic
    checks, short tenure, high charges, dropped calls, support tickets and low usage; the daily
    churn rate is about 0.45 % (roughly 13 % a month). A churned customer still has a usage row on
    the churn date and none afterwards.

Reality change (``drift_day``)
    A competitor cuts prices. From that day on (:data:`POST_DRIFT`) the monthly-charge coefficient
    rises from 0.6 to 1.05, month-to-month and one-year contracts churn more, paying by card becomes the risky
    payment method while electronic checks matter less, heavy users (rather than light users) leave,
    and customers on the new cheaper plan ``flex5g`` are less likely to go. Usage shifts too: daily
    data volume rises by 40 % and voice minutes drop by 20 %; about 30 % of new customers and a
    trickle of existing ones (more of the expensive ones) take ``flex5g``. Both the feature
    distributions and the relationship between features and churn change.

Delivery
    ``usage/<date>.csv`` or ``usage/<date>.parquet`` (one per day; the format alternates in a
    pattern fixed by the seed) and ``labels/<date>.csv`` (one per day, possibly header-only),
    listing the churns of ``date - label_delay_days``.

Defects
    With ``defect_rate > 0`` about that fraction of usage rows carries exactly one row-level
    defect (:data:`ROW_DEFECTS`), and whole usage files are broken (:data:`FILE_DEFECTS`; with at
    least 8 days every kind occurs, on distinct days, and such files carry no row-level defects).
    Labels files are always clean. The injected defects are returned as ``truth`` and can be written
    as JSON lines with :func:`write_truth`.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.storage import Storage

if TYPE_CHECKING:
    from driftloop_config.usecase import UseCase

PLANS = ("basic", "standard", "premium", "unlimited", "flex5g")
CONTRACTS = ("month_to_month", "one_year", "two_year")
REGIONS = ("north", "south", "east", "west", "central")
PAYMENT_METHODS = ("card", "bank_transfer", "electronic_check", "mailed_check")

USAGE_COLUMNS = (
    "customer_id",
    "date",
    "plan",
    "contract",
    "tenure_months",
    "region",
    "payment_method",
    "monthly_charge",
    "minutes",
    "data_gb",
    "dropped_calls",
    "support_tickets",
    "bill_amount",
)
LABEL_COLUMNS = ("customer_id", "churn_date", "reported_date")

ROW_DEFECTS = ("null_required", "out_of_range", "unknown_category", "duplicate_row", "wrong_type")
FILE_DEFECTS = ("missing_column", "extra_column", "empty_file", "corrupt_parquet", "non_utf8_csv")

MAX_CUSTOMER_ID = 9_999_999
_FLEX = PLANS.index("flex5g")

# plan -> monthly price, mean daily minutes, mean daily GB, daily data allowance in GB
_PLAN_PRICE = np.array([25.0, 45.0, 70.0, 95.0, 38.0])
_PLAN_MINUTES = np.array([20.0, 35.0, 45.0, 60.0, 30.0])
_PLAN_DATA = np.array([0.3, 0.9, 2.0, 4.0, 3.5])
_PLAN_ALLOWANCE = np.array([0.5, 1.5, 4.0, np.inf, 3.0])
_DATA_OVERAGE_PER_GB = 2.5
_BASIC_MINUTES_ALLOWANCE = 60.0
_MINUTE_OVERAGE = 0.05

_PLAN_MIX = np.array([0.30, 0.35, 0.20, 0.15, 0.0])
_PLAN_MIX_AFTER_DRIFT = np.array([0.20, 0.25, 0.15, 0.10, 0.30])
_CONTRACT_MIX_INITIAL = np.array([0.50, 0.25, 0.25])
_CONTRACT_MIX_NEW = np.array([0.62, 0.22, 0.16])
_CONTRACT_DISCOUNT = np.array([1.0, 0.95, 0.90])
_CONTRACT_MEAN_TENURE = np.array([14.0, 28.0, 40.0])
_REGION_MIX = np.array([0.22, 0.18, 0.20, 0.20, 0.20])
_REGION_DROP_FACTOR = np.array([1.0, 1.1, 0.9, 1.0, 1.35])
_PAYMENT_MIX = np.array([0.35, 0.25, 0.28, 0.12])

_EWM_WEIGHT = 0.15
_ENGAGEMENT_CENTER = 1.6
_FLEX_SWITCH_RATE = 0.003
_REFILL_RATE = 0.0045
_REFILL_PULL = 0.1
_USAGE_SHIFT_AFTER_DRIFT = (0.8, 1.4)  # minutes, data_gb


@dataclass(frozen=True)
class HazardModel:
    """Coefficients of the daily churn hazard (see the module docstring)."""

    intercept: float
    contract: tuple[float, float, float]
    payment: tuple[float, float, float, float]
    plan: tuple[float, float, float, float, float]
    tenure: float
    charge: float
    dropped: float
    tickets: float
    usage: float


PRE_DRIFT = HazardModel(
    intercept=-6.65,
    contract=(1.6, 0.6, 0.0),
    payment=(0.0, -0.1, 0.8, 0.3),
    plan=(0.0, 0.0, 0.0, 0.0, 0.0),
    tenure=-0.45,
    charge=0.6,
    dropped=0.9,
    tickets=5.0,
    usage=-0.8,
)
POST_DRIFT = HazardModel(
    intercept=-6.65,
    contract=(1.5, 0.7, 0.2),
    payment=(0.35, 0.1, 0.15, 0.0),
    plan=(0.0, 0.0, 0.0, 0.0, -0.9),
    tenure=-0.15,
    charge=1.05,
    dropped=0.8,
    tickets=4.0,
    usage=0.25,
)


@dataclass(frozen=True)
class SimulationResult:
    """What one simulation delivered: landing keys, injected defects and a few counts.

    ``rows_written`` counts the data rows serialised into usage and labels files (duplicated rows
    included, the rows of an ``empty_file`` not).
    """

    objects: list[str]
    truth: list[dict[str, Any]]
    rows_written: int
    days: int
    drift_day: int | None


@dataclass
class _Population:
    """The active customers, one array element per customer, ordered by id."""

    cid: np.ndarray
    plan: np.ndarray
    contract: np.ndarray
    region: np.ndarray
    payment: np.ndarray
    tenure_days: np.ndarray
    charge: np.ndarray
    base_minutes: np.ndarray
    base_data: np.ndarray
    drop_rate: np.ndarray
    ticket_rate: np.ndarray
    ewm_dropped: np.ndarray
    ewm_tickets: np.ndarray
    ewm_engagement: np.ndarray

    def __len__(self) -> int:
        return len(self.cid)

    def select(self, keep: np.ndarray) -> _Population:
        return _Population(**{f.name: getattr(self, f.name)[keep] for f in _FIELDS})

    def extend(self, other: _Population) -> _Population:
        return _Population(
            **{
                f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
                for f in _FIELDS
            }
        )


_FIELDS = dataclasses.fields(_Population)
_T = TypeVar("_T")


@dataclass(frozen=True)
class _Usage:
    minutes: np.ndarray
    data_gb: np.ndarray
    dropped_calls: np.ndarray
    support_tickets: np.ndarray
    bill_amount: np.ndarray


@dataclass(frozen=True)
class _RowDefect:
    row: int
    kind: str
    column: str | None
    value: Any = None


@dataclass
class _Run:
    """Mutable bookkeeping of one simulation."""

    objects: list[str] = field(default_factory=list)
    truth: list[dict[str, Any]] = field(default_factory=list)
    rows_written: int = 0
    churns: dict[int, np.ndarray] = field(default_factory=dict)


# ---- public API ---------------------------------------------------------------------------------


def simulate(
    landing: Storage,
    *,
    days: int,
    start: date = date(2026, 1, 1),
    customers: int = 2000,
    drift_day: int | None = None,
    defect_rate: float = 0.0,
    seed: int = 7,
    label_delay_days: int = 14,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Simulate ``days`` days from ``start`` and write each day's files to ``landing``.

    ``progress`` is called once per simulated day with the number of days completed so far.
    """
    _validate(days, customers, drift_day, defect_rate, seed, label_delay_days)
    start = start.date() if isinstance(start, datetime) else start
    formats = usage_formats(seed, days)
    broken = file_defect_schedule(seed, formats) if defect_rate > 0 else {}
    run = _Run()
    pop = _new_customers(np.random.default_rng([seed, 0]), customers, 1, initial=True, post=False)
    next_id = customers + 1
    for day in range(days):
        post = drift_day is not None and day >= drift_day
        rng = np.random.default_rng([seed, 1, day])
        if day > 0:
            pop, next_id = _refill(rng, pop, customers, next_id, post)
        usage, churned = _live_one_day(rng, pop, post)
        run.churns[day] = pop.cid[churned]
        today = start + timedelta(days=day)
        table = _usage_table(pop, usage, today)
        key = f"usage/{today.isoformat()}.{formats[day]}"
        defect_rng = np.random.default_rng([seed, 2, day])
        _deliver_usage(landing, run, key, table, broken.get(day), defect_rate, defect_rng)
        _deliver_labels(landing, run, start, day, label_delay_days)
        pop = pop.select(~churned)
        pop.tenure_days += 1
        if progress is not None:
            progress(day + 1)
    return SimulationResult(
        objects=run.objects,
        truth=run.truth,
        rows_written=run.rows_written,
        days=days,
        drift_day=drift_day,
    )


def write_truth(result: SimulationResult, path: Path) -> None:
    """Write the injected defects as JSON lines (one defect per line, keys sorted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(entry, sort_keys=True) + "\n" for entry in result.truth]
    path.write_text("".join(lines), encoding="utf-8")


def usage_formats(seed: int, days: int) -> list[str]:
    """The usage file format of each day: runs of 1 or 2 days, alternating csv/parquet."""
    rng = np.random.default_rng([seed, 4])
    run_length = int(rng.integers(1, 3))
    phase = int(rng.integers(0, 2 * run_length))
    return ["parquet" if ((d + phase) // run_length) % 2 else "csv" for d in range(days)]


def file_defect_schedule(seed: int, formats: list[str]) -> dict[int, str]:
    """Which day's usage file gets which file-level defect (empty for runs under 8 days).

    Every block of at least 60 days (or the whole run, if shorter) gets each kind once, on distinct
    days other than the first day; ``corrupt_parquet`` lands on a Parquet day and ``non_utf8_csv``
    on a CSV day.
    """
    days = len(formats)
    if days < 8:
        return {}
    rng = np.random.default_rng([seed, 3])
    blocks = max(1, days // 60)
    edges = [1 + (days - 1) * b // blocks for b in range(blocks + 1)]
    schedule: dict[int, str] = {}
    for lo, hi in itertools.pairwise(edges):
        schedule.update(_schedule_block(rng, formats, lo, hi))
    return schedule


def days_for_first_model(usecase: UseCase, start: date = date(2026, 1, 1)) -> int:
    """How many simulated days (from ``start``) the retraining policy of ``usecase`` needs before
    it trains the first model: the feature history, the label horizon and delay, and enough
    labelled snapshot days for the training, validation and holdout splits
    (:func:`tasks.policy.should_train` with no champion, asked day by day)."""
    from tasks.loop_state import LoopState
    from tasks.policy import should_train

    loop = usecase.loop()
    # the first snapshot day the policy counts (tasks.policy.current_state)
    state = LoopState(first_snapshot=start + timedelta(days=max(loop.model.min_history_days, 1)))
    for offset in range(10 * 366):
        day = start + timedelta(days=offset)
        decision = should_train(
            day, state, target=loop.target, model=loop.model, retrain=usecase.retrain
        )
        if decision.train:
            return offset + 1  # days start .. day
    raise ValueError(f"the retraining policy of {usecase.name} never trains a first model")


def first_model_warning(days: int, usecase: UseCase) -> str | None:
    """What to tell someone simulating ``days`` days when no model can come of them (None when
    the first model is due within them)."""
    needed = days_for_first_model(usecase)
    if days >= needed:
        return None
    return (
        f"{days} days are too few for a first {usecase.name} model: its retraining policy trains "
        f"once {needed} days have been delivered (feature history, label delay and enough "
        f"labelled days for training, validation and holdout); simulate --days {needed} or more"
    )


# ---- validation ---------------------------------------------------------------------------------


def _validate(
    days: int,
    customers: int,
    drift_day: int | None,
    defect_rate: float,
    seed: int,
    label_delay_days: int,
) -> None:
    if not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be an integer >= 1, got {days!r}")
    if not isinstance(customers, int) or customers < 10:
        raise ValueError(f"customers must be an integer >= 10, got {customers!r}")
    if customers > MAX_CUSTOMER_ID // 2:
        raise ValueError(f"customers must be <= {MAX_CUSTOMER_ID // 2}, got {customers!r}")
    if drift_day is not None and (not isinstance(drift_day, int) or not 0 <= drift_day < days):
        raise ValueError(
            f"drift_day must be None or 0 <= drift_day < days ({days}), got {drift_day!r}"
        )
    if not 0.0 <= defect_rate <= 0.5:
        raise ValueError(f"defect_rate must be between 0 and 0.5, got {defect_rate!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(label_delay_days, int) or label_delay_days < 0:
        raise ValueError(f"label_delay_days must be an integer >= 0, got {label_delay_days!r}")


# ---- the world ----------------------------------------------------------------------------------


def _new_customers(
    rng: np.random.Generator, n: int, first_id: int, *, initial: bool, post: bool
) -> _Population:
    plan = rng.choice(len(PLANS), n, p=_PLAN_MIX_AFTER_DRIFT if post else _PLAN_MIX)
    contract = rng.choice(
        len(CONTRACTS), n, p=_CONTRACT_MIX_INITIAL if initial else _CONTRACT_MIX_NEW
    )
    region = rng.choice(len(REGIONS), n, p=_REGION_MIX)
    if initial:
        months = np.minimum(rng.exponential(_CONTRACT_MEAN_TENURE[contract]), 120.0)
        tenure_days = (months * 30).astype(np.int64)
    else:
        tenure_days = np.zeros(n, dtype=np.int64)
    base_minutes = _PLAN_MINUTES[plan] * rng.lognormal(-0.18, 0.6, n)
    base_data = _PLAN_DATA[plan] * rng.lognormal(-0.245, 0.7, n)
    drop_rate = rng.gamma(1.5, 0.2, n) * _REGION_DROP_FACTOR[region]
    ticket_rate = rng.gamma(0.5, 0.06, n)
    return _Population(
        cid=np.arange(first_id, first_id + n, dtype=np.int64),
        plan=plan.astype(np.int8),
        contract=contract.astype(np.int8),
        region=region.astype(np.int8),
        payment=rng.choice(len(PAYMENT_METHODS), n, p=_PAYMENT_MIX).astype(np.int8),
        tenure_days=tenure_days,
        charge=_monthly_charge(rng, plan, contract),
        base_minutes=base_minutes,
        base_data=base_data,
        drop_rate=drop_rate,
        ticket_rate=ticket_rate,
        ewm_dropped=drop_rate.copy(),
        ewm_tickets=ticket_rate.copy(),
        ewm_engagement=np.log1p(base_minutes / 30) + np.log1p(base_data),
    )


def _monthly_charge(rng: np.random.Generator, plan: np.ndarray, contract: np.ndarray) -> np.ndarray:
    noise = rng.lognormal(0.0, 0.12, len(plan))
    charge = _PLAN_PRICE[plan] * _CONTRACT_DISCOUNT[contract] * noise
    return np.round(np.clip(charge, 5.0, 500.0), 2)


def _refill(
    rng: np.random.Generator, pop: _Population, target: int, next_id: int, post: bool
) -> tuple[_Population, int]:
    """New customers join, pulling the population back towards ``target``."""
    expected = _REFILL_RATE * target + _REFILL_PULL * (target - len(pop))
    n_new = int(rng.poisson(max(0.0, expected)))
    if next_id + n_new - 1 > MAX_CUSTOMER_ID:
        raise RuntimeError("customer ids exhausted: fewer customers or days needed")
    joiners = _new_customers(rng, n_new, next_id, initial=False, post=post)
    return pop.extend(joiners), next_id + n_new


def _live_one_day(
    rng: np.random.Generator, pop: _Population, post: bool
) -> tuple[_Usage, np.ndarray]:
    """Plan switches, the day's usage and who churns at the end of the day."""
    if post:
        _switch_to_flex(rng, pop)
    usage = _daily_usage(rng, pop, post)
    _update_recency(pop, usage)
    churned = rng.random(len(pop)) < _hazard(pop, POST_DRIFT if post else PRE_DRIFT)
    return usage, churned


def _switch_to_flex(rng: np.random.Generator, pop: _Population) -> None:
    """After the reality change a trickle of customers, mostly expensive ones, move to flex5g."""
    rate = _FLEX_SWITCH_RATE * np.where(pop.charge > 60.0, 2.0, 1.0)
    switch = (pop.plan != _FLEX) & (rng.random(len(pop)) < rate)
    new_charge = _monthly_charge(rng, np.full(len(pop), _FLEX), pop.contract)
    pop.plan[switch] = _FLEX
    pop.charge[switch] = new_charge[switch]
    pop.base_data[switch] *= 1.3


def _daily_usage(rng: np.random.Generator, pop: _Population, post: bool) -> _Usage:
    minute_shift, data_shift = _USAGE_SHIFT_AFTER_DRIFT if post else (1.0, 1.0)
    raw_minutes = rng.gamma(2.0, pop.base_minutes / 2.0) * minute_shift
    raw_data = rng.gamma(1.5, pop.base_data / 1.5) * data_shift
    minutes = np.round(np.clip(raw_minutes, 0.0, 1440.0), 4)
    data_gb = np.round(np.clip(raw_data, 0.0, 200.0), 4)
    dropped = np.minimum(rng.poisson(pop.drop_rate), 500)
    tickets = np.minimum(rng.poisson(pop.ticket_rate + 0.04 * dropped), 50)
    data_over = np.maximum(0.0, data_gb - _PLAN_ALLOWANCE[pop.plan]) * _DATA_OVERAGE_PER_GB
    basic = pop.plan == PLANS.index("basic")
    minute_over = basic * np.maximum(0.0, minutes - _BASIC_MINUTES_ALLOWANCE) * _MINUTE_OVERAGE
    bill = np.round(np.clip(pop.charge / 30.0 + data_over + minute_over, 0.0, 1000.0), 4)
    return _Usage(minutes, data_gb, dropped.astype(np.int64), tickets.astype(np.int64), bill)


def _update_recency(pop: _Population, usage: _Usage) -> None:
    w = _EWM_WEIGHT
    engagement = np.log1p(usage.minutes / 30) + np.log1p(usage.data_gb)
    pop.ewm_dropped = (1 - w) * pop.ewm_dropped + w * usage.dropped_calls
    pop.ewm_tickets = (1 - w) * pop.ewm_tickets + w * usage.support_tickets
    pop.ewm_engagement = (1 - w) * pop.ewm_engagement + w * engagement


def _hazard(pop: _Population, model: HazardModel) -> np.ndarray:
    """Daily churn probability of every active customer."""
    z = (
        model.intercept
        + np.asarray(model.contract)[pop.contract]
        + np.asarray(model.payment)[pop.payment]
        + np.asarray(model.plan)[pop.plan]
        + model.tenure * np.log1p(pop.tenure_days // 30)
        + model.charge * (pop.charge - 55.0) / 25.0
        + model.dropped * pop.ewm_dropped
        + model.tickets * pop.ewm_tickets
        + model.usage * (pop.ewm_engagement - _ENGAGEMENT_CENTER)
    )
    result: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return result


# ---- tables -------------------------------------------------------------------------------------


def _customer_ids(cid: np.ndarray) -> pa.Array:
    """``C`` + 7 digits, built straight into an Arrow string buffer."""
    n = len(cid)
    chars = np.empty((n, 8), dtype=np.uint8)
    chars[:, 0] = ord("C")
    chars[:, 1:] = (cid[:, None] // 10 ** np.arange(6, -1, -1)) % 10 + ord("0")
    offsets = np.arange(0, 8 * n + 1, 8, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _categories(names: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pc.take(pa.array(names, type=pa.string()), pa.array(codes.astype(np.int32)))


def _dates(day: date, n: int) -> pa.Array:
    return pa.array(np.full(n, np.datetime64(day, "D")), type=pa.date32())


def _usage_table(pop: _Population, usage: _Usage, day: date) -> pa.Table:
    columns = {
        "customer_id": _customer_ids(pop.cid),
        "date": _dates(day, len(pop)),
        "plan": _categories(PLANS, pop.plan),
        "contract": _categories(CONTRACTS, pop.contract),
        "tenure_months": pa.array(pop.tenure_days // 30, type=pa.int64()),
        "region": _categories(REGIONS, pop.region),
        "payment_method": _categories(PAYMENT_METHODS, pop.payment),
        "monthly_charge": pa.array(pop.charge, type=pa.float64()),
        "minutes": pa.array(usage.minutes, type=pa.float64()),
        "data_gb": pa.array(usage.data_gb, type=pa.float64()),
        "dropped_calls": pa.array(usage.dropped_calls, type=pa.int64()),
        "support_tickets": pa.array(usage.support_tickets, type=pa.int64()),
        "bill_amount": pa.array(usage.bill_amount, type=pa.float64()),
    }
    return pa.table(columns)


def _labels_table(cids: np.ndarray, churn_day: date, reported: date) -> pa.Table:
    n = len(cids)
    return pa.table(
        {
            "customer_id": _customer_ids(np.sort(cids)),
            "churn_date": _dates(churn_day, n),
            "reported_date": _dates(reported, n),
        }
    )


def _csv_bytes(table: pa.Table, encoding: str = "utf-8") -> bytes:
    """Plain CSV: header, ``\\n`` line ends, nulls empty, quotes only where a value needs them."""
    cells = [_csv_cells(table.column(name)) for name in table.column_names]
    header = ",".join(table.column_names) + "\n"
    if table.num_rows == 0:
        return header.encode(encoding)
    lines = pc.binary_join_element_wise(*cells, ",").to_pylist()
    return (header + "\n".join(lines) + "\n").encode(encoding)


def _csv_cells(column: pa.ChunkedArray) -> pa.ChunkedArray:
    text = pc.cast(column, pa.string())
    if not pa.types.is_string(column.type):
        return pc.fill_null(text, "")
    needs_quotes = pc.match_substring_regex(text, '[",\\r\\n]')
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
    return pc.fill_null(pc.if_else(needs_quotes, quoted, text), "")


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _encode(table: pa.Table, fmt: str) -> bytes:
    return _parquet_bytes(table) if fmt == "parquet" else _csv_bytes(table)


# ---- delivery -----------------------------------------------------------------------------------


def _deliver_usage(
    landing: Storage,
    run: _Run,
    key: str,
    table: pa.Table,
    file_defect: str | None,
    defect_rate: float,
    rng: np.random.Generator,
) -> None:
    fmt = key.rsplit(".", 1)[1]
    if file_defect is not None:
        data = _broken_file(rng, table, fmt, file_defect)
        run.truth.append({"object": key, "kind": file_defect})
        rows = 0 if file_defect == "empty_file" else table.num_rows
    else:
        defects = _plan_row_defects(rng, table.num_rows, defect_rate)
        original = table
        table, positions = _apply_row_defects(table, defects)
        run.truth.extend(_row_truth(key, original, defects, positions))
        data = _encode(table, fmt)
        rows = table.num_rows
    landing.write_bytes(key, data)
    run.objects.append(key)
    run.rows_written += rows


def _deliver_labels(landing: Storage, run: _Run, start: date, day: int, delay: int) -> None:
    reported = start + timedelta(days=day)
    churn_day = day - delay
    cids = run.churns.pop(churn_day) if churn_day >= 0 else np.empty(0, dtype=np.int64)
    table = _labels_table(cids, start + timedelta(days=churn_day), reported)
    key = f"labels/{reported.isoformat()}.csv"
    landing.write_bytes(key, _csv_bytes(table))
    run.objects.append(key)
    run.rows_written += table.num_rows


# ---- defects ------------------------------------------------------------------------------------

_NUMERIC_COLUMNS = (
    "tenure_months",
    "monthly_charge",
    "minutes",
    "data_gb",
    "dropped_calls",
    "support_tickets",
    "bill_amount",
)
_OUT_OF_RANGE: dict[str, tuple[float, ...]] = {
    "tenure_months": (9999, -1, 601, 1200),
    "monthly_charge": (-25.0, 750.0, 999.99),
    "minutes": (-12.5, 1500.0, 2880.0),
    "data_gb": (-0.5, 250.0, 1024.0),
    "dropped_calls": (-3, 501, 900),
    "support_tickets": (-1, 51, 99),
    "bill_amount": (-20.0, 5000.0, 1200.5),
}
_UNKNOWN_CATEGORIES: dict[str, tuple[str, ...]] = {
    "plan": ("platinum_x", "gold_legacy", "prepaid_weekly"),
    "contract": ("three_year", "weekly", "trial"),
    "region": ("atlantis", "northeast", "offshore"),
    "payment_method": ("bitcoin", "voucher", "cash"),
}
_NOT_A_NUMBER = ("abc", "12,5", "twelve", "#VALUE!", "1.2.3", "x9")
_EXTRA_COLUMNS = ("promo_code", "device_model", "loyalty_points")


def _plan_row_defects(rng: np.random.Generator, n_rows: int, rate: float) -> list[_RowDefect]:
    """Distinct rows, one defect each, about ``rate * n_rows`` of them."""
    count = int(rng.binomial(n_rows, rate)) if rate > 0 and n_rows > 0 else 0
    if count == 0:
        return []
    rows = np.sort(rng.choice(n_rows, size=count, replace=False))
    kinds = rng.integers(0, len(ROW_DEFECTS), size=count)
    return [_row_defect(rng, int(row), ROW_DEFECTS[k]) for row, k in zip(rows, kinds, strict=True)]


def _pick(rng: np.random.Generator, options: tuple[_T, ...]) -> _T:
    return options[int(rng.integers(len(options)))]


def _row_defect(rng: np.random.Generator, row: int, kind: str) -> _RowDefect:
    if kind == "null_required":
        return _RowDefect(row, kind, _pick(rng, USAGE_COLUMNS))
    if kind == "out_of_range":
        column = _pick(rng, _NUMERIC_COLUMNS)
        return _RowDefect(row, kind, column, _pick(rng, _OUT_OF_RANGE[column]))
    if kind == "unknown_category":
        column = _pick(rng, tuple(_UNKNOWN_CATEGORIES))
        return _RowDefect(row, kind, column, _pick(rng, _UNKNOWN_CATEGORIES[column]))
    if kind == "wrong_type":
        return _RowDefect(row, kind, _pick(rng, _NUMERIC_COLUMNS), _pick(rng, _NOT_A_NUMBER))
    return _RowDefect(row, kind, None)


def _apply_row_defects(table: pa.Table, defects: list[_RowDefect]) -> tuple[pa.Table, np.ndarray]:
    """The defective table and, per defect, its 0-based row in the delivered file."""
    if not defects:
        return table, np.empty(0, dtype=np.int64)
    columns = {name: table.column(name).combine_chunks() for name in table.column_names}
    _replace_values(columns, [d for d in defects if d.column and d.kind != "wrong_type"])
    wrong_type = [d for d in defects if d.kind == "wrong_type"]
    for name in {d.column for d in wrong_type if d.column}:
        columns[name] = pc.cast(columns[name], pa.string())
    _replace_values(columns, wrong_type)
    out = pa.table({name: columns[name] for name in table.column_names})
    duplicated = np.zeros(table.num_rows, dtype=np.int64)
    duplicated[[d.row for d in defects if d.kind == "duplicate_row"]] = 1
    shift = np.cumsum(duplicated) - duplicated  # copies inserted before each original row
    rows = np.array([d.row for d in defects], dtype=np.int64)
    positions = rows + shift[rows] + duplicated[rows]  # a copy sits right after its original
    if duplicated.any():
        out = out.take(pa.array(np.repeat(np.arange(table.num_rows), 1 + duplicated)))
    return out, positions


def _replace_values(columns: dict[str, pa.Array], defects: list[_RowDefect]) -> None:
    """Put each defect's value (``None`` for a null) into its column at its row."""
    for name in sorted({d.column for d in defects if d.column}):
        hits = sorted((d for d in defects if d.column == name), key=lambda d: d.row)
        mask = np.zeros(len(columns[name]), dtype=bool)
        mask[[d.row for d in hits]] = True
        values = pa.array([d.value for d in hits], type=columns[name].type)
        columns[name] = pc.replace_with_mask(columns[name], pa.array(mask), values)


def _row_truth(
    key: str, original: pa.Table, defects: list[_RowDefect], positions: np.ndarray
) -> list[dict[str, Any]]:
    if not defects:
        return []
    rows = pa.array([d.row for d in defects], type=pa.int64())
    ids = original.column("customer_id").take(rows).to_pylist()
    dates = original.column("date").take(rows).to_pylist()
    return [
        {
            "object": key,
            "kind": d.kind,
            "customer_id": cid,
            "date": day.isoformat(),
            "row": int(pos),
            "column": d.column,
        }
        for d, cid, day, pos in zip(defects, ids, dates, positions, strict=True)
    ]


def _schedule_block(
    rng: np.random.Generator, formats: list[str], lo: int, hi: int
) -> dict[int, str]:
    """Place each file-level defect kind once on distinct days in ``[lo, hi)``."""
    days = np.arange(lo, hi)
    parquet_days = [int(d) for d in days if formats[d] == "parquet"]
    csv_days = [int(d) for d in days if formats[d] == "csv"]
    corrupt = int(rng.choice(parquet_days))
    non_utf8 = int(rng.choice(csv_days))
    rest = [int(d) for d in days if d not in (corrupt, non_utf8)]
    others = rng.choice(rest, size=3, replace=False)
    kinds = ("missing_column", "extra_column", "empty_file")
    schedule = {int(d): kind for d, kind in zip(others, kinds, strict=True)}
    schedule[corrupt] = "corrupt_parquet"
    schedule[non_utf8] = "non_utf8_csv"
    return schedule


def _broken_file(rng: np.random.Generator, table: pa.Table, fmt: str, kind: str) -> bytes:
    if kind == "empty_file":
        return b""
    if kind == "corrupt_parquet":
        data = _parquet_bytes(table)
        return data[: len(data) // 2]
    if kind == "non_utf8_csv":
        return _csv_bytes(_with_umlaut_region(table), encoding="cp1252")
    if kind == "missing_column":
        dropped = _pick(rng, USAGE_COLUMNS)
        return _encode(table.drop_columns([dropped]), fmt)
    return _encode(_with_extra_column(rng, table), fmt)


def _with_umlaut_region(table: pa.Table) -> pa.Table:
    """Spell ``south`` as ``süd``; cp1252 encodes the umlaut as a byte that is invalid UTF-8."""
    region = table.column("region").combine_chunks()
    south = pc.equal(region, "south")
    if not pc.any(south).as_py():
        south = pa.array(np.arange(table.num_rows) == 0)
    region = pc.if_else(south, "süd", region)
    return table.set_column(table.column_names.index("region"), "region", region)


def _with_extra_column(rng: np.random.Generator, table: pa.Table) -> pa.Table:
    name = _pick(rng, _EXTRA_COLUMNS)
    values = pa.array(rng.integers(0, 1000, table.num_rows), type=pa.int64())
    return table.append_column(
        name, pc.cast(values, pa.string()) if name != "loyalty_points" else values
    )
