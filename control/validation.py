"""Validating batches of decision, outcome and feed rows (competitor prices, stock), vectorised.

A batch is split into the rows that pass and the rows that are refused; each
refusal names the row's index in the batch, the first field that failed, its
value and the reason. Refused rows are kept (the quarantine table), never dropped.
The same rules as the domain types (control.domain), applied to whole columns.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd

from control import rows

DECISION_COLUMNS = rows.required_kinds(rows.DECISION_FIELDS)
DECISION_OPTIONAL = rows.optional_kinds(rows.DECISION_FIELDS)
OUTCOME_COLUMNS = rows.required_kinds(rows.OUTCOME_FIELDS)

MAX_FUTURE_S = 300  # a timestamp more than five minutes ahead of the server's clock is refused (configurable)

SLOT = ("campaign_id", "audience_package", "bucket_ts")


@dataclass(frozen=True, slots=True)
class Refusal:
    row_index: int
    field: str
    value: object
    reason: str
    row: dict


@dataclass(frozen=True)
class ValidationResult:
    accepted: pd.DataFrame
    refused: list[Refusal]


@dataclass(frozen=True, slots=True)
class Limits:
    max_bid: float = 1000.0          # yuan per click: anything above is a unit or decimal-point error
    max_future_s: int = MAX_FUTURE_S


def _failures(col: pd.Series, kind: str, limits: Limits, now_ts: int) -> tuple[np.ndarray, str]:
    """A boolean mask of failing rows and the reason, for one column of one kind."""
    if kind == "any":
        return np.zeros(len(col), dtype=bool), ""
    if kind == "text":
        text = col.astype("string")
        return (col.isna() | (text.str.strip() == "")).to_numpy(dtype=bool), "must be a non-empty string"
    if kind == "bool":
        ok = col.map(lambda v: isinstance(v, (bool, np.bool_)) or v in (0, 1))
        return ~ok.to_numpy(dtype=bool), "must be true or false"
    numbers = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers)
    if kind in ("ts", "count"):
        bad |= (numbers < 0) | (np.floor(numbers) != numbers)
        if kind == "ts":
            bad |= numbers > now_ts + limits.max_future_s
            return bad, f"must be whole epoch seconds, not negative nor more than {limits.max_future_s} s ahead"
        return bad, "must be a whole number >= 0"
    bad |= numbers < 0
    if kind == "share":
        bad |= numbers > 1
        return bad, "must be a finite number in [0, 1]"
    if kind == "money":
        bad |= numbers > limits.max_bid * 1e6  # money columns other than bids: only absurd sizes
        return bad, "must be a finite number >= 0"
    return bad, "must be a finite number >= 0"


def _refused_value(frame: pd.DataFrame, i: int, field: str) -> object:
    if field == "_slot":  # the slot a double decides: its three fields (the bucket as whole seconds)
        values = [frame.at[i, c] for c in SLOT]
        values[2] = int(values[2])
        return ", ".join(f"{c}={v}" for c, v in zip(SLOT, values, strict=True))
    return frame.at[i, field]


def _validate(frame: pd.DataFrame, columns: dict[str, str], optional: dict[str, str],
              now_ts: int, limits: Limits, extra_checks) -> ValidationResult:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"batch lacks required column(s) {missing}")
    frame = frame.reset_index(drop=True)
    n = len(frame)
    first_field = np.full(n, None, dtype=object)
    reasons = np.full(n, None, dtype=object)

    def mark(mask: np.ndarray, field: str, reason: str) -> None:
        new = mask & (first_field == None)  # noqa: E711 - elementwise on an object array
        first_field[new] = field
        reasons[new] = reason

    for name, kind in list(columns.items()) + [(c, k) for c, k in optional.items() if c in frame]:
        mask, reason = _failures(frame[name], kind, limits, now_ts)
        if name in optional:
            mask &= frame[name].notna().to_numpy(dtype=bool)
        mark(mask, name, reason)
    for field, mask, reason in extra_checks(frame, lambda: first_field == None):  # noqa: E711
        mark(np.asarray(mask, dtype=bool), field, reason)

    refused_rows = np.flatnonzero(first_field != None)  # noqa: E711
    refusals = [
        Refusal(int(i), first_field[i], _refused_value(frame, i, first_field[i]), reasons[i],
                {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                 for k, v in frame.iloc[i].to_dict().items()})
        for i in refused_rows
    ]
    accepted = frame.drop(index=refused_rows).reset_index(drop=True) if len(refused_rows) else frame
    return ValidationResult(accepted, refusals)


def _catalogue_checks(f: pd.DataFrame, known_campaigns: Collection[str] | None,
                      known_packages: Collection[str] | None):
    """A row's campaign and audience package must be in the catalogue (when the caller gives it)."""
    if known_campaigns is not None:
        yield "campaign_id", ~f["campaign_id"].isin(list(known_campaigns)).to_numpy(), "unknown campaign"
    if known_packages is not None:
        yield ("audience_package", ~f["audience_package"].isin(list(known_packages)).to_numpy(),
               "unknown audience package")


