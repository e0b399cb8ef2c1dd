"""Read models for the live board and the other panel pages (queries, no Streamlit).

Two kinds of functions:

- small store queries (take a Connection), each bounded by an index: the latest
  bucket, the decisions of one bucket, guard states, trips, alerts;
- pure functions over frames that turn those into what a page shows: the KPI
  row, the campaign table, the ROI series, the model-vs-rule-pool shadow
  comparison, alert response times.

Day and window totals per campaign and the per-bucket series come from the
rollups the decision and outcome writers keep (store.repo, store.schema.board_rollups
/ board_series): a first render and a refresh read a few thousand rows however
long the day has run.

ROI = GMV / spend. Profit = GMV x gross margin - spend. Days are promotion days
(control.clock.day_start).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Connection, func, select

from control.clock import day_start
from control.domain import (
    DEFAULT_ROI_FLOOR,
    Campaign,
    DecidedBy,
    GuardState,
    Override,
    OverrideField,
    RuleAnswer,
)
from control.policy import KillSwitch, held_campaigns, resolve_policy
from guards.alerts.core import SEVERITY_RANK
from guards.alerts.events import OPENING_KINDS, AlertKind
from guards.roi import calibrated_bought_roi
from store import repo
from store import schema as s

DEFAULT_WINDOW_S = 3600


def safe_ratio(num, den):
    """num / den, NaN where den is 0 (ROI of nothing spent is unknown, not infinite)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


# --- small store queries --------------------------------------------------------------------

def latest_bucket(conn: Connection) -> int | None:
    """The promotion clock: the newest decision bucket in the store."""
    return conn.execute(select(func.max(s.decisions.c.bucket_ts))).scalar()


# What the board, the policy and the override page need of each slot of the newest bucket.
SLOT_COLUMNS = ("campaign_id", "audience_package", "model_bid", "audience_on", "budget_share", "pred_roi",
                "pred_value", "pool_bid")
_TEXT_COLUMNS = ("campaign_id", "audience_package")


def raw_rows(conn: Connection, sql: str, **params) -> list[tuple]:
    """Plain DBAPI tuples for `sql` with :name parameters, in the caller's transaction.

    Thousands of rows per refresh: SQLAlchemy Row objects and pandas' row sniffing
    cost more than the query itself.
    """
    if conn.dialect.paramstyle == "pyformat":
        sql = re.sub(r":(\w+)", r"%(\1)s", sql)
        args: object = params
    else:
        args = tuple(params[name] for name in re.findall(r":(\w+)", sql))
        sql = re.sub(r":\w+", "?", sql)
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(sql, args)
        return cursor.fetchall()
    finally:
        cursor.close()


def bucket_slots(conn: Connection, bucket_ts: int) -> pd.DataFrame:
    """Every slot decision of one bucket (uses ix_decisions_bucket).

    Raw DBAPI rows and object-dtype text columns: for the ~12,000 rows of a bucket
    this is several times faster than ORM rows into inferred string columns.
    """
    rows = raw_rows(conn, f"SELECT {', '.join(SLOT_COLUMNS)} FROM decisions WHERE bucket_ts = :b", b=bucket_ts)
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(SLOT_COLUMNS)
    data = {}
    for name, values in zip(SLOT_COLUMNS, columns, strict=True):
        if name in _TEXT_COLUMNS:
            data[name] = pd.Series(np.array(values, dtype=object), dtype=object)
        elif name == "audience_on":
            data[name] = np.array(values, dtype=bool)
        else:
            data[name] = np.array(values, dtype=np.float64)  # None (no pool answer) becomes NaN
    frame = pd.DataFrame(data)
    frame["bucket_ts"] = bucket_ts
    return frame


def guard_table(conn: Connection) -> pd.DataFrame:
    """Every guard's current state (one row per guard x campaign)."""
    rows = conn.execute(select(s.guard_states).order_by(s.guard_states.c.campaign_id)).all()
    return pd.DataFrame([r._mapping for r in rows],
                        columns=["guard", "campaign_id", "mode", "state", "event_id", "version", "updated_ts"])


