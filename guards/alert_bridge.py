"""Guard events -> the alert outbox (guards.alerts), in the guard's own transaction.

Events without an alert kind (probation started, a forced mode, a held release)
are recorded and audited but not pushed to WeCom.
"""

from __future__ import annotations

from sqlalchemy import Connection

from guards.alerts import AlertEvent, AlertKind, Severity, enqueue_alert
from guards.machine import GuardEvent
from guards.roi import calibrated_bought_roi

_KINDS = {"tripped": AlertKind.GUARD_TRIPPED, "probation_failed": AlertKind.PROBATION_FAILED,
          "action_changed": AlertKind.GUARD_TRIPPED,
          "restored": AlertKind.GUARD_RESTORED, "data_stale": AlertKind.DATA_STALE,
          "data_fresh": AlertKind.DATA_FRESH}
_STALE_KINDS = ("data_stale", "data_fresh")
# Why the guard left the model, as the alert says it (the trip rules of guards.roi and the machine).
CAUSES = {
    "pred_roi": {"zh": "模型计划的预测 ROI 连续低于底线", "en": "the model's plan predicts ROI below the floor, evaluation after evaluation"},
    "realised_roi": {"zh": "已成熟数据的实际 ROI 显著低于底线", "en": "realised ROI on mature outcomes is significantly below the floor"},
    "cusum": {"zh": "陆续到账的实际 GMV 累积成证据：ROI 低于底线",
              "en": "the realised GMV, counted as it arrived, adds up to evidence that ROI is below the floor"},
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
    # A stale feed is its own condition: fresh data must not resolve a trip, nor a restore the staleness.
    condition = f"{event.guard}:{event.campaign_id}" + (":stale" if event.kind in _STALE_KINDS else "")
    return AlertEvent(kind=kind, severity=Severity(event.severity), occurred_ts=event.ts,
                      campaign_id=event.campaign_id, guard=event.guard, condition_key=condition,
                      payload=payload)


def enqueue_guard_alert(conn: Connection, event: GuardEvent, event_id: int, drivers: list[dict]) -> None:
    """guards.handlers.AlertSink: enqueue the event's alert in the caller's transaction."""
    alert = alert_for(event, event_id, drivers)
    if alert is not None:
        enqueue_alert(conn, alert, event.ts)
