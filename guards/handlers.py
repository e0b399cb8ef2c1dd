"""Side effects of guard events, all in the caller's transaction: the store
(guard_states, guard_events), the trip ledger (guard_trips), the audit trail and
the alert outbox. Committing them together is what makes the worker restart-safe:
a tick is either wholly recorded (state, event, alert) or not at all, and is then
re-evaluated to the same events.

Loss avoided (ledger, estimate; `bidlens stress` measures it exactly from two arms):
  profit_served = realised ROI of what the guard served during the trip (the pool, the model at a
                  cut bid, nothing when paused) x margin x its spend - its spend
  profit_model  = the model's ROI at the trip x margin x S_model - S_model,
  with S_model = the model's spend per hour just before the trip x the trip's length;
  loss avoided = profit_served - profit_model. The model's ROI at the trip is the
  realised (lag-corrected) ROI when the realised evidence (cusum) tripped it, the
  calibrated predicted ROI of the clicks bought for the pooled calibration rule, else
  the predicted ROI; the served ROI is lag-corrected like the guard's. What served is
  the rule pool, the model's cut bids, or nothing (a pause spends nothing, so its
  profit is 0). For a breaker watching a fact outside the model (competitor prices,
  stock) the model's own prediction does not know that fact, so its realised ROI at
  the trip is used when there is one. A breaker that only alerts changed no traffic:
  it avoided nothing by itself (0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, insert, select, text, update

from control.audit import AuditRecord
from control.domain import GuardAction, GuardMode
from guards.config import ObserveConfig
from guards.machine import ActionChanged, GuardEvent, GuardTripped, MachineState, ProbationFailed
from guards.observe import lag_share
from guards.roi import calibrated_bought_roi
from store import repo
from store import schema as s

WORKER_ACTOR = "guard-worker"

# (conn, event, event_id, drivers) -> None: put an alert for the event in the outbox.
AlertSink = Callable[[Connection, GuardEvent, int, list[dict]], None]
# (conn, campaign_id, since_ts, now_ts) -> drivers of the change ([{feature, display_zh, display_en, delta}]).
DriversFn = Callable[[Connection, str, int, int], list[dict]]


@dataclass(frozen=True, slots=True)
class StoredState:
    state: MachineState
    version: int
    event_id: int | None


def load_states(conn: Connection) -> dict[tuple[str, str], StoredState]:
    return {(r.guard, r.campaign_id): StoredState(MachineState.from_json(r.state), r.version, r.event_id)
            for r in conn.execute(select(s.guard_states))}


def save_state(conn: Connection, guard: str, campaign_id: str, state: MachineState,
               stored: StoredState | None, event_id: int | None, now_ts: int) -> None:
    """Write the state; ConflictError if someone (a manager's force) changed it since it was read."""
    values = {"mode": state.mode.value, "state": state.to_json(), "event_id": event_id, "updated_ts": now_ts}
    g = s.guard_states
    if stored is None:
        conn.execute(insert(g).values(guard=guard, campaign_id=campaign_id, version=1, **values))
        return
    result = conn.execute(update(g).where(g.c.guard == guard, g.c.campaign_id == campaign_id,
                                          g.c.version == stored.version)
                          .values(version=stored.version + 1, **values))
    if result.rowcount != 1:
        raise repo.ConflictError(f"guard {guard} of {campaign_id} was changed by someone else; retry")


def _insert_event(conn: Connection, event: GuardEvent) -> int:
    result = conn.execute(insert(s.guard_events).values(ts=event.ts, guard=event.guard,
                                                        campaign_id=event.campaign_id, kind=event.kind,
                                                        payload=event.payload()))
    return int(result.inserted_primary_key[0])


# Breakers that watch a fact outside the model: their ledger holds the model's realised ROI at the trip.
OUTSIDE_FACT_GUARDS = frozenset({"competitor", "low_stock"})
# How a closed trip's loss avoided was found (guard_trips.details.loss_method).
LOSS_METHODS = {
    "estimate": "what served during the trip against the model at its ROI and spend rate of the trip's moment",
    "alert_only": "an alert only: the model kept the traffic, so the breaker itself changed no money",
}


def _roi_at_trip(event: GuardTripped) -> float | None:
    figures = dict(event.figures)
    if event.cause == "model_calibration":
        return calibrated_bought_roi(figures)
    if event.cause == "cusum" or event.guard in OUTSIDE_FACT_GUARDS:
        return figures.get("realised_roi", figures.get("pred_roi"))
    return figures.get("pred_roi")


def _open_trip(conn: Connection, event: GuardTripped, event_id: int) -> None:
    figures = dict(event.figures)
    details = {"cause": event.cause, "action": event.action, "bid_factor": event.bid_factor,
               "figures_at_trip": figures}
    prior_share = figures.get("calibration_prior_share") or 0.0
    if event.cause == "model_calibration" and prior_share > 0:  # the pooled k leaned on the launch gate's prior
        details["leaned_on_prior"] = True
        details["prior_share"] = round(prior_share, 4)
    conn.execute(insert(s.guard_trips).values(
        guard=event.guard, campaign_id=event.campaign_id, tripped_ts=event.ts, event_id=event_id,
        roi_before=_roi_at_trip(event), detection_delay_s=event.detection_delay_s, details=details))


def trip_outcome(conn: Connection, campaign_id: str, since_ts: int, until_ts: int,
                 observe: ObserveConfig) -> tuple[float, float]:
    """(spend, lag-corrected ROI) of a campaign's buckets in [since_ts, until_ts)."""
    rows = conn.execute(text(
        "SELECT bucket_ts, SUM(spend), SUM(gmv) FROM outcomes WHERE campaign_id = :c "
        "AND bucket_ts >= :a AND bucket_ts < :b AND known_ts <= :b GROUP BY bucket_ts"),
        {"c": campaign_id, "a": since_ts, "b": until_ts}).all()
    if not rows:
        return 0.0, float("nan")
    bucket = np.array([r[0] for r in rows], dtype=np.int64)
    spend = np.array([r[1] for r in rows], dtype=np.float64)
    gmv = np.array([r[2] for r in rows], dtype=np.float64)
    weighted = float((spend * lag_share(until_ts - bucket, observe)).sum())
    return float(spend.sum()), (float(gmv.sum()) / weighted if weighted > 0 else float("nan"))


def loss_avoided(roi_model: float, model_spend: float, roi_pool: float, pool_spend: float,
                 margin: float) -> float:
    """Estimated profit of the pool minus the model's counterfactual profit over a trip, yuan."""
    profit_pool = (roi_pool * margin - 1.0) * pool_spend if pool_spend > 0 else 0.0
    profit_model = (roi_model * margin - 1.0) * model_spend
    return profit_pool - profit_model


def _open_trip_of(conn: Connection, event: GuardEvent):
    """The ledger's open trip of the event's guard and campaign (its newest), or None."""
    t = s.guard_trips
    return conn.execute(select(t).where(t.c.guard == event.guard, t.c.campaign_id == event.campaign_id,
                                        t.c.restored_ts.is_(None))
                        .order_by(t.c.trip_id.desc()).limit(1)).first()


def _note_on_trip(conn: Connection, event: GuardEvent, event_id: int) -> None:
    """One ledger line on the open trip: an action changed, or a probation failed (with its time)."""
    t = s.guard_trips
    open_trip = _open_trip_of(conn, event)
    if open_trip is None:
        return
    notes = [*open_trip.details.get("notes", []), {"ts": event.ts, "event_id": event_id, **event.payload()}]
    details = {**open_trip.details, "notes": notes}
    if isinstance(event, ActionChanged):
        details.update(action=event.action_after, bid_factor=event.bid_factor)
    conn.execute(update(t).where(t.c.trip_id == open_trip.trip_id).values(details=details))


def _close_trip(conn: Connection, event: GuardEvent, observe: ObserveConfig) -> None:
    t = s.guard_trips
    open_trip = _open_trip_of(conn, event)
    if open_trip is None:
        return
    campaign = repo.load_campaigns(conn).get(event.campaign_id)
    pool_spend, roi_after = trip_outcome(conn, event.campaign_id, open_trip.tripped_ts, event.ts, observe)
    at_trip = open_trip.details.get("figures_at_trip", {})
    hours = (event.ts - open_trip.tripped_ts) / 3600
    model_spend = float(at_trip.get("spend_per_hour", 0.0)) * hours
    loss, method = None, "estimate"
    if open_trip.details.get("action") == GuardAction.ALERT.value:
        loss, method = 0.0, "alert_only"
    elif open_trip.roi_before is not None and campaign is not None and (roi_after == roi_after or pool_spend == 0):
        loss = round(loss_avoided(open_trip.roi_before, model_spend, roi_after, pool_spend,
                                  campaign.gross_margin), 2)
    conn.execute(update(t).where(t.c.trip_id == open_trip.trip_id).values(
        restored_ts=event.ts, roi_after=None if roi_after != roi_after else roi_after, loss_avoided=loss,
        details={**open_trip.details, "pool_spend": round(pool_spend, 2), "model_spend_est": round(model_spend, 2),
                 "figures_at_restore": dict(event.figures), "closed_by": event.kind, "loss_method": method}))


def record_events(conn: Connection, events: Sequence[GuardEvent], *, actor: str, observe: ObserveConfig,
                  alert_sink: AlertSink | None = None, drivers_fn: DriversFn | None = None) -> int | None:
    """Store, ledger, audit and alert every event; returns the id of the last event that changed the mode."""
    mode_event_id = None
    for event in events:
        event_id = _insert_event(conn, event)
        if event.mode_after is not event.mode_before:
            mode_event_id = event_id
        if isinstance(event, GuardTripped):
            _open_trip(conn, event, event_id)
        elif isinstance(event, ActionChanged | ProbationFailed):
            _note_on_trip(conn, event, event_id)
        elif event.mode_after in (GuardMode.MODEL, GuardMode.FORCED_MODEL) and event.mode_before is not event.mode_after:
            _close_trip(conn, event, observe)
        repo.append_audit(conn, AuditRecord(event.ts, actor, f"guard.{event.kind}", "guard",
                                            f"{event.guard}:{event.campaign_id}",
                                            {"mode": event.mode_before.value},
                                            {"mode": event.mode_after.value, "event_id": event_id,
                                             **event.payload()}))
        if alert_sink is not None:
            drivers = drivers_fn(conn, event.campaign_id, event.ts - 3600, event.ts) \
                if drivers_fn is not None and isinstance(event, GuardTripped) else []
            alert_sink(conn, event, event_id, drivers)
    return mode_event_id