@dataclass(frozen=True)
class HoldReason:
    """Why the model does not decide a campaign now, read generically from its guard's state document
    (guards.machine.MachineState) or the kill switch, for a page to say in words."""

    guard: str                   # the guard's name (roi, pacing, inventory ...), or "kill_switch"
    mode: str                    # tripped | probation | forced_pool | kill_switch
    cause: str                   # the trip's cause code (the rule that fired, stale_data, forced ...)
    figures: dict[str, float]    # the figures at the trip (the one that crossed, the floor ...)
    tripped_ts: int | None       # when the guard took the campaign
    action: str                  # pool | bid_cut | pause
    bid_factor: float = 1.0


def hold_reasons(conn: Connection, campaign_ids: Sequence[str], guards: Mapping[str, GuardState],
                 kill: KillSwitch) -> dict[str, HoldReason]:
    """Per campaign the model does not decide, why: a kill switch (as the policy, first), else the guard
    the policy follows."""
    out = {c: HoldReason("kill_switch", "kill_switch", "global" if kill.global_on else "campaign", {}, None, "pool")
           for c in campaign_ids if kill.covers(c)}
    held = {c: g for c, g in guards.items() if g.holds and c not in out}
    if held:
        rows = conn.execute(select(s.guard_states.c.guard, s.guard_states.c.campaign_id, s.guard_states.c.state)
                            .where(s.guard_states.c.campaign_id.in_(list(held)))).all()
        for row in sorted(rows, key=lambda r: r.guard):
            state, doc = held[row.campaign_id], row.state or {}
            # The guard whose mode and action the policy follows (control.domain.most_restrictive).
            if row.campaign_id not in out and doc.get("mode") == state.mode.value \
                    and doc.get("action", "pool") == state.action.value:
                out[row.campaign_id] = state_reason(row.guard, doc)
    return out


def state_reason(guard: str, doc: Mapping) -> HoldReason:
    """A guard's state document (guards.machine.MachineState.to_json) as a HoldReason: its cause, the
    figures at the trip (with the calibrated ROI a model_calibration trip stands for), when, the action."""
    figures = {k: float(v) for k, v in (doc.get("figures_at_trip") or {}).items()
               if isinstance(v, (int, float)) and v == v}
    calibrated = calibrated_bought_roi(figures)
    if calibrated is not None:
        figures["calibrated_roi"] = calibrated
    trips = doc.get("trip_ts") or []
    mode = str(doc.get("mode") or "model")
    action = "pool" if mode == "forced_pool" else str(doc.get("action") or "pool")
    return HoldReason(guard, mode, str(doc.get("cause") or ""), figures,
                      int(trips[-1]) if trips else doc.get("since_ts"), action, float(doc.get("bid_factor", 1.0)))


def guard_history(conn: Connection, campaign_id: str, limit: int = 200) -> pd.DataFrame:
    q = (select(s.guard_events).where(s.guard_events.c.campaign_id == campaign_id)
         .order_by(s.guard_events.c.ts.desc()).limit(limit))
    return pd.DataFrame([r._mapping for r in conn.execute(q)],
                        columns=["event_id", "ts", "guard", "campaign_id", "kind", "payload"])


def trip_ledger(conn: Connection, since_ts: int | None = None) -> pd.DataFrame:
    q = select(s.guard_trips).order_by(s.guard_trips.c.tripped_ts.desc())
    if since_ts is not None:
        q = q.where((s.guard_trips.c.restored_ts.is_(None)) | (s.guard_trips.c.restored_ts >= since_ts))
    return pd.DataFrame([r._mapping for r in conn.execute(q)],
                        columns=[c.name for c in s.guard_trips.columns])


ALERT_COLUMNS = ("alert_id", "event_key", "condition_key", "severity", "kind", "campaign_id", "channel", "status",
                 "attempts", "repeats", "occurred_ts", "created_ts", "last_seen_ts", "delivered_ts", "acked_ts",
                 "acked_by", "resolved_ts", "last_error", "payload")
# What the panel lists: one row per alert (an event, or an open condition), its channels named.
EVENT_COLUMNS = ("alert_id", "event_key", "condition_key", "severity", "kind", "campaign_id", "campaigns", "channels",
                 "status", "delivery", "attempts", "repeats", "occurred_ts", "created_ts", "last_ts", "delivered_ts",
                 "acked_ts", "acked_by", "resolved_ts", "last_error", "payload")
