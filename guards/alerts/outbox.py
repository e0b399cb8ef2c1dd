"""The durable alert outbox: enqueue in the caller's transaction, deliver exactly once as far as people can tell.

Delivery per channel, in order:
1. pending alerts wait out their group wait, then are packed into as few
   messages as fit the channel's byte limit (a notification each, content fixed);
2. under the channel's lock the rate window is read from the attempt log (exact,
   sub-second times) and the send is claimed (status `sending`, a lease, an attempt
   logged with its start time) and committed BEFORE the HTTP call; the answer is
   recorded after it;
3. a send that may have reached a WeCom robot without an answer (a read timeout,
   a connection closed after the request, a sender that died mid-send) is
   *unconfirmed*: never sent again as itself (WeCom shows every copy); its alerts go
   once more in a message marked as the repeat of its ref, and a repeat is never
   repeated. Receivers that drop a repeated id (JSON webhook, log file) get the
   same message again instead;
4. while a robot does not answer, it is probed (a request WeCom refuses without
   showing anything) instead of sent to; the first answered probe or send makes
   every waiting message of the channel due at once;
5. retryable failures back off (exponential, jittered) until the give-up deadline,
   a rate-limit answer waits for the next window, permanent failures are dead
   (kept, listed, never retried by themselves). A channel's messages go in order:
   nothing is sent past a message that is still being retried.
The rate window per robot is read from the attempt log, so it holds across
restarts and across sender processes (and counts `bidlens alerts test`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from control.audit import AuditRecord
from control.config import load_settings
from control.domain import InvalidValue
from guards.alerts.channels import Channels, build_channels
from guards.alerts.config import AlertsConfig, ChannelConfig, DeliveryPolicy, load_config
from guards.alerts.core import (
    AlertRecord,
    OpenAlert,
    RateWindow,
    backoff_s,
    due_reminders,
    group_due,
    pack,
    plan_enqueue,
)
from guards.alerts.events import OPENING_KINDS, AlertEvent, AlertKind, AlertPhase
from guards.alerts.templates import render
from guards.alerts.transport import OutboundMessage, SendOutcome, redact
from store import repo
from store import schema as s

log = logging.getLogger("guards.alerts")

OPEN_NOTIFICATION = ("queued", "retry", "sending")


# ---- enqueue -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EnqueueResult:
    event_key: str
    alert_ids: tuple[int, ...] = ()    # new outbox rows (one per channel)
    suppressed: tuple[int, ...] = ()   # open alerts this firing was folded into (repeat interval)
    resolved: tuple[int, ...] = ()     # firing alerts this event closed
    duplicate: bool = False            # this very event was enqueued before: nothing done
    updated: tuple[int, ...] = ()      # alerts not sent yet that now say the update


@functools.lru_cache(maxsize=4)
def _config_at(path: str, mtime: float, data_dir: str) -> AlertsConfig:
    return load_config(path, data_dir)


def current_config() -> AlertsConfig:
    """The config named by BIDLENS_ALERTS_CONFIG (re-read when the file changes)."""
    st = load_settings()
    mtime = Path(st.alerts_config).stat().st_mtime if st.alerts_config and Path(st.alerts_config).exists() else 0
    return _config_at(st.alerts_config, mtime, st.data_dir)


def channels_from_settings(environ: Mapping[str, str] | None = None) -> Channels:
    """The live channels of the configured file, keys read from the environment, links to the panel."""
    return build_channels(current_config(), environ, panel_url=load_settings().panel_url)


def _insert_ignore(conn: Connection, table, values: dict) -> object | None:
    """INSERT that leaves an existing row (same unique key) alone instead of failing the transaction.

    Returns the new row's primary key, or None if a row with the same key was there
    (RETURNING, because rowcount is -1 for this statement on PostgreSQL).
    """
    dialect = conn.dialect.name
    if dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    elif dialect == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    else:
        stmt = insert(table).values(**values)
    return conn.execute(stmt.returning(*table.primary_key.columns)).scalar()


def enqueue_alert(conn: Connection, event: AlertEvent, now_ts: int, *,
                  config: AlertsConfig | None = None) -> EnqueueResult:
    """Record an alert for `event` in the caller's transaction (commit it with the event itself).

    Routes the event to its channels, applies repeats, members, updates and resolution
    (see core.plan_enqueue) and is idempotent: the same event twice is one alert.
    """
    if config is None:
        try:
            config = current_config()
        except InvalidValue as exc:
            # A broken alerts config must not fail the guard's transaction: keep the alert (log channel).
            log.error("alerts config unusable (%s); alert kept for the built-in log channel", redact(exc))
            config = load_config("", load_settings().data_dir)
    a = s.alerts
    key = event.event_key
    existing = conn.execute(select(a.c.alert_id).where(a.c.event_key == key)).scalars().all()
    if existing:
        return EnqueueResult(key, tuple(existing), duplicate=True)
    closed = close_condition(conn, event.closes, now_ts) if event.closes else ()
    open_rows = conn.execute(
        select(a.c.alert_id, a.c.channel, a.c.created_ts, a.c.acked_ts, a.c.occurred_ts, a.c.status,
               a.c.message_id, a.c.payload)
        .where(a.c.condition_key == event.condition_key, a.c.resolved_ts.is_(None), a.c.kind.in_(OPENING_KINDS))
    ).all()
    newest = max(open_rows, key=lambda r: r.created_ts, default=None)
    held = (newest.payload or {}) if newest is not None else {}
    plan = plan_enqueue(
        event, [c for c in config.route(event) if c in config.channels],
        [OpenAlert(r.channel, r.alert_id, r.created_ts, r.acked_ts is not None,
                   queued=r.status == "pending" and r.message_id is None) for r in open_rows],
        lambda ch: config.channels[ch].repeat_interval_s, now_ts, frozenset(held.get("open_members", ())))
    payload = dict(event.payload)
    if open_rows and event.phase is not AlertPhase.INFO:  # said against the open condition: since when
        payload["fired_ts"] = min(r.occurred_ts for r in open_rows)
    if event.phase is AlertPhase.FIRING and open_rows:  # the interval has passed: a repeat of the open condition
        payload["repeat_of"] = newest.alert_id
    members = dict(held.get("members", {}))
    if plan.members is not None:
        if event.phase is AlertPhase.FIRING:
            members[event.member] = event.campaign_id
        payload.update(members=members, open_members=sorted(plan.members))
        for r in open_rows:  # the open alerts list who holds the condition now
            conn.execute(update(a).where(a.c.alert_id == r.alert_id)
                         .values(payload={**(r.payload or {}), "members": members,
                                          "open_members": sorted(plan.members)}))
    resolved: tuple[int, ...] = ()
    if plan.resolve:
        resolved = tuple(sorted(r.alert_id for r in open_rows))
        payload.update(resolves=list(resolved))
        conn.execute(update(a).where(a.c.alert_id.in_(resolved)).values(resolved_ts=now_ts))
    new_ids = []
    for ch in plan.insert:
        wait = config.channels[ch].group_wait_s if ch in config.channels else 0
        result = _insert_ignore(conn, a, dict(
            dedupe_key=f"{key}:{ch}", group_key=ch, channel=ch, severity=event.severity.value,
            # a shared condition's alert is no one campaign's or guard's: its members say whose it is
            kind=event.kind.value, campaign_id=None if event.member else event.campaign_id,
            guard=None if event.member else event.guard,
            condition_key=event.condition_key, event_key=key, payload={**payload, **_notify(event)},
            status="pending", attempts=0, next_attempt_ts=now_ts + wait, created_ts=now_ts,
            occurred_ts=event.occurred_ts))
        if result is not None:
            new_ids.append(result)
    repeat = 0 if event.member else 1  # a member joining is listed, not counted as a repeat
    for _, alert_id in plan.suppressed:
        conn.execute(update(a).where(a.c.alert_id == alert_id)
                     .values(repeats=a.c.repeats + repeat, last_seen_ts=now_ts))
    # Not sent yet: its message will say the new state. An update folded into a sent alert changes it too,
    # so the panel and the next reminder say what is now so.
    changed = plan.updated + (plan.suppressed if event.phase is AlertPhase.UPDATE else ())
    for _, alert_id in changed:
        kept = conn.execute(select(a.c.payload).where(a.c.alert_id == alert_id)).scalar() or {}
        conn.execute(update(a).where(a.c.alert_id == alert_id)
                     .values(payload={**kept, **event.payload, "guard_event_id": kept.get("guard_event_id")},
                             last_seen_ts=now_ts))
    return EnqueueResult(key, tuple(new_ids), tuple(i for _, i in plan.suppressed), resolved + closed,
                         updated=tuple(i for _, i in plan.updated))


def _notify(event: AlertEvent) -> dict:
    return {"notify": list(event.notify)} if event.notify else {}


def close_condition(conn: Connection, condition_key: str, now_ts: int) -> tuple[int, ...]:
    """End a condition's open alerts without an announcement (the event that ends it says so itself)."""
    a = s.alerts
    ids = tuple(conn.execute(select(a.c.alert_id).where(
        a.c.condition_key == condition_key, a.c.resolved_ts.is_(None), a.c.kind.in_(OPENING_KINDS))).scalars())
    if ids:
        conn.execute(update(a).where(a.c.alert_id.in_(ids)).values(resolved_ts=now_ts))
    return ids


