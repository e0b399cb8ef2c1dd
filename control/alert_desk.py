"""Acknowledging alerts from the panel: permission-checked and audited.

Acknowledgement time is what the response-time figures measure (the brief's
24 h → 30 min), so it is written once: a second acknowledgement is a conflict
that names who acknowledged first.
"""

from __future__ import annotations

from sqlalchemy import select, update

from control.audit import AuditRecord
from control.domain import User
from control.permissions import Action, require
from control.service import Control
from store import repo
from store import schema as s


def acknowledge_alert(control: Control, actor: User, alert_id: int) -> int:
    """Mark the alert acknowledged by `actor` now; returns the acknowledgement time."""
    require(actor, Action.ACK_ALERT)
    now = control.clock()
    a = s.alerts.c
    with control.engine.begin() as conn:
        row = conn.execute(select(a.alert_id, a.acked_ts, a.acked_by).where(a.alert_id == alert_id)).first()
        if row is None:
            raise repo.NotFound(f"alert {alert_id} does not exist")
        done = conn.execute(update(s.alerts).where(a.alert_id == alert_id, a.acked_ts.is_(None))
                            .values(acked_ts=now, acked_by=actor.username)).rowcount
        if done != 1:
            raise repo.ConflictError(f"alert {alert_id} was already acknowledged by {row.acked_by}")
        repo.append_audit(conn, AuditRecord(now, actor.username, "alert.ack", "alert", str(alert_id),
                                            None, {"acked_ts": now}))
    return now
