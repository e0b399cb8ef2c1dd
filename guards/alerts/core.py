"""Pure delivery logic: repeat and resolution, grouping into messages, rate window, backoff.

Everything here is a function of frozen values and the time passed in; the
outbox (guards.alerts.outbox) reads the store, calls these, and writes back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from guards.alerts.events import PHASE, AlertEvent, AlertKind, AlertPhase


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One outbox row: an event routed to one channel, with its lifecycle."""

    alert_id: int
    event_key: str
    channel: str
    kind: AlertKind
    severity: str
    campaign_id: str | None
    guard: str | None
    condition_key: str
    payload: dict
    status: str               # pending | delivered | dead
    occurred_ts: int          # fired
    created_ts: int           # enqueued
    next_attempt_ts: int
    attempts: int = 0
    delivered_ts: int | None = None
    message_id: str | None = None
    acked_ts: int | None = None
    acked_by: str | None = None
    resolved_ts: int | None = None
    last_error: str = ""
    repeats: int = 0          # later firings of the same condition folded into this alert
    last_seen_ts: int | None = None

    @property
    def phase(self) -> AlertPhase:
        return PHASE[AlertKind(self.kind)]

    def as_json(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}


# ---- enqueue: repeat, members, updates and resolution ----------------------------------------------

@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An unresolved firing alert of a condition on one channel."""

    channel: str
    alert_id: int
    created_ts: int
    acked: bool
    condition_key: str = ""
    delivered: bool = True  # False: still on its way, or dead (a broken channel is not retried by reminders)
    queued: bool = False    # still waiting for its group: no message says it yet
    reminded_ts: int | None = None  # the last reminder that covered the condition on this channel
    severity: str = "warning"

    @property
    def told_ts(self) -> int:
        """When people on the channel last heard of the condition: its newest alert or a reminder."""
        return max(self.created_ts, self.reminded_ts or 0)


SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def due_reminders(open_alerts: Sequence[OpenAlert], repeat_interval_s: Callable[[str], int],
                  now_ts: int) -> dict[str, tuple[int, ...]]:
    """Per channel, the open conditions one reminder now covers (the newest alert of each), most severe first.

    Only conditions nobody has acknowledged and whose last notice was delivered count
    (a condition acknowledged on any channel, or whose notice is still on its way or
    dead, waits). A channel's reminder is due when one of them was last told a repeat
    interval ago; it then covers every one told at least half an interval ago. So the
    reminders of conditions that fired at different times go together: one message a
    channel at most every half interval, and one an interval once they are in step.
    """
    acked = {a.condition_key for a in open_alerts if a.acked}
    newest: dict[tuple[str, str], OpenAlert] = {}
    told: dict[tuple[str, str], int] = {}
    for a in open_alerts:
        k = (a.condition_key, a.channel)
        if k not in newest or a.created_ts > newest[k].created_ts:
            newest[k] = a
        told[k] = max(told.get(k, 0), a.told_ts)
    out: dict[str, tuple[int, ...]] = {}
    for channel in sorted({ch for _, ch in newest}):
        interval = repeat_interval_s(channel)
        waiting = [(k, a) for k, a in newest.items()
                   if k[1] == channel and k[0] not in acked and a.delivered]
        if not any(now_ts - told[k] >= interval for k, _ in waiting):
            continue
        covered = [a for k, a in waiting if now_ts - told[k] >= interval / 2]
        out[channel] = tuple(a.alert_id for a in sorted(
            covered, key=lambda a: (SEVERITY_RANK.get(a.severity, 3), a.created_ts, a.alert_id)))
    return out


@dataclass(frozen=True, slots=True)
class EnqueuePlan:
    insert: tuple[str, ...]                    # channels that get a new alert row
    suppressed: tuple[tuple[str, int], ...]    # (channel, open alert it folds into: a repeat counted on it)
    resolve: bool                              # the event closes its condition's open alerts
    updated: tuple[tuple[str, int], ...] = ()  # (channel, queued alert whose payload takes the update)
    members: frozenset[str] | None = None      # the condition's open members after the event (None: no members)


def plan_enqueue(event: AlertEvent, routed: Sequence[str], open_alerts: Sequence[OpenAlert],
                 repeat_interval_s: Callable[[str], int], now_ts: int,
                 members: frozenset[str] = frozenset()) -> EnqueuePlan:
    """What enqueueing `event` does, given its condition's open alerts and open members.

    firing: a channel whose condition is open, and was notified less than the repeat
    interval ago (or was acknowledged), folds the event into the open alert; otherwise a
    new alert. A new member of an open shared condition always folds (the alert lists
    its members). repeat: folds into the open condition on every channel it is open on,
    never a message; with nothing open it fires (nothing is lost). update: folds into an
    alert still waiting for its group (its message will say the new state), else one new
    alert a channel saying what changed; with nothing open it is delivered as info.
    resolving: announced once, on the channels the open condition went to; with nothing
    open it is a repeat and is dropped; a member leaving a condition others still hold
    only leaves it. info: new.
    """
    newest: dict[str, OpenAlert] = {}
    for a in open_alerts:
        if a.channel not in newest or a.created_ts > newest[a.channel].created_ts:
            newest[a.channel] = a
    phase = event.phase
    if phase is AlertPhase.REPEAT and not newest:
        phase = AlertPhase.FIRING
    if phase is AlertPhase.RESOLVING:
        if event.member and newest:
            left = members - {event.member}
            if left:
                return EnqueuePlan(insert=(), suppressed=(), resolve=False, members=left)
        return EnqueuePlan(insert=tuple(sorted(newest)), suppressed=(), resolve=bool(newest),
                           members=frozenset() if event.member else None)
    if phase is AlertPhase.INFO or (phase is AlertPhase.UPDATE and not newest):
        return EnqueuePlan(insert=tuple(routed), suppressed=(), resolve=False)
    if phase is AlertPhase.REPEAT:
        return EnqueuePlan(insert=(), suppressed=tuple((ch, a.alert_id) for ch, a in sorted(newest.items())),
                           resolve=False)
    if phase is AlertPhase.UPDATE:
        # Folded into the open alert: rewritten while it waits to be sent, counted on it once it was (a guard
        # may change its action every review, and each change as a message drowned the trips).
        queued = tuple((ch, a.alert_id) for ch, a in sorted(newest.items()) if a.queued)
        sent = tuple((ch, a.alert_id) for ch, a in sorted(newest.items()) if not a.queued)
        return EnqueuePlan(insert=(), suppressed=sent, resolve=False, updated=queued)
    joined = members | {event.member} if event.member else None
    insert, suppressed = [], []
    for ch in routed:
        o = newest.get(ch)
        if o is not None and (event.member or o.acked or now_ts - o.created_ts < repeat_interval_s(ch)):
            suppressed.append((ch, o.alert_id))
        else:
            insert.append(ch)
    return EnqueuePlan(insert=tuple(insert), suppressed=tuple(suppressed), resolve=False, members=joined)


def most_severe(alerts: Sequence[AlertRecord]) -> AlertRecord:
    """The alert a grouped message links to: a firing still open before a change, an info or a resolution
    (a firing already resolved counts as one), then the highest severity, then the most spend at risk,
    then the first."""
    order = {AlertPhase.FIRING: 0, AlertPhase.REPEAT: 0, AlertPhase.UPDATE: 1, AlertPhase.INFO: 2,
             AlertPhase.RESOLVING: 3}

    def rank(a: AlertRecord) -> tuple:
        risk = a.payload.get("spend_at_risk")
        risk = float(risk) if isinstance(risk, (int, float)) and not isinstance(risk, bool) else 0.0
        phase = AlertPhase.RESOLVING if a.resolved_ts is not None else a.phase
        return order[phase], SEVERITY_RANK.get(a.severity, 3), -risk, a.alert_id

    return min(alerts, key=rank)


# ---- grouping into messages ---------------------------------------------------------------------

def group_due(pending: Iterable[AlertRecord], now_ts: int) -> bool:
    """A channel's group goes out when its oldest waiting alert's wait (or backoff) is over."""
    times = [a.next_attempt_ts for a in pending]
    return bool(times) and min(times) <= now_ts


def pack(alerts: Sequence[AlertRecord], render: Callable[[Sequence[AlertRecord]], str],
         max_bytes: int) -> list[tuple[AlertRecord, ...]]:
    """Split alerts (in order) into as few messages as fit max_bytes of rendered UTF-8 each.

    Every alert lands in exactly one message; an alert too big even alone gets a
    message of its own (the channel truncates it).
    """
    messages: list[tuple[AlertRecord, ...]] = []
    current: list[AlertRecord] = []
    for a in alerts:
        if current and len(render([*current, a]).encode("utf-8")) > max_bytes:
            messages.append(tuple(current))
            current = []
        current.append(a)
    if current:
        messages.append(tuple(current))
    return messages


# ---- rate limit ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RateWindow:
    """At most `limit` sends in any `window_s` seconds (WeCom: 20 a minute per robot).

    A sliding window over the logged send times, not a refilling token bucket: a
    bucket of 20 refilled at 20/min lets up to 40 through in one minute, which
    WeCom refuses. The log is in the store, so the limit survives a restart and is
    shared by every sender process. Times are exact (sub-second): counted in whole
    seconds, 21 sends fit in 59.05 s. Pass each send's latest possible arrival (its
    answer, or the longest it could take) and compare with the new send's start.
    """

    limit: int = 20
    window_s: int = 60

    def ready_ts(self, attempt_ts: Sequence[float], throttled_ts: Sequence[float], now_ts: float) -> float:
        """The earliest time a new send may start (<= now_ts: now)."""
        ready = now_ts
        if throttled_ts:  # the receiver said "too many": wait out a whole window from its refusal
            ready = max(ready, max(throttled_ts) + self.window_s)
        recent = sorted(t for t in attempt_ts if t > now_ts - self.window_s)
        if len(recent) >= self.limit:
            ready = max(ready, recent[len(recent) - self.limit] + self.window_s)
        return ready

    def floor_s(self, messages: int) -> float:
        """The least time `messages` sends can take under the limit (the rate-limit floor)."""
        return max(0, math.ceil(messages / self.limit) - 1) * self.window_s


# ---- retry ---------------------------------------------------------------------------------------

def backoff_s(attempts: int, base_s: int, max_s: int, u: float) -> int:
    """Exponential backoff with jitter: half fixed, half random, so senders spread out.

    attempts counts the failed tries so far (>= 1); u is uniform in [0, 1).
    """
    cap = min(max_s, base_s * 2 ** max(0, attempts - 1))
    return max(1, math.ceil(cap / 2 + u * cap / 2))
