"""Guard events -> the alert outbox (guards.alerts), in the guard's own transaction.

Events without an alert kind (probation started, a forced mode, a held release)
are recorded and audited but not pushed to WeCom. The competitor price and
safety-stock breakers speak their own kinds (pull_item / item_restored,
low_stock / stock_recovered) with their evidence, so routes can send them to
their own groups (a replenishment group for stock); their stale-data events are
not pushed: the ROI guard announces the same feeds' staleness.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from guards.alerts import AlertEvent, AlertKind, Severity, enqueue_alert
from guards.alerts.events import PHASE, AlertPhase
from guards.alerts.notices import day_over_alert
from guards.machine import GuardEvent
from guards.roi import calibrated_bought_roi

_KINDS = {"tripped": AlertKind.GUARD_TRIPPED, "probation_failed": AlertKind.PROBATION_FAILED,
          "action_changed": AlertKind.ACTION_CHANGED,
          "restored": AlertKind.GUARD_RESTORED, "data_stale": AlertKind.DATA_STALE,
          "data_fresh": AlertKind.DATA_FRESH}
_STALE_KINDS = ("data_stale", "data_fresh")
STALE_CONDITION = "data:stale"
# Why the guard left the model, as the alert says it (the trip rules of guards.roi and the machine).
CAUSES = {
    "pred_roi": {"zh": "模型计划的预测 ROI 连续低于底线", "en": "the model's plan predicts ROI below the floor, evaluation after evaluation"},
    "cusum": {"zh": "陆续到账的实际 GMV 累积成证据：ROI 低于底线",
              "en": "the realised GMV, counted as it arrived, adds up to evidence that ROI is below the floor"},
    "model_calibration": {"zh": "模型整体高估 ROI：按其全部活动的实际结果校准后，预测 ROI 低于底线",
                          "en": "the model over-promises across its campaigns: its predicted ROI, calibrated on "
                                "their pooled outcomes, is below the floor"},
    "stale_data": {"zh": "结果数据过期，按危险处理", "en": "outcome data is stale and treated as danger"},
    "competitor_price": {"zh": "竞品价格较其参考价下降超过下架线", "en": "a competitor's price is further below its "
                                                                     "reference than the limit"},
    "days_of_stock": {"zh": "按当前销速，库存可售天数低于安全库存", "en": "at the current sales rate the stock lasts "
                                                                         "fewer days than the safety stock"},
    "forced": {"zh": "主管手动指定", "en": "set by a manager"},
}


@dataclass(frozen=True)
class BreakerAlerts:
    """How a breaker watching a fact outside the model speaks: its kinds, its evidence, its severity."""

    kinds: dict[str, AlertKind]     # guard event kind -> alert kind
    evidence: tuple[str, ...]       # the signal's figures the message shows
    severity: Severity | None = None  # of its firing alerts (None: the event's own)


BREAKER_ALERTS = {
    "competitor": BreakerAlerts(
        {"tripped": AlertKind.PULL_ITEM, "probation_failed": AlertKind.PULL_ITEM,
         "restored": AlertKind.ITEM_RESTORED},
        ("competitor_price_drop", "max_drop", "competitor_price", "competitor_reference_price")),
    "low_stock": BreakerAlerts(
        {"tripped": AlertKind.LOW_STOCK, "probation_failed": AlertKind.LOW_STOCK,
         "restored": AlertKind.STOCK_RECOVERED},
        ("days_of_stock", "min_days", "stock_units", "sales_per_day"), Severity.WARNING),
}


def alert_for(event: GuardEvent, event_id: int, drivers: list[dict]) -> AlertEvent | None:
    """The alert an operator should get for `event` (None: none), with its figures and drivers."""
    breaker = BREAKER_ALERTS.get(event.guard)
    kind = breaker.kinds.get(event.kind) if breaker is not None else _KINDS.get(event.kind)
    if kind is None:
        return None
    figures = dict(event.figures)
    shown = breaker.evidence if breaker is not None else ("pred_roi", "realised_roi", "floor")
    payload = {k: figures[k] for k in shown if k in figures}
    if "spend_per_hour" in figures and breaker is None:
        payload["spend_at_risk"] = figures["spend_per_hour"]  # yuan per hour the model is spending
    payload["guard_event_id"] = event_id
    payload["mode"] = event.mode_after.value
    action = getattr(event, "action", None) or getattr(event, "action_after", None)
    if action:  # what the guard does now, and what it expected of each alternative
        payload["action"] = action
        payload["expected_roi"] = {a: round(figures[f"{a}_expected_roi"], 2) for a in ("model", "pool", "bid_cut")
                                   if figures.get(f"{a}_expected_roi") == figures.get(f"{a}_expected_roi")
                                   and f"{a}_expected_roi" in figures}
        if action == "bid_cut":
            payload["bid_factor"] = getattr(event, "bid_factor", 1.0)
    cause = getattr(event, "cause", "")
    if cause:
        payload["detail"] = CAUSES.get(cause, {"zh": cause, "en": cause})
    if cause == "model_calibration":  # neither the plan's prediction nor young outcomes show the drop; this does
        calibrated = calibrated_bought_roi(figures)
        if calibrated is not None:
            payload["calibrated_roi"] = calibrated
        share = figures.get("calibration_prior_share", 0.0)
        if share > 0:  # the trip leaned on the launch gate's calibration: say so in the message too
            payload["prior_share"] = round(share, 3)
            detail = payload["detail"]
            payload["detail"] = {
                "zh": f"{detail['zh']}（依赖上线闸门测得的校准先验：占证据的 {share:.0%}）",
                "en": f"{detail['en']} (leaning on the launch gate's calibration prior: {share:.0%} of the evidence)"}
    if drivers:
        payload["drivers"] = drivers
    for name in ("action_before", "action_after", "bid_factor"):  # an action change says what it changed
        if hasattr(event, name):
            payload[name] = getattr(event, name)
    severity = Severity(event.severity)
    if breaker is not None and breaker.severity is not None and PHASE[kind] is AlertPhase.FIRING:
        severity = breaker.severity
    # A stale feed is one condition however many campaigns and guards see it (each guard's view of a
    # campaign a member), apart from the trips: fresh data must not resolve a trip, nor a restore the staleness.
    stale = event.kind in _STALE_KINDS
    return AlertEvent(kind=kind, severity=severity, occurred_ts=event.ts,
                      campaign_id=event.campaign_id, guard=event.guard,
                      condition_key=STALE_CONDITION if stale else f"{event.guard}:{event.campaign_id}",
                      member=f"{event.guard}:{event.campaign_id}" if stale else "", payload=payload)


def enqueue_guard_alert(conn: Connection, event: GuardEvent, event_id: int, drivers: list[dict]) -> None:
    """guards.handlers.AlertSink: enqueue the event's alert in the caller's transaction."""
    alert = alert_for(event, event_id, drivers)
    if alert is not None:
        enqueue_alert(conn, alert, event.ts)


def enqueue_day_over_alert(conn: Connection, day_end_ts: int, trips: int, held: int) -> None:
    """guards.worker.DayOverSink: tell people the promotion day is over and the guard has stopped."""
    enqueue_alert(conn, day_over_alert(day_end_ts, trips, held), day_end_ts)