def enqueue_reminders(conn: Connection, config: AlertsConfig, now_ts: int) -> tuple[int, ...]:
    """Remind each channel of its open, unacknowledged conditions, all in one alert (see core.due_reminders).

    Run by each delivery pass, so a trip nobody acknowledges is said again about every
    repeat interval (default 1 h) until someone acknowledges it or it resolves; the
    conditions due on a channel go together, most severe first, each with since when it fires.
    Once the promotion day recorded in the store is over, the guard has stopped and said so:
    what is still open waits in the panel, unreminded.
    """
    end = repo.promotion_day_end(conn)
    if end is not None and now_ts >= end:
        return ()
    a = s.alerts
    rows = {r.alert_id: r for r in conn.execute(
        select(a).where(a.c.resolved_ts.is_(None), a.c.kind.in_(OPENING_KINDS), a.c.channel.in_(list(config.channels))))}
    due = due_reminders([OpenAlert(r.channel, r.alert_id, r.created_ts, r.acked_ts is not None, r.condition_key,
                                   r.status == "delivered", reminded_ts=r.reminded_ts, severity=r.severity)
                         for r in rows.values()],
                        lambda ch: config.channels[ch].repeat_interval_s, now_ts)
    made = []
    for channel, ids in due.items():
        items = []
        for alert_id in ids:
            r = rows[alert_id]
            same = [x for x in rows.values() if x.condition_key == r.condition_key and x.channel == channel]
            first = min(same, key=lambda x: x.alert_id)
            items.append({"alert_id": first.alert_id, "kind": first.kind, "severity": r.severity,
                          "campaign_id": first.campaign_id, "condition_key": r.condition_key,
                          "fired_ts": min(x.occurred_ts for x in same), "repeats": sum(x.repeats for x in same),
                          "members": len((r.payload or {}).get("open_members", ()))})
        key = hashlib.sha256(f"reminder|{channel}|{now_ts}".encode()).hexdigest()[:32]
        new_id = _insert_ignore(conn, a, dict(  # its severity: the first (most severe) item's
            dedupe_key=f"{key}:{channel}", group_key=channel, channel=channel, severity=items[0]["severity"],
            kind=AlertKind.REMINDER.value, campaign_id=None, guard=None, condition_key=f"reminder:{channel}",
            event_key=key, payload={"items": items}, status="pending", attempts=0, next_attempt_ts=now_ts,
            created_ts=now_ts, occurred_ts=now_ts))
        if new_id is not None:
            conn.execute(update(a).where(a.c.alert_id.in_(ids)).values(reminded_ts=now_ts))
            made.append(new_id)
    return tuple(made)


