"""Clocks, passed in wherever time is needed: a callable returning epoch seconds.

- `system_clock`: real time.
- `ManualClock`: tests move it by hand (no sleeps).
- `AcceleratedClock`: the demo's promotion clock, `speed` simulated seconds per real second.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], int]

# Promotion days, the rule pool's hours and every time shown run on China time (Asia/Shanghai, UTC+8,
# no daylight saving).
PROMOTION_TZ_OFFSET_S = 8 * 3600
PROMOTION_TZ = dt.timezone(dt.timedelta(seconds=PROMOTION_TZ_OFFSET_S))
DAY_S = 86_400


def day_start(ts: int) -> int:
    """Start (epoch s) of the promotion day containing `ts` (local midnight)."""
    return ts - (ts + PROMOTION_TZ_OFFSET_S) % DAY_S


def system_clock() -> int:
    return int(time.time())


@dataclass
class ManualClock:
    now_ts: int

    def __call__(self) -> int:
        return self.now_ts

    def advance(self, seconds: int) -> int:
        self.now_ts += seconds
        return self.now_ts


@dataclass(frozen=True)
class AcceleratedClock:
    """Simulated time = start_ts + (real time - real_start) x speed.

    Anchored to wall-clock time, so every process of the demo (simulator, guard
    worker, panels) that is given the same anchor reads the same promotion time.
    """

    start_ts: int        # simulated time at real_start
    real_start: float    # wall-clock epoch seconds
    speed: float         # simulated seconds per real second
    real_time: Callable[[], float] = field(default=time.time, compare=False)

    def __call__(self) -> int:
        return int(self.start_ts + (self.real_time() - self.real_start) * self.speed)

    def anchor(self) -> dict:
        return {"start_ts": self.start_ts, "real_start": self.real_start, "speed": self.speed}

    @classmethod
    def from_anchor(cls, anchor: dict) -> AcceleratedClock:
        return cls(int(anchor["start_ts"]), float(anchor["real_start"]), float(anchor["speed"]))
