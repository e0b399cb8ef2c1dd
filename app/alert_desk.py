"""Acknowledging and resending alerts (the panel and the CLI): permission-checked, then the outbox's own
audited steps.

Acknowledgement time is what the response-time figures measure (the brief's
24 h → 30 min), so it is written once: acknowledging again is a conflict that
names who acknowledged first.
"""

from __future__ import annotations

from app.service import Control
from control.domain import User
from control.permissions import Action, require
from guards.alerts import outbox
from store import repo
from store.repo import ConflictError


def acknowledge_alert(control: Control, actor: User, alert_id: int, *, source: str = "panel") -> int:
    """Mark the alert (every channel's copy of its event) acknowledged by `actor` now; returns the time."""
    now = control.clock()
    with control.engine.begin() as conn:
        actor = repo.verified_actor(conn, actor)
        require(actor, Action.ACK_ALERT)
        result = outbox.acknowledge(conn, alert_id, actor.username, now, source=source)
    if result.already:
        raise ConflictError(f"alert {alert_id} was already acknowledged by {result.alert.acked_by}")
    return now


def resend_dead_alerts(control: Control, actor: User, alert_ids: list[int]) -> list[int]:
    """Queue dead alerts again (after someone fixed the key or the receiver); returns the ids requeued."""
    with control.engine.begin() as conn:
        actor = repo.verified_actor(conn, actor)
        require(actor, Action.ACK_ALERT)  # whoever handles alerts may ask for a resend; it only sends again
        return outbox.requeue_dead(conn, alert_ids, actor.username, control.clock())