# ---- reading -------------------------------------------------------------------------------------

def _record(r) -> AlertRecord:
    return AlertRecord(
        alert_id=r.alert_id, event_key=r.event_key, channel=r.channel, kind=AlertKind(r.kind),
        severity=r.severity, campaign_id=r.campaign_id, guard=r.guard, condition_key=r.condition_key,
        payload=r.payload or {}, status=r.status, occurred_ts=r.occurred_ts, created_ts=r.created_ts,
        next_attempt_ts=r.next_attempt_ts, attempts=r.attempts, delivered_ts=r.delivered_ts,
        message_id=r.message_id, acked_ts=r.acked_ts, acked_by=r.acked_by, resolved_ts=r.resolved_ts,
        last_error=r.last_error, repeats=r.repeats, last_seen_ts=r.last_seen_ts)


def list_alerts(conn: Connection, *, status: str | None = None, channel: str | None = None,
                since_ts: int | None = None, limit: int | None = 200) -> list[AlertRecord]:
    """Alerts, newest first (dead ones included: they must stay visible)."""
    a = s.alerts
    q = select(a).order_by(a.c.alert_id.desc())
    if status:
        if status not in ("pending", "delivered", "dead"):
            raise InvalidValue("status", status, "must be pending, delivered or dead")
        q = q.where(a.c.status == status)
    if channel:
        q = q.where(a.c.channel == channel)
    if since_ts is not None:
        q = q.where(a.c.occurred_ts >= since_ts)
    if limit:
        q = q.limit(limit)
    return [_record(r) for r in conn.execute(q)]


def get_alert(conn: Connection, alert_id: int) -> AlertRecord:
    row = conn.execute(select(s.alerts).where(s.alerts.c.alert_id == alert_id)).first()
    if row is None:
        raise InvalidValue("alert_id", alert_id, "no such alert")
    return _record(row)


# ---- acknowledge ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AckResult:
    alert: AlertRecord
    already: bool  # acknowledged before: nothing changed, nothing audited


def acknowledge(conn: Connection, alert_id: int, by: str, now_ts: int, *, source: str = "cli") -> AckResult:
    """Someone has seen the alert and is on it: every channel's copy of the event, audited."""
    if not by or not by.strip():
        raise InvalidValue("by", by, "must name who acknowledges")
    alert = get_alert(conn, alert_id)
    if alert.acked_ts is not None:
        return AckResult(alert, already=True)
    a = s.alerts
    # The event on every channel, and the rest of its open condition (repeats): someone is on it.
    same = a.c.event_key == alert.event_key
    conditions = [i["condition_key"] for i in alert.payload.get("items", ())] if alert.kind is AlertKind.REMINDER \
        else [alert.condition_key] if alert.kind.value in OPENING_KINDS and alert.resolved_ts is None else []
    if conditions:  # a reminder is acknowledged for every condition it reminded of
        same = or_(same, and_(a.c.condition_key.in_(conditions), a.c.resolved_ts.is_(None),
                              a.c.kind.in_(OPENING_KINDS)))
    conn.execute(update(a).where(same, a.c.acked_ts.is_(None)).values(acked_ts=now_ts, acked_by=by, ack_source=source))
    repo.append_audit(conn, AuditRecord(
        ts=now_ts, actor=by, action="alert.ack", entity="alert", entity_id=str(alert_id),
        before={"acked_ts": None, "status": alert.status},
        after={"acked_ts": now_ts, "acked_by": by, "source": source, "kind": alert.kind.value,
               "campaign_id": alert.campaign_id, "time_to_ack_s": now_ts - alert.occurred_ts}))
    return AckResult(get_alert(conn, alert_id), already=False)


def requeue_dead(conn: Connection, alert_ids: Iterable[int], by: str, now_ts: int) -> list[int]:
    """Send dead alerts again (after the key or the receiver was fixed); audited. Returns the ids requeued."""
    a = s.alerts
    ids = [r.alert_id for r in conn.execute(
        select(a.c.alert_id).where(a.c.alert_id.in_(list(alert_ids)), a.c.status == "dead"))]
    if ids:
        conn.execute(update(a).where(a.c.alert_id.in_(ids))
                     .values(status="pending", message_id=None, next_attempt_ts=now_ts, last_error=""))
        repo.append_audit(conn, AuditRecord(ts=now_ts, actor=by, action="alert.requeue", entity="alert",
                                            entity_id=",".join(map(str, ids)), before={"status": "dead"},
                                            after={"status": "pending"}))
    return ids