_STATUS_ORDER = ("dead", "pending", "delivered")
NOTICE_KINDS = tuple(k.value for k in (AlertKind.OVERRIDE_APPROVED, AlertKind.OVERRIDE_REJECTED,
                                      AlertKind.OVERRIDE_REVOKED, AlertKind.OVERRIDE_EXPIRED))  # the worst channel's status stands for the alert


def _campaigns(campaign_id: object, payload: object) -> str:
    """The campaign, or a shared condition's members' campaigns (the first few, and how many)."""
    members = payload.get("members") if isinstance(payload, dict) else None
    if not isinstance(members, dict) or not members:
        return campaign_id if isinstance(campaign_id, str) else ""
    names = sorted({str(c) for c in members.values() if c})
    return ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:3])} … ({len(names)})"


def fold_alerts(rows: pd.DataFrame, by: str) -> pd.DataFrame:
    """Outbox rows (ALERT_COLUMNS) folded into one row per `by` (event_key: an event sent to several channels;
    condition_key: an open condition with its repeats and reminders), newest first, channels listed.

    The row keeps the first alert's id (where links and acknowledgement land), kind and figures; the
    worst channel's delivery status; repeats counts the later events and the firings folded into them.
    """
    if rows.empty:
        return pd.DataFrame(columns=list(EVENT_COLUMNS))
    rows = rows.sort_values("alert_id")
    g = rows.groupby(by, sort=False)
    out = rows.drop_duplicates(by).set_index(by)  # the first alert of each
    rank = rows["status"].map(_STATUS_ORDER.index)
    per_channel = rank.groupby([rows[by], rows["channel"]]).min().reset_index(name="rank").sort_values([by, "channel"])
    named = per_channel["channel"] + ": " + per_channel["rank"].map(_STATUS_ORDER.__getitem__)
    out["channels"] = per_channel.groupby(by)["channel"].agg(", ".join)
    out["delivery"] = named.groupby(per_channel[by]).agg(" · ".join)
    out["status"] = per_channel.groupby(by)["rank"].min().map(_STATUS_ORDER.__getitem__)
    out["severity"] = rows["severity"].map(lambda v: SEVERITY_RANK.get(v, len(SEVERITY_RANK))).groupby(
        rows[by]).min().map({v: k for k, v in SEVERITY_RANK.items()})
    events = rows.groupby([by, "event_key"])["repeats"].max().groupby(level=0).agg(["count", "sum"])
    out["repeats"] = events["count"] - 1 + events["sum"]
    out["attempts"] = g["attempts"].max()
    out["occurred_ts"] = g["occurred_ts"].min()
    out["last_ts"] = pd.concat([g["created_ts"].max(), g["last_seen_ts"].max()], axis=1).max(axis=1)
    for col in ("delivered_ts", "acked_ts", "resolved_ts"):
        out[col] = g[col].min()
    out["acked_by"] = g["acked_by"].first()
    errors = rows[rows["last_error"].fillna("") != ""].drop_duplicates([by, "last_error"])
    out["last_error"] = errors.groupby(by)["last_error"].agg("; ".join).reindex(out.index).fillna("")
    newest = rows.drop_duplicates(by, keep="last").set_index(by)["payload"]  # members as they stand now
    out["campaigns"] = [_campaigns(c, p) for c, p in zip(out["campaign_id"], newest.reindex(out.index), strict=True)]
    out = out.reset_index()
    return out[list(EVENT_COLUMNS)].sort_values("alert_id", ascending=False, ignore_index=True)


def _open_rows(conn: Connection) -> pd.DataFrame:
    a = s.alerts.c
    q = select(*[a[c] for c in ALERT_COLUMNS]).where(a.acked_ts.is_(None), a.resolved_ts.is_(None),
                                                       a.kind.in_(OPENING_KINDS))
    return pd.DataFrame(conn.execute(q).all(), columns=list(ALERT_COLUMNS))


