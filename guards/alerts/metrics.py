"""Response-time figures: how long from an alert firing to someone acknowledging it, and to resolution.

The brief's phase-1 measure (anomaly response time 24 h -> 30 min). Counted per
firing event (an event sent to two channels is one alert), by day in China time
and by promotion; resolutions and info messages need no acknowledgement.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from control.clock import PROMOTION_TZ
from guards.alerts.config import Promotion
from guards.alerts.core import AlertRecord
from guards.alerts.events import AlertPhase

# The plan's phase-1 measure: an anomaly acknowledged within 30 minutes (it used to take 24 hours).
ACK_TARGET_S = 1800


@dataclass(frozen=True, slots=True)
class ResponseStats:
    key: str                   # a day YYYY-MM-DD (UTC+8) or a promotion's name
    alerts: int                # firing events
    acked: int
    resolved: int
    ack_median_s: float | None
    ack_p90_s: float | None
    resolve_median_s: float | None
    resolve_p90_s: float | None
    acked_in_target: int = 0   # acknowledged within ACK_TARGET_S of firing

    def as_json(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}


def _events(records: Iterable[AlertRecord]) -> list[AlertRecord]:
    """One record per firing event: the earliest ack and resolution over its channels."""
    by_event: dict[str, AlertRecord] = {}
    for r in records:
        if r.phase is not AlertPhase.FIRING or r.payload.get("repeat_of"):  # a repeat is no new anomaly
            continue
        seen = by_event.get(r.event_key)
        if seen is None:
            by_event[r.event_key] = r
            continue
        by_event[r.event_key] = AlertRecord(**{
            **seen.as_json(),
            "acked_ts": min((t for t in (seen.acked_ts, r.acked_ts) if t is not None), default=None),
            "resolved_ts": min((t for t in (seen.resolved_ts, r.resolved_ts) if t is not None), default=None)})
    return list(by_event.values())


def _quantiles(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    arr = np.asarray(values, dtype=float)
    return float(np.median(arr)), float(np.quantile(arr, 0.9))


def _stats(key: str, events: Sequence[AlertRecord]) -> ResponseStats:
    ack = [e.acked_ts - e.occurred_ts for e in events if e.acked_ts is not None]
    res = [e.resolved_ts - e.occurred_ts for e in events if e.resolved_ts is not None]
    am, ap = _quantiles(ack)
    rm, rp = _quantiles(res)
    return ResponseStats(key, len(events), len(ack), len(res), am, ap, rm, rp,
                         sum(1 for t in ack if t <= ACK_TARGET_S))


def day_of(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, PROMOTION_TZ).date().isoformat()


def response_times_by(records: Iterable[AlertRecord], key: Callable[[AlertRecord], str | None]) -> list[ResponseStats]:
    """Time to acknowledge and to resolve (median, p90, seconds) per key of the firing events (None: left out)."""
    groups: dict[str, list[AlertRecord]] = {}
    for e in _events(records):
        k = key(e)
        if k is not None:
            groups.setdefault(k, []).append(e)
    return [_stats(k, groups[k]) for k in sorted(groups)]


def response_times_by_day(records: Iterable[AlertRecord]) -> list[ResponseStats]:
    """Time to acknowledge and to resolve (median, p90, seconds) per day the alerts fired."""
    return response_times_by(records, lambda e: day_of(e.occurred_ts))


def response_times_by_promotion(records: Iterable[AlertRecord],
                                promotions: Sequence[Promotion]) -> list[ResponseStats]:
    """The same per promotion (alerts fired within its dates); a promotion with no alerts shows zeros."""
    events = _events(records)
    return [_stats(p.name, [e for e in events if p.start_ts <= e.occurred_ts < p.end_ts]) for p in promotions]