# ---- deliver -------------------------------------------------------------------------------------

@dataclass
class DeliveryReport:
    messages_sent: int = 0
    reminders: int = 0              # repeats made for open, unacknowledged conditions
    alerts_delivered: int = 0
    resent: int = 0                 # messages sent again after a send with no answer or a crash mid-send
    unconfirmed: int = 0            # sends that got no answer (maybe shown): repeated once, marked
    probes: int = 0                 # invisible requests asking a robot that did not answer whether it is back
    retries: int = 0                # retryable failures this pass (will be tried again)
    throttled: int = 0              # rate-limit answers from the receiver
    dead_messages: int = 0
    dead_alerts: int = 0
    errors: list[str] = field(default_factory=list)           # redacted
    waiting: dict[str, float] = field(default_factory=dict)   # channel -> earliest next send ts
    unavailable: dict[str, str] = field(default_factory=dict)  # channel -> why it cannot send
    out_of_time: bool = False

    @property
    def next_due_ts(self) -> float | None:
        return min(self.waiting.values()) if self.waiting else None

    def as_json(self) -> dict:
        return {**self.__dict__, "next_due_ts": self.next_due_ts}


@dataclass(frozen=True, slots=True)
class Now:
    """The time in both domains: events (alerts' own times) and wall (what the receiver sees, exact)."""

    now: int        # events time as stored (whole seconds)
    wall: float
    events: float   # events time, exact

    @staticmethod
    def read(clock: Callable[[], float], wall_clock: Callable[[], float]) -> Now:
        events = float(clock())
        return Now(int(events), float(wall_clock()), events)

    def later(self, wall_ts: float) -> float:
        """A wall time as the same moment on the events clock (for `waiting`)."""
        return self.events + (wall_ts - self.wall)


# Attempt outcomes that say the robot did not answer as a robot (no answer, a dropped connection,
# a server error): the channel is down until a probe or a send is answered.
DOWN_OUTCOMES = ("down", "unanswered", "probe_down")
IN_FLIGHT = ("sending", "probing")


def _lock_channel(conn: Connection, channel: str) -> None:
    """Serialise the channel's senders across processes: the window is read and the attempt logged under it."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"bidlens.alerts:{channel}".encode()).digest()[:8], "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
    elif conn.dialect.name == "sqlite" and not conn.connection.dbapi_connection.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now, before the window is read


@dataclass(frozen=True, slots=True)
class _Window:
    ready: float           # earliest exact time a request may leave
    in_flight_until: float  # a request of another sender may still reach the robot until then
    down_for: int          # consecutive requests the robot did not answer (0: up)
    last_end: float        # when the last answered-or-not request ended
    answer_s: float        # how long the robot took to answer the last request it answered

    def read_timeout_s(self, cfg: ChannelConfig, policy: DeliveryPolicy, *, probe: bool = False) -> float:
        """How long to wait for the answer: longer for a probe, and for a robot that answers late.

        A robot slower than the timeout still shows what it takes; waiting for its
        answer (within the lease) is what keeps a late answer from becoming a repeat.
        """
        if probe:
            return max(cfg.timeout_s, policy.slow_read_timeout_s)
        if self.answer_s > cfg.timeout_s / 2:
            return max(cfg.timeout_s, min(policy.slow_read_timeout_s, 2 * self.answer_s + 1))
        return cfg.timeout_s


def _window(conn: Connection, cfg: ChannelConfig, policy: DeliveryPolicy, wall: float) -> _Window:
    """The channel's rate window and health from its attempt log (every request: sends, probes, tests).

    A request counts from when it left to when its answer came (or the longest it
    could take): the robot received it somewhere in between. So a new request may
    leave only when the limit-th latest *end* is a whole window old, which holds in
    the robot's own receive times too, whatever the clocks' whole seconds say.
    """
    at = s.alert_attempts
    horizon = int(wall) - cfg.rate_window_s - int(cfg.send_bound_s(policy.slow_read_timeout_s)) - 2
    recent = conn.execute(select(at.c.ts, at.c.outcome, at.c.ended_at)
                          .where(at.c.channel == cfg.name, at.c.ts >= horizon)).all()

    def end(r) -> float:
        return float(r.ended_at) if r.ended_at is not None else float(r.ts + 1)  # rows from before 0004

    ready = RateWindow(cfg.rate_limit, cfg.rate_window_s).ready_ts(
        [end(r) for r in recent], [end(r) for r in recent if r.outcome == "throttled"], wall)
    in_flight = max((end(r) for r in recent if r.outcome in IN_FLIGHT and end(r) > wall), default=0.0)
    last = conn.execute(select(at.c.ts, at.c.outcome, at.c.ended_at, at.c.took_s)
                        .where(at.c.channel == cfg.name, at.c.outcome.notin_((*IN_FLIGHT, "crashed")))
                        .order_by(at.c.ts.desc(), at.c.attempt_id.desc()).limit(16)).all()
    down = 0
    for r in last:
        if r.outcome not in DOWN_OUTCOMES:
            break
        down += 1
    answer_s = next((float(r.took_s) for r in last if r.outcome not in DOWN_OUTCOMES and r.took_s is not None), 0.0)
    return _Window(ready, in_flight, down, end(last[0]) if last else 0.0, answer_s)


def _log_attempt(conn: Connection, cfg: ChannelConfig, message_id: str, started: float, outcome: str,
                 read_timeout_s: float | None = None) -> int:
    at = s.alert_attempts
    return conn.execute(insert(at).values(message_id=message_id, channel=cfg.name, ts=int(started), outcome=outcome,
                                          started_at=started, ended_at=started + cfg.send_bound_s(read_timeout_s))
                        .returning(at.c.attempt_id)).scalar_one()


def _end_attempt(conn: Connection, attempt_id: int, outcome: str, ended: float, took_s: float,
                 error: str = "") -> None:
    at = s.alert_attempts
    conn.execute(update(at).where(at.c.attempt_id == attempt_id)
                 .values(outcome=outcome, ended_at=ended, took_s=took_s, error=error))


def _open_notifications(conn: Connection, channel: str) -> list:
    n = s.alert_notifications
    rows = conn.execute(select(n).where(n.c.channel == channel, n.c.status.in_(OPEN_NOTIFICATION))).all()
    return sorted(rows, key=lambda r: min(r.alert_ids))


def _unique_message_id(conn: Connection, mid: str) -> str:
    """A message id not used before: a requeued or repeated alert's message never reuses an old id."""
    n = s.alert_notifications
    taken = set(conn.execute(select(n.c.message_id).where(n.c.message_id.like(f"{mid}%"))).scalars())
    return mid if mid not in taken else next(f"{mid}.{k}" for k in range(2, 10**6) if f"{mid}.{k}" not in taken)