def alerts_frame(conn: Connection, *, open_only: bool = False, limit: int | None = 500) -> pd.DataFrame:
    """Alerts newest first, one row per event with its channels (EVENT_COLUMNS); open_only: one row per
    open condition (firing, nobody acknowledged, not resolved), its repeats and reminders folded in."""
    a = s.alerts.c
    if open_only:
        folded = fold_alerts(_open_rows(conn), "condition_key")
        return folded if limit is None else folded.head(limit)
    q = select(*[a[c] for c in ALERT_COLUMNS])
    if limit is not None:  # the newest `limit` events, each with all its channels' rows
        newest = select(a.event_key).group_by(a.event_key).order_by(func.max(a.alert_id).desc()).limit(limit)
        q = q.where(a.event_key.in_(newest))
    return fold_alerts(pd.DataFrame(conn.execute(q).all(), columns=list(ALERT_COLUMNS)), "event_key")


def notices_for(conn: Connection, username: str, *, since_ts: int, limit: int = 10) -> pd.DataFrame:
    """Alerts addressed to a person (payload `notify`: e.g. their override approved, rejected, revoked or
    expired) since `since_ts`, one row per event, newest first."""
    a = s.alerts.c
    rows = pd.DataFrame(conn.execute(select(*[a[c] for c in ALERT_COLUMNS]).where(
        a.occurred_ts >= since_ts, a.kind.in_(NOTICE_KINDS)).order_by(a.alert_id.desc()).limit(50 * limit)).all(),
        columns=list(ALERT_COLUMNS))
    mine = rows[[username in ((p or {}).get("notify") or ()) for p in rows["payload"]]]
    return fold_alerts(mine, "event_key").head(limit)


def open_alert_count(conn: Connection) -> int:
    """Open alerts as the panel counts them: one per open condition."""
    a = s.alerts.c
    return conn.execute(select(func.count(func.distinct(a.condition_key)))
                        .where(a.acked_ts.is_(None), a.resolved_ts.is_(None), a.kind.in_(OPENING_KINDS))).scalar() or 0


def outbox_counts(conn: Connection) -> dict[str, int]:
    """Alert outbox by delivery status: pending / delivered / dead."""
    rows = conn.execute(select(s.alerts.c.status, func.count()).group_by(s.alerts.c.status)).all()
    counts = {"pending": 0, "delivered": 0, "dead": 0}
    counts.update({status: n for status, n in rows})
    return counts


def active_trip_count(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(s.guard_trips)
                        .where(s.guard_trips.c.restored_ts.is_(None))).scalar() or 0


# --- the day's sums, from the rollups the writers keep (store.schema.board_rollups / board_series) ---

_SUMS = ", ".join(s.ROLLUP_SUMS)
_SUMMED = ", ".join(f"SUM({c})" for c in s.ROLLUP_SUMS)


def _sums_frame(rows: list[tuple], key: str) -> pd.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [()] * (1 + len(s.ROLLUP_SUMS))
    keys = pd.Index(np.array(columns[0], dtype=object if key == "campaign_id" else np.int64), name=key)
    return pd.DataFrame({n: np.array(c, dtype=np.float64) for n, c in zip(s.ROLLUP_SUMS, columns[1:], strict=True)},
                        index=keys)


def window_start(newest: int, window_s: int) -> int:
    """Where a window of `window_s` ending at the newest bucket starts: today only, and rounded out to
    the rollups' five minutes (a window of the last hour sums up to 64 minutes of one-minute buckets)."""
    since = max(newest - window_s, day_start(newest))
    return since - since % s.ROLLUP_PERIOD_S


def campaign_totals(conn: Connection, newest: int, since: int) -> pd.DataFrame:
    """Outcome and decision sums per campaign over today's buckets from `since` (window_start), indexed by
    campaign_id: the day's rollup when the window is the whole day, else its five-minute rollups."""
    day = day_start(newest)
    if since <= day:
        rows = raw_rows(conn, f"SELECT campaign_id, {_SUMS} FROM board_rollups WHERE period_s = :p AND period_ts = :d",
                         p=s.ROLLUP_DAY, d=day)
    else:
        rows = raw_rows(conn, f"SELECT campaign_id, {_SUMMED} FROM board_rollups WHERE period_s = :p "
                               "AND period_ts >= :since GROUP BY campaign_id", p=s.ROLLUP_PERIOD_S, since=since)
    return _sums_frame(rows, "campaign_id")


