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


# ---- enqueue: repeat and resolution ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An unresolved firing alert of a condition on one channel."""

    channel: str
    alert_id: int
    created_ts: int
    acked: bool
    condition_key: str = ""
    delivered: bool = True  # False: still on its way, or dead (a broken channel is not retried by reminders)


def due_reminders(open_alerts: Sequence[OpenAlert], repeat_interval_s: Callable[[str], int],
                  now_ts: int) -> tuple[int, ...]:
    """Open conditions nobody has acknowledged, last notified a repeat interval ago or more.

    Returns, per (condition, channel), the newest alert to repeat. A condition
    acknowledged on any channel, or whose last notice is still on its way or dead, waits.
    """
    acked = {a.condition_key for a in open_alerts if a.acked}
    newest: dict[tuple[str, str], OpenAlert] = {}
    for a in open_alerts:
        k = (a.condition_key, a.channel)
        if k not in newest or a.created_ts > newest[k].created_ts:
            newest[k] = a
    return tuple(sorted(a.alert_id for (cond, ch), a in newest.items()
                        if cond not in acked and a.delivered and now_ts - a.created_ts >= repeat_interval_s(ch)))


@dataclass(frozen=True, slots=True)
class EnqueuePlan:
    insert: tuple[str, ...]                    # channels that get a new alert row
    suppressed: tuple[tuple[str, int], ...]    # (channel, open alert it folds into)
    resolve: bool                              # the event closes its condition's open alerts


def plan_enqueue(event: AlertEvent, routed: Sequence[str], open_alerts: Sequence[OpenAlert],
                 repeat_interval_s: Callable[[str], int], now_ts: int) -> EnqueuePlan:
    """What enqueueing `event` does.

    firing: a channel whose condition is open, and was notified less than the
    repeat interval ago (or was acknowledged), folds the event into the open alert;
    otherwise a new alert. resolving: announced once, on the channels the open
    condition went to; with nothing open it is a repeat and is dropped. info: new.
    """
    newest = {}
    for a in open_alerts:
        if a.channel not in newest or a.created_ts > newest[a.channel].created_ts:
            newest[a.channel] = a
    if event.phase is AlertPhase.RESOLVING:
        return EnqueuePlan(insert=tuple(sorted(newest)), suppressed=(), resolve=bool(newest))
    if event.phase is AlertPhase.INFO:
        return EnqueuePlan(insert=tuple(routed), suppressed=(), resolve=False)
    insert, suppressed = [], []
    for ch in routed:
        o = newest.get(ch)
        if o is not None and (o.acked or now_ts - o.created_ts < repeat_interval_s(ch)):
            suppressed.append((ch, o.alert_id))
        else:
            insert.append(ch)
    return EnqueuePlan(insert=tuple(insert), suppressed=tuple(suppressed), resolve=False)


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