def _plan_messages(conn: Connection, channels: Channels, cfg: ChannelConfig, t: Now) -> bool:
    """Pack the channel's waiting alerts into notifications once their group is due."""
    a, n = s.alerts, s.alert_notifications
    pending = [_record(r) for r in conn.execute(
        select(a).where(a.c.channel == cfg.name, a.c.status == "pending", a.c.message_id.is_(None))
        .order_by(a.c.alert_id))]
    if not group_due(pending, t.now):
        return False
    style = channels.style(cfg.name)

    def message_id(group) -> str:
        return f"{cfg.name}-{group[0].alert_id}"

    def measure(group) -> str:  # room kept for the repeat mark, so a repeat never has to cut its body
        return render(group, message_id(group) + ".99", style, repeat_of=message_id(group) + ".99")

    for group in pack(pending, measure, cfg.max_bytes):
        mid = _unique_message_id(conn, message_id(group))
        ids = [x.alert_id for x in group]
        made = _insert_ignore(conn, n, dict(message_id=mid, channel=cfg.name, alert_ids=ids,
                                            content=render(group, mid, style, max_bytes=cfg.max_bytes),
                                            status="queued", attempts=0, created_ts=int(t.wall),
                                            next_attempt_ts=int(t.wall)))
        taken = conn.execute(update(a).where(a.c.alert_id.in_(ids), a.c.message_id.is_(None))
                             .values(message_id=mid))
        if made is None or taken.rowcount != len(ids):
            raise Contended(cfg.name)
    return True


class Contended(Exception):
    """Another sender planned the same alerts first: this pass's transaction is rolled back."""


def _summary(conn: Connection, ids: list[int]) -> tuple[dict, ...]:
    a = s.alerts
    rows = conn.execute(select(a).where(a.c.alert_id.in_(ids)).order_by(a.c.alert_id)).all()
    return tuple({k: getattr(r, k) for k in ("alert_id", "kind", "severity", "campaign_id", "guard",
                                               "condition_key", "occurred_ts", "payload")} for r in rows)


def _unconfirmed(conn: Connection, channels: Channels, cfg: ChannelConfig, head, t: Now, why: str,
                 report: DeliveryReport) -> None:
    """A message that may have been shown (no answer came, or its sender died mid-send).

    It is never sent again as itself: WeCom shows every copy it accepts. Its alerts go
    once more, in a new message marked as the repeat of its ref; a repeat that gets no
    answer either is left at that (its alerts count as delivered, the doubt kept in
    last_error): at most two copies, the second one saying what it is.
    """
    a, n = s.alerts, s.alert_notifications
    conn.execute(update(n).where(n.c.message_id == head.message_id)
                 .values(status="unconfirmed", lease_until_ts=None, last_error=f"no answer, maybe shown: {why}"))
    mine = and_(a.c.message_id == head.message_id, a.c.status == "pending")
    report.unconfirmed += 1
    if head.repeat_of:
        note = (f"unconfirmed: no answer to ref {head.repeat_of} nor to its repeat ref {head.message_id}; "
                f"see the panel ({why})")
        settled = conn.execute(update(a).where(mine).values(status="delivered", delivered_ts=t.now, last_error=note))
        report.alerts_delivered += settled.rowcount
        log.warning("alert message %s to %s: no answer to it nor to %s; not sent a third time",
                    head.message_id, cfg.name, head.repeat_of)
        return
    records = [_record(r) for r in conn.execute(select(a).where(mine).order_by(a.c.alert_id))]
    if not records:
        return
    mid = _unique_message_id(conn, head.message_id)
    content = render(records, mid, channels.style(cfg.name), repeat_of=head.message_id, max_bytes=cfg.max_bytes)
    conn.execute(insert(n).values(message_id=mid, channel=cfg.name, alert_ids=[r.alert_id for r in records],
                                  content=content, status="queued", attempts=0, repeat_of=head.message_id,
                                  created_ts=head.created_ts, next_attempt_ts=int(t.wall)))
    conn.execute(update(a).where(mine).values(message_id=mid, last_error=f"maybe shown as {head.message_id}: {why}"))
    log.warning("alert message %s to %s got no answer (%s); its alerts go once more as %s, marked as a repeat",
                head.message_id, cfg.name, why, mid)