def bucket_series(conn: Connection, newest: int, since: int) -> pd.DataFrame:
    """Outcome and decision sums over every campaign per bucket from `since` to the newest, in time order."""
    rows = raw_rows(conn, f"SELECT bucket_ts, {_SUMS} FROM board_series WHERE bucket_ts >= :since "
                           "AND bucket_ts <= :newest ORDER BY bucket_ts", since=since, newest=newest)
    return _sums_frame(rows, "bucket_ts")


# --- pure read models -----------------------------------------------------------------------

def with_roi(totals: pd.DataFrame) -> pd.DataFrame:
    """Outcome sums per campaign with realised ROI (GMV / spend)."""
    return totals.assign(roi=safe_ratio(totals["gmv"], totals["spend"]))


def served_policy(slots: pd.DataFrame, overrides: Sequence[Override], guards: Mapping[str, GuardState],
                  kill: KillSwitch, now_ts: int) -> pd.DataFrame:
    """The effective policy now over the newest bucket's model plan: bid, audience_on, the daily budget a
    budget override sets (NaN: the campaign's own), decided_by per slot.

    The rule pool's answer per slot is the one the bidder recorded with the
    decision (pool_bid), so the board shows what would be served at this moment.
    Only campaigns something acts on (an override in force, a guard on the pool,
    a kill switch) go through control.policy.resolve_policy; the rest are the
    model's by definition, which keeps a refresh cheap on a quiet day.
    """
    n = len(slots)
    bid = slots["model_bid"].to_numpy(dtype=np.float64).copy()
    audience_on = slots["audience_on"].to_numpy(dtype=bool).copy()
    daily_budget = np.full(n, np.nan)
    decided_by = np.full(n, DecidedBy.MODEL.value, dtype=object)
    campaign_ids = slots["campaign_id"].to_numpy(dtype=object)
    acted_on = (held_campaigns(pd.unique(campaign_ids), guards, kill)
                | {o.scope.campaign_id for o in overrides if o.in_force(now_ts)})
    rows = np.flatnonzero(pd.Series(campaign_ids).isin(acted_on).to_numpy()) if acted_on else np.arange(0)
    if len(rows):
        sub = slots.iloc[rows]
        plan = pd.DataFrame({"campaign_id": sub["campaign_id"], "audience_package": sub["audience_package"],
                             "bucket_ts": sub["bucket_ts"], "bid": sub["model_bid"],
                             "audience_on": sub["audience_on"], "budget_share": sub["budget_share"]})
        policy = resolve_policy(plan, overrides, guards, kill, _RecordedPool(sub), now_ts)
        bid[rows] = policy["bid"].to_numpy(dtype=np.float64)
        audience_on[rows] = policy["audience_on"].to_numpy(dtype=bool)
        daily_budget[rows] = policy["daily_budget"].to_numpy(dtype=np.float64)
        decided_by[rows] = policy["decided_by"].to_numpy(dtype=object)
    return pd.DataFrame({"bid": bid, "audience_on": audience_on, "daily_budget": daily_budget,
                         "decided_by": pd.Series(decided_by, dtype=object)})


class _RecordedPool(Mapping):
    """The rule pool's answers as the bidder recorded them (pool_bid); RuleAnswers are made only
    for the slots the policy asks about."""

    def __init__(self, slots: pd.DataFrame):
        known = slots["pool_bid"].notna().to_numpy()
        self._bids = dict(zip(zip(slots["campaign_id"].to_numpy()[known],
                                  slots["audience_package"].to_numpy()[known], strict=True),
                              slots["pool_bid"].to_numpy()[known].tolist(), strict=True))

    def __getitem__(self, key: tuple[str, str]) -> RuleAnswer:
        return RuleAnswer("pool", self._bids[key])

    def __iter__(self):
        return iter(self._bids)

    def __len__(self) -> int:
        return len(self._bids)


_AUTHORITY = (DecidedBy.MODEL.value, DecidedBy.GUARD.value, DecidedBy.RULE_POOL.value,  # lowest first
              DecidedBy.OVERRIDE.value)


