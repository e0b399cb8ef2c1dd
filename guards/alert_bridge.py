"""Guard events -> the alert outbox (guards.alerts), in the guard's own transaction.

Events without an alert kind (probation started, a forced mode, a held release)
are recorded and audited but not pushed to WeCom.
"""

from __future__ import annotations

from sqlalchemy import Connection

from guards.alerts import AlertEvent, AlertKind, Severity, enqueue_alert
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
    "realised_roi": {"zh": "已成熟数据的实际 ROI 显著低于底线", "en": "realised ROI on mature outcomes is significantly below the floor"},
    "model_calibration": {"zh": "模型整体高估 ROI：按其全部活动的实际结果校准后，预测 ROI 低于底线",
                          "en": "the model over-promises across its campaigns: its predicted ROI, calibrated on "
                                "their pooled outcomes, is below the floor"},
    "stale_data": {"zh": "结果数据过期，按危险处理", "en": "outcome data is stale and treated as danger"},
    "forced": {"zh": "主管手动指定", "en": "set by a manager"},
}


def alert_for(event: GuardEvent, event_id: int, drivers: list[dict]) -> AlertEvent | None:
    """The alert an operator should get for `event` (None: none), with its figures and drivers."""
    kind = _KINDS.get(event.kind)
    if kind is None:
        return None
    figures = dict(event.figures)
    payload = {k: figures[k] for k in ("pred_roi", "realised_roi", "floor") if k in figures}
    if "spend_per_hour" in figures:
        payload["spend_at_risk"] = figures["spend_per_hour"]  # yuan per hour the model is spending
    payload["guard_event_id"] = event_id
    payload["mode"] = event.mode_after.value
    cause = getattr(event, "cause", "")
    if cause:
        payload["detail"] = CAUSES.get(cause, {"zh": cause, "en": cause})
    if cause == "model_calibration":  # neither the plan's prediction nor young outcomes show the drop; this does
        calibrated = calibrated_bought_roi(figures)
        if calibrated is not None:
            payload["calibrated_roi"] = calibrated
    if drivers:
        payload["drivers"] = drivers
    for name in ("action_before", "action_after", "bid_factor"):  # an action change says what it changed
        if hasattr(event, name):
            payload[name] = getattr(event, name)
    # A stale feed is one condition however many campaigns and guards see it (each guard's view of a
    # campaign a member), apart from the trips: fresh data must not resolve a trip, nor a restore the staleness.
    stale = event.kind in _STALE_KINDS
    return AlertEvent(kind=kind, severity=Severity(event.severity), occurred_ts=event.ts,
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