def _recover_crashed(conn: Connection, channels: Channels, cfg: ChannelConfig, idempotent: bool, t: Now,
                     report: DeliveryReport) -> None:
    """Messages left `sending` past their lease: their sender died, maybe after the robot took them."""
    n, at = s.alert_notifications, s.alert_attempts
    crashed = conn.execute(select(n).where(n.c.channel == cfg.name, n.c.status == "sending",
                                           n.c.lease_until_ts <= t.wall)).all()
    for head in crashed:
        last = conn.execute(select(func.max(at.c.attempt_id)).where(at.c.message_id == head.message_id)).scalar()
        if last is not None:
            conn.execute(update(at).where(at.c.attempt_id == last, at.c.outcome == "sending")
                         .values(outcome="crashed", error="the sender stopped mid-send"))
        if idempotent:  # the receiver drops a repeated id: send the very same message again
            conn.execute(update(n).where(n.c.message_id == head.message_id)
                         .values(status="retry", next_attempt_ts=int(t.wall), lease_until_ts=None,
                                 last_error="the sender stopped mid-send; sent again as the same message"))
        else:
            _unconfirmed(conn, channels, cfg, head, t, "the sender stopped mid-send", report)


def _give_up(conn: Connection, cfg: ChannelConfig, head, why: str, t: Now, report: DeliveryReport) -> None:
    a, n = s.alerts, s.alert_notifications
    conn.execute(update(n).where(n.c.message_id == head.message_id)
                 .values(status="dead", lease_until_ts=None, last_error=why))
    dead = conn.execute(update(a).where(a.c.message_id == head.message_id, a.c.status == "pending")
                        .values(status="dead", last_error=why))
    report.dead_messages += 1
    report.dead_alerts += dead.rowcount
    report.errors.append(f"{cfg.name}: {why}")
    log.error("alert message %s to %s is dead (%d alerts): %s", head.message_id, cfg.name, dead.rowcount, why)


@dataclass(frozen=True, slots=True)
class _Step:
    attempt_id: int
    read_timeout_s: float
    msg: OutboundMessage | None = None  # None: a probe
    resend: bool = False


def _next_step(conn: Connection, channels: Channels, cfg: ChannelConfig, transport, clock: Callable[[], float],
               wall_clock: Callable[[], float], report: DeliveryReport) -> _Step | None:
    """Under the channel's lock: what to do now (send the next message, or probe), or None (with `waiting`)."""
    n = s.alert_notifications
    policy = channels.config.delivery
    idempotent = bool(getattr(transport, "idempotent", False))
    probes = callable(getattr(transport, "probe", None))
    _lock_channel(conn, cfg.name)
    t = Now.read(clock, wall_clock)
    _recover_crashed(conn, channels, cfg, idempotent, t, report)
    w = _window(conn, cfg, policy, t.wall)
    queue = _open_notifications(conn, cfg.name)
    if not queue:
        if w.ready > t.wall:  # let more alerts join the group while the window is full
            report.waiting[cfg.name] = t.later(w.ready)
            return None
        if not _plan_messages(conn, channels, cfg, t):
            nxt = conn.execute(select(func.min(s.alerts.c.next_attempt_ts)).where(
                s.alerts.c.channel == cfg.name, s.alerts.c.status == "pending")).scalar()
            if nxt is not None:
                report.waiting[cfg.name] = nxt
            return None
        queue = _open_notifications(conn, cfg.name)
    head = queue[0]
    if head.status == "sending":  # another sender has it in flight
        report.waiting[cfg.name] = t.later(head.lease_until_ts)
        return None
    if head.status == "retry" and t.wall - head.created_ts >= policy.give_up_after_s:
        _give_up(conn, cfg, head, f"gave up after {policy.give_up_after_s} s: {head.last_error}", t, report)
        return _next_step(conn, channels, cfg, transport, clock, wall_clock, report)
    if probes and w.down_for:
        # The robot did not answer: ask it, invisibly, before anything visible goes (again).
        delay = min(policy.probe_max_s, policy.backoff_base_s * 2 ** (w.down_for - 1))
        due = max(w.last_end + delay, w.ready, w.in_flight_until)
        if due > t.wall:
            report.waiting[cfg.name] = t.later(due)
            return None
        timeout = w.read_timeout_s(cfg, policy, probe=True)
        return _Step(_log_attempt(conn, cfg, head.message_id, float(wall_clock()), "probing", timeout), timeout)
    due = max(head.next_attempt_ts, w.ready)
    if due > t.wall:
        report.waiting[cfg.name] = t.later(due)
        return None
    claimed = conn.execute(update(n).where(n.c.message_id == head.message_id, n.c.status == head.status,
                                           n.c.attempts == head.attempts)
                           .values(status="sending", lease_until_ts=int(t.wall) + policy.lease_s,
                                   attempts=head.attempts + 1))
    if claimed.rowcount != 1:  # another sender took it between our read and write
        return None
    last = conn.execute(select(s.alert_attempts.c.outcome).where(s.alert_attempts.c.message_id == head.message_id)
                        .order_by(s.alert_attempts.c.attempt_id.desc()).limit(1)).scalar()
    resend = (bool(head.repeat_of) and head.attempts == 0) or last in ("crashed", "unanswered")
    # The send's own time, read last: the request leaves after this (commit, then POST), never before.
    timeout = w.read_timeout_s(cfg, policy) if probes else cfg.timeout_s
    attempt_id = _log_attempt(conn, cfg, head.message_id, float(wall_clock()), "sending", timeout)
    msg = OutboundMessage(head.message_id, cfg.name, head.content, tuple(head.alert_ids),
                          _summary(conn, head.alert_ids))
    return _Step(attempt_id, timeout, msg, resend)