def campaign_table(slots: pd.DataFrame, policy: pd.DataFrame, campaigns: Mapping[str, Campaign],
                   day: pd.DataFrame, window: pd.DataFrame, guards: Mapping[str, GuardState],
                   floors: Mapping[str, float], overrides: Sequence[Override], now_ts: int) -> pd.DataFrame:
    """One row per campaign: bid, budget and pace, packages on, ROI vs floor, guard, who decides.

    `slots` and `policy` are row-aligned (the newest bucket); `day` and `window`
    are outcome totals per campaign with ROI (with_roi). Per-campaign figures over
    the packages on: mean served bid, mean predicted ROI; the campaign is
    "decided by" the highest authority deciding any of its slots.
    """
    codes, uniques = pd.factorize(slots["campaign_id"].to_numpy(dtype=object), sort=True)
    ids = np.asarray(uniques, dtype=object)
    k = len(ids)
    on = policy["audience_on"].to_numpy(dtype=bool)
    count = np.bincount(codes, minlength=k).astype(np.float64)
    n_on = np.bincount(codes, weights=on, minlength=k)
    served = policy["bid"].to_numpy(dtype=np.float64)
    pred = slots["pred_roi"].to_numpy(dtype=np.float64)
    authority = np.zeros(k, dtype=np.int64)
    rank = pd.Series(policy["decided_by"].to_numpy(dtype=object)).map(
        {name: i for i, name in enumerate(_AUTHORITY)}).to_numpy(dtype=np.int64)
    np.maximum.at(authority, codes, rank)
    info = [campaigns.get(c) for c in ids]
    budget = np.array([c.daily_budget if c else np.nan for c in info])
    spend = day["spend"].reindex(ids).fillna(0.0).to_numpy() if len(day) else np.zeros(k)
    gmv = day["gmv"].reindex(ids).fillna(0.0).to_numpy() if len(day) else np.zeros(k)
    realised = window["roi"].reindex(ids).to_numpy() if len(window) else np.full(k, np.nan)
    pred_on = safe_ratio(np.bincount(codes, weights=np.where(on, pred, 0.0), minlength=k), n_on)
    floor = np.array([floors.get(c, DEFAULT_ROI_FLOOR) for c in ids])
    decided_by = np.array(_AUTHORITY, dtype=object)[authority]
    who, until = _override_owners(overrides, now_ts)
    by_override = decided_by == DecidedBy.OVERRIDE.value
    return pd.DataFrame({
        "campaign_id": pd.Series(ids, dtype=object),
        "bid": safe_ratio(np.bincount(codes, weights=np.where(on, served, 0.0), minlength=k), n_on),
        "model_bid": safe_ratio(np.bincount(codes, weights=slots["model_bid"].to_numpy(np.float64), minlength=k),
                                count),
        "packages_on": n_on.astype(np.int64),
        "packages": count.astype(np.int64),
        "pred_roi": pred_on,
        "name": pd.Series([c.name if c else "" for c in info], dtype=object),
        "daily_budget": budget,
        "margin": np.array([c.gross_margin if c else 0.0 for c in info]),
        "spend_today": spend,
        "gmv_today": gmv,
        "pace": safe_ratio(spend, budget),
        "realised_roi": realised,
        "floor": floor,
        "guard": pd.Series([guards[c].mode.value if c in guards else "model" for c in ids], dtype=object),
        "below_floor": (pred_on < floor) | (realised < floor),
        "decided_by": pd.Series(decided_by, dtype=object),
        "override_by": pd.Series([who.get(c, "") if o else "" for c, o in zip(ids, by_override, strict=True)],
                                 dtype=object),
        "override_until": pd.Series([until.get(c) if o else None for c, o in zip(ids, by_override, strict=True)],
                                    dtype=object),
    })


def _override_owners(overrides: Sequence[Override], now_ts: int) -> tuple[dict[str, str], dict[str, int]]:
    who: dict[str, str] = {}
    until: dict[str, int] = {}
    for o in overrides:
        if not o.in_force(now_ts):
            continue
        c = o.scope.campaign_id
        label = f"{o.proposed_by} → {o.reviewed_by} #{o.override_id}"
        who[c] = f"{who[c]}; {label}" if c in who else label
        until[c] = min(until.get(c, o.expires_ts), o.expires_ts)
    return who, until


@dataclass(frozen=True)
class Kpis:
    spend: float
    gmv: float
    realised_roi: float
    predicted_roi: float
    profit: float
    active_trips: int
    open_alerts: int


