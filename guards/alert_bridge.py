"""Guard events -> the alert outbox (guards.alerts), in the guard's own transaction.

Events without an alert kind (probation started, a forced mode, a held release)
are recorded and audited but not pushed to WeCom.
"""

from __future__ import annotations

from sqlalchemy import Connection

from guards.alerts import AlertEvent, AlertKind, Severity, enqueue_alert
from guards.machine import GuardEvent

_KINDS = {"tripped": AlertKind.GUARD_TRIPPED, "probation_failed": AlertKind.PROBATION_FAILED,
          "restored": AlertKind.GUARD_RESTORED, "data_stale": AlertKind.DATA_STALE,
          "data_fresh": AlertKind.DATA_FRESH}
_STALE_KINDS = ("data_stale", "data_fresh")


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
    if getattr(event, "cause", ""):
        payload["detail"] = f"cause: {event.cause}"
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