def _due_now(conn: Connection, channel: str, t: Now) -> int:
    """The robot answers again: every message of the channel waiting out a backoff is due now."""
    n = s.alert_notifications
    return conn.execute(update(n).where(n.c.channel == channel, n.c.status.in_(("queued", "retry")),
                                        n.c.next_attempt_ts > t.wall)
                        .values(next_attempt_ts=int(t.wall))).rowcount


def _record_probe(conn: Connection, cfg: ChannelConfig, step: _Step, outcome: SendOutcome, t: Now,
                  took_s: float, report: DeliveryReport) -> bool:
    report.probes += 1
    error = redact(outcome.error)
    if outcome.ok:
        _end_attempt(conn, step.attempt_id, "probe_ok", t.wall, took_s)
        woken = _due_now(conn, cfg.name, t)
        log.info("robot %s answers again: %d waiting messages are due now", cfg.name, woken)
        return True
    _end_attempt(conn, step.attempt_id, "throttled" if outcome.rate_limited else "probe_down", t.wall, took_s, error)
    log.info("robot %s still does not answer: %s", cfg.name, error)
    return False


def _record_outcome(conn: Connection, channels: Channels, cfg: ChannelConfig, step: _Step, outcome: SendOutcome,
                    idempotent: bool, t: Now, took_s: float, rng: np.random.Generator,
                    report: DeliveryReport) -> bool:
    """Write what happened; True if the channel may go on to its next message now."""
    a, n = s.alerts, s.alert_notifications
    msg = step.msg
    policy = channels.config.delivery
    head = conn.execute(select(n).where(n.c.message_id == msg.message_id)).one()
    error = redact(outcome.error)
    mine = and_(a.c.message_id == msg.message_id, a.c.status == "pending")
    if outcome.ok:
        conn.execute(update(n).where(n.c.message_id == msg.message_id)
                     .values(status="sent", sent_ts=int(t.wall), lease_until_ts=None, last_error=""))
        delivered = conn.execute(update(a).where(mine).values(status="delivered", delivered_ts=t.now,
                                                              attempts=a.c.attempts + 1, last_error=""))
        _end_attempt(conn, step.attempt_id, "sent", t.wall, took_s)
        _due_now(conn, cfg.name, t)  # the first success after an outage: the backlog goes at once
        report.messages_sent += 1
        report.alerts_delivered += delivered.rowcount
        log.info("alert message %s delivered to %s (%d alerts)", msg.message_id, cfg.name, delivered.rowcount)
        return True
    conn.execute(update(a).where(mine).values(attempts=a.c.attempts + 1, last_error=error))
    if outcome.ambiguous and not idempotent:
        _end_attempt(conn, step.attempt_id, "unanswered", t.wall, took_s, error)
        _unconfirmed(conn, channels, cfg, head, t, error, report)
        report.errors.append(f"{cfg.name}: {error}")
        return False
    gave_up = outcome.retryable and t.wall - head.created_ts >= policy.give_up_after_s
    if outcome.permanent or gave_up:
        why = error if outcome.permanent else f"gave up after {policy.give_up_after_s} s: {error}"
        _end_attempt(conn, step.attempt_id, "dead", t.wall, took_s, why)
        _give_up(conn, cfg, head, why, t, report)
        return True
    if outcome.rate_limited:
        wait = cfg.rate_window_s
        report.throttled += 1
        name = "throttled"
    else:
        wait = backoff_s(head.attempts, policy.backoff_base_s, policy.backoff_max_s, float(rng.random()))
        name = "unanswered" if outcome.ambiguous else "down" if outcome.down else "retry"
    retry_ts = int(math.ceil(t.wall + wait))
    conn.execute(update(n).where(n.c.message_id == msg.message_id)
                 .values(status="retry", next_attempt_ts=retry_ts, lease_until_ts=None, last_error=error))
    _end_attempt(conn, step.attempt_id, name, t.wall, took_s, error)
    report.retries += 1
    report.waiting[cfg.name] = t.later(retry_ts)
    report.errors.append(f"{cfg.name}: {error}")
    log.warning("alert message %s to %s failed, retry at %d: %s", msg.message_id, cfg.name, retry_ts, error)
    return False