def kpis(table: pd.DataFrame, active_trips: int, open_alerts: int) -> Kpis:
    """The KPI row over today's campaign table (predicted ROI: mean over packages on)."""
    spend = float(table["spend_today"].sum()) if len(table) else 0.0
    gmv = float(table["gmv_today"].sum()) if len(table) else 0.0
    profit = float((table["gmv_today"] * table["margin"].fillna(0.0)).sum() - spend) if len(table) else 0.0
    pred = float(np.nanmean(table["pred_roi"])) if len(table) and table["pred_roi"].notna().any() else float("nan")
    return Kpis(spend, gmv, float(safe_ratio(gmv, spend)), pred, profit, active_trips, open_alerts)


def roi_series(series: pd.DataFrame) -> pd.DataFrame:
    """Per bucket (`bucket_series`): predicted ROI (mean over slots), realised ROI, the rule pool's predicted ROI.

    Long format (bucket_ts, series, roi) for an Altair line chart.
    """
    frames = [
        pd.DataFrame({"bucket_ts": series.index, "series": "predicted",
                      "roi": safe_ratio(series["pred_roi"], series["n"])}),
        pd.DataFrame({"bucket_ts": series.index, "series": "rule_pool_predicted",
                      "roi": safe_ratio(series["pool_pred_roi"], series["n_pool"])}),
        pd.DataFrame({"bucket_ts": series.index, "series": "realised",
                      "roi": safe_ratio(series["gmv"], series["spend"])}),
    ]
    series = pd.concat(frames, ignore_index=True)
    return series[np.isfinite(series["roi"].to_numpy(dtype=np.float64))].reset_index(drop=True)


def shadow_comparison(decision_totals: pd.DataFrame) -> pd.DataFrame:
    """Model vs manual rule pool per campaign over a window: mean predicted ROI of each.

    `pool_pred_roi` is the shadow score: the ROI the model predicts had the rule
    pool's bid been served. `pool_better` marks campaigns where the pool would do better.
    """
    g = decision_totals[decision_totals["n"] > 0]
    out = pd.DataFrame({"model_pred_roi": safe_ratio(g["pred_roi"], g["n"]),
                        "pool_pred_roi": safe_ratio(g["pool_pred_roi"], g["n_pool"])}, index=g.index)
    out["gap"] = out["pool_pred_roi"] - out["model_pred_roi"]
    out["pool_better"] = out["gap"] > 0
    return out.reset_index().sort_values("gap", ascending=False, na_position="last").reset_index(drop=True)


def trip_periods(trips: pd.DataFrame, now_ts: int, campaign_id: str | None = None) -> pd.DataFrame:
    """[start, end) of each trip for shading a chart; an open trip ends now."""
    if trips.empty:
        return pd.DataFrame(columns=["campaign_id", "start", "end"])
    t = trips if campaign_id is None else trips[trips["campaign_id"] == campaign_id]
    end = pd.to_numeric(t["restored_ts"], errors="coerce").fillna(now_ts).astype(np.int64)
    return pd.DataFrame({"campaign_id": t["campaign_id"].to_numpy(), "start": t["tripped_ts"].to_numpy(),
                         "end": end.to_numpy()})


def roi_at(slots: pd.DataFrame, bids: np.ndarray) -> float:
    """The model's predicted ROI of `slots` had they been bought at `bids` (mean over the slots): the ROI
    scales with the cost per click, which scales with the bid at the slot's own paid-to-bid ratio."""
    bids = np.asarray(bids, dtype=np.float64)
    at = slots["pred_roi"].to_numpy(np.float64) * slots["model_bid"].to_numpy(np.float64)
    usable = bids > 0
    return float(np.mean(at[usable] / bids[usable])) if usable.any() else float("nan")


@dataclass(frozen=True)
class ServedNow:
    """What a scope (a campaign, or one of its audience packages) is served now, and who decides it."""

    field: OverrideField
    value: float       # bid: the slot's served bid (campaign: mean over its packages on); budget: the daily
                       # budget in force; audience: 1 when on (campaign: when any package is on)
    decided_by: str    # the highest authority deciding a slot of the scope (DecidedBy value)
    packages: int
    packages_on: int
    pred_roi: float    # the model's predicted ROI at the served bids