# Why a decision of a version the launch gate has not let serve is refused (control.launch).
NOT_SERVABLE = ("model version not approved to serve: the launch gate lets a version serve once a manager "
                "approved its launch (`bidlens model list`)")


def validate_decisions(frame: pd.DataFrame, now_ts: int, *, known_campaigns: Collection[str] | None = None,
                       known_packages: Collection[str] | None = None,
                       limits: Limits = Limits(), servable_versions: Collection[str] | None = None) -> ValidationResult:
    """`servable_versions`: the versions whose decisions are accepted (None: any, the gate is off)."""
    def checks(f: pd.DataFrame, still_ok: Callable[[], np.ndarray]):
        bids = pd.to_numeric(f["bid"], errors="coerce").to_numpy(dtype=np.float64)
        yield "bid", bids > limits.max_bid, f"bid above {limits.max_bid} yuan per click"
        yield from _catalogue_checks(f, known_campaigns, known_packages)
        if servable_versions is not None:
            yield "model_version", ~f["model_version"].isin(list(servable_versions)).to_numpy(), NOT_SERVABLE
        for field in rows.DECISION_FIELDS:
            if field.choices and field.name in f:
                col = f[field.name]
                yield (field.name, col.notna().to_numpy() & ~col.isin(list(field.choices)).to_numpy(),
                       f"must be {', '.join(field.choices[:-1])} or {field.choices[-1]}")
        # One decision per slot in a batch: the first good one stands, a later one is a double.
        ok = still_ok()
        again = np.zeros(len(f), dtype=bool)
        again[ok] = f.loc[ok, list(SLOT)].duplicated(keep="first").to_numpy()
        yield "_slot", again, "the same slot (campaign, audience package, bucket) is decided earlier in the batch"
    return _validate(frame, DECISION_COLUMNS, DECISION_OPTIONAL, now_ts, limits, checks)


def validate_outcomes(frame: pd.DataFrame, now_ts: int, *, known_campaigns: Collection[str] | None = None,
                      known_packages: Collection[str] | None = None,
                      limits: Limits = Limits()) -> ValidationResult:
    def checks(f: pd.DataFrame, _still_ok: Callable[[], np.ndarray]):
        num = {c: pd.to_numeric(f[c], errors="coerce").to_numpy(dtype=np.float64)
               for c in ("bucket_ts", "known_ts", "impressions", "clicks", "orders")}
        yield "known_ts", num["known_ts"] < num["bucket_ts"], "is before the slot's bucket"
        yield "clicks", num["clicks"] > num["impressions"], "more clicks than impressions"
        yield from _catalogue_checks(f, known_campaigns, known_packages)
    return _validate(frame, OUTCOME_COLUMNS, {}, now_ts, limits, checks)


def validate_competitor_prices(frame: pd.DataFrame, now_ts: int, *,
                               known_campaigns: Collection[str] | None = None,
                               limits: Limits = Limits()) -> ValidationResult:
    def checks(f: pd.DataFrame, _still_ok: Callable[[], np.ndarray]):
        yield from _catalogue_checks(f, known_campaigns, None)
        reference = pd.to_numeric(f["reference_price"], errors="coerce").to_numpy(dtype=np.float64)
        yield "reference_price", reference == 0, "must be > 0 (the drop is measured against it)"
    return _validate(frame, rows.required_kinds(rows.COMPETITOR_PRICE_FIELDS), {}, now_ts, limits, checks)


def validate_stock(frame: pd.DataFrame, now_ts: int, *, known_campaigns: Collection[str] | None = None,
                   limits: Limits = Limits()) -> ValidationResult:
    return _validate(frame, rows.required_kinds(rows.STOCK_FIELDS), {}, now_ts, limits,
                     lambda f, _still_ok: _catalogue_checks(f, known_campaigns, None))