def deliver_due(engine: Engine, channels: Channels, clock: Callable[[], float],
                rng: np.random.Generator, *, budget_s: float | None = None,
                wall_clock: Callable[[], float] | None = None) -> DeliveryReport:
    """One delivery pass over every channel: send what is due, record every answer.

    Safe to run in several processes at once and after a crash (claims are
    conditional updates under a per-channel lock; a crashed send is treated as maybe
    delivered). Returns what happened and `next_due_ts`, when calling again can do something.

    `clock` is the time of the events (enqueue's now_ts; in the demo, the promotion
    clock); `wall_clock` (default: the same) times what the receiver sees: the rate
    window (in exact, sub-second time), backoff, probes, the crash lease and this
    pass's budget. A demo on an accelerated clock passes time.time here, or it would
    send 60 times too fast for WeCom.
    """
    wall_clock = wall_clock or clock
    report = DeliveryReport()
    start = wall_clock()
    with engine.begin() as conn:
        report.reminders = len(enqueue_reminders(conn, channels.config, int(clock())))
    budget = channels.config.delivery.pass_budget_s if budget_s is None else budget_s
    for name in sorted(channels.config.channels):
        cfg = channels.config.channels[name]
        transport = channels.transports.get(name)
        if transport is None:
            with engine.connect() as conn:
                waiting = conn.execute(select(func.count()).select_from(s.alerts).where(
                    s.alerts.c.channel == name, s.alerts.c.status == "pending")).scalar()
            if waiting:
                report.unavailable[name] = channels.errors.get(name, "not built")
            continue
        idempotent = bool(getattr(transport, "idempotent", False))
        while True:
            if wall_clock() - start > budget:
                report.out_of_time = True
                return report
            try:
                with engine.begin() as conn:
                    step = _next_step(conn, channels, cfg, transport, clock, wall_clock, report)
            except Contended:
                step = None
            if step is None:
                break
            took = time.monotonic()
            if step.msg is None:
                outcome = transport.probe(read_timeout_s=step.read_timeout_s)
                t = Now.read(clock, wall_clock)
                with engine.begin() as conn:
                    go_on = _record_probe(conn, cfg, step, outcome, t, time.monotonic() - took, report)
            else:
                report.resent += step.resend
                if step.resend:
                    log.warning("alert message %s to %s: sending again after no answer", step.msg.message_id, name)
                if callable(getattr(transport, "probe", None)):  # a robot: it may need longer to answer
                    outcome = transport.send(step.msg, read_timeout_s=step.read_timeout_s)
                else:
                    outcome = transport.send(step.msg)
                t = Now.read(clock, wall_clock)
                with engine.begin() as conn:
                    go_on = _record_outcome(conn, channels, cfg, step, outcome, idempotent, t,
                                            time.monotonic() - took, rng, report)
            if not go_on:
                break
    return report


def send_now(engine: Engine, channels: Channels, name: str, message: OutboundMessage,
             wall_clock: Callable[[], float]) -> SendOutcome:
    """Send one message outside the outbox (`bidlens alerts test`), inside the channel's rate window.

    The send is logged like every other, so the window counts it for the outbox's
    senders too; when the window is full nothing is sent (a rate-limited outcome says
    when the next slot opens).
    """
    cfg = channels.config.channel(name)
    with engine.begin() as conn:
        _lock_channel(conn, name)
        wall = float(wall_clock())
        ready = _window(conn, cfg, channels.config.delivery, wall).ready
        if ready > wall:
            return SendOutcome(False, retryable=True, rate_limited=True,
                               error=f"rate window full ({cfg.rate_limit} sends in {cfg.rate_window_s} s): "
                                     f"next slot in {ready - wall:.1f} s")
        attempt_id = _log_attempt(conn, cfg, message.message_id, float(wall_clock()), "sending")
    took = time.monotonic()
    outcome = channels.transports[name].send(message)
    took_s = time.monotonic() - took
    name_of = ("sent" if outcome.ok else "throttled" if outcome.rate_limited else
               "unanswered" if outcome.ambiguous else "down" if outcome.down else
               "retry" if outcome.retryable else "dead")
    with engine.begin() as conn:
        _end_attempt(conn, attempt_id, name_of, float(wall_clock()), took_s, redact(outcome.error))
    return outcome


def deliver_until(stop: Callable[[], bool], engine: Engine, channels: Callable[[], Channels],
                  clock: Callable[[], float], rng: np.random.Generator, *,
                  wall_clock: Callable[[], float], sleep: Callable[[float], None], poll_s: float = 2.0,
                  on_report: Callable[[DeliveryReport], None] | None = None) -> None:
    """Delivery passes every `poll_s` wall seconds until `stop()`: the sender beside the guard worker.

    `channels` is called for every pass, so an edited alerts config (or a fixed key)
    takes effect without a restart. A pass that fails (store briefly locked, a broken
    config) is logged and retried on the next poll: the outbox keeps the alerts.
    """
    while not stop():
        try:
            report = deliver_due(engine, channels(), clock, rng, wall_clock=wall_clock)
        except Exception as exc:  # noqa: BLE001 - the loop must outlive one bad pass
            log.error("alert delivery pass failed, retrying in %.0f s: %s", poll_s, redact(str(exc)))
        else:
            if on_report is not None:
                on_report(report)
        sleep(poll_s)


def pending_count(conn: Connection, channels: Iterable[str] | None = None) -> int:
    q = select(func.count()).select_from(s.alerts).where(s.alerts.c.status == "pending")
    if channels is not None:
        q = q.where(s.alerts.c.channel.in_(list(channels)))
    return int(conn.execute(q).scalar())