def served_now(field: OverrideField, slots: pd.DataFrame, policy: pd.DataFrame, daily_budget: float,
               audience_package: str | None) -> ServedNow:
    """From the newest bucket's slots of one campaign and their served policy (served_policy, row-aligned);
    `daily_budget`: the campaign's own (a budget override in force replaces it)."""
    rows = np.ones(len(slots), dtype=bool) if audience_package is None else \
        (slots["audience_package"] == audience_package).to_numpy()
    scope, served = slots[rows], policy[rows]
    on = served["audience_on"].to_numpy(dtype=bool)
    bids = served["bid"].to_numpy(np.float64)
    rank = served["decided_by"].map({name: i for i, name in enumerate(_AUTHORITY)})
    decided_by = _AUTHORITY[int(rank.max())] if len(rank) else DecidedBy.MODEL.value
    if field is OverrideField.BID:
        value = float(bids[on].mean()) if on.any() else (float(bids.mean()) if len(bids) else float("nan"))
    elif field is OverrideField.BUDGET:
        overridden = served["daily_budget"].dropna()
        value = float(overridden.iloc[0]) if len(overridden) else float(daily_budget)
    else:
        value = 1.0 if on.any() else 0.0
    return ServedNow(field, value, decided_by, len(scope), int(on.sum()), roi_at(scope, bids))


@dataclass(frozen=True)
class ProposalEffect:
    """What a proposal would change, from the model's own predictions at the newest bucket."""

    served: float
    proposed: float
    pred_roi_served: float
    pred_roi_proposed: float   # bid: at the proposed bid; audience: the packages switched; budget: NaN
    change: float              # proposed / served - 1


def proposal_effect(now: ServedNow, value: float, slots: pd.DataFrame,
                    audience_package: str | None) -> ProposalEffect:
    scope = slots if audience_package is None else slots[slots["audience_package"] == audience_package]
    if now.field is OverrideField.BID:
        proposed_roi = roi_at(scope, np.full(len(scope), value))
    elif now.field is OverrideField.AUDIENCE_ON:
        proposed_roi = now.pred_roi
    else:
        proposed_roi = float("nan")
    change = value / now.value - 1 if now.value else float("nan")
    return ProposalEffect(now.value, value, now.pred_roi, proposed_roi, change)


@dataclass(frozen=True)
class BoardView:
    """Everything the live board shows for one refresh."""

    latest_bucket: int
    now_ts: int
    kpis: Kpis
    campaigns: pd.DataFrame
    series: pd.DataFrame
    trips: pd.DataFrame
    shadow: pd.DataFrame
    kill_switch: KillSwitch
    holds: dict[str, HoldReason]   # why the model does not decide a campaign (hold_reasons)


def build_board(conn: Connection, campaigns: Mapping[str, Campaign], slots: pd.DataFrame, newest: int,
                now_ts: int, window_s: int = DEFAULT_WINDOW_S, floors: Mapping[str, float] | None = None, *,
                totals=campaign_totals, series=bucket_series) -> BoardView:
    """The live board at `newest` (the newest bucket; `slots` are its decisions).

    `floors`: each campaign's ROI floor as its guard is configured (guards.config);
    missing ones are DEFAULT_ROI_FLOOR.

    Overrides, guard states and the kill switch are read fresh (they change
    between buckets); the day's and the window's sums come from `totals` and
    `series` (the rollups; the benchmark's baseline sums the raw rows instead).
    """
    inputs = repo.load_policy_inputs(conn)
    overrides, guards, kill = inputs.overrides, inputs.guards, inputs.kill_switch
    day = day_start(newest)
    since = window_start(newest, window_s)
    today = totals(conn, newest, day)
    window = today if since <= day else totals(conn, newest, since)
    policy = served_policy(slots, overrides, guards, kill, now_ts)
    table = campaign_table(slots, policy, campaigns, with_roi(today), with_roi(window), guards, floors or {},
                           overrides, now_ts)
    trips = trip_ledger(conn, since_ts=day)
    return BoardView(newest, now_ts, kpis(table, active_trip_count(conn), open_alert_count(conn)), table,
                     roi_series(series(conn, newest, since)), trip_periods(trips, newest),
                     shadow_comparison(window), kill, hold_reasons(conn, list(table["campaign_id"]), guards, kill))
