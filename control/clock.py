"""Clocks, passed in wherever time is needed: a callable returning epoch seconds.

- `system_clock`: real time.
- `ManualClock`: tests move it by hand (no sleeps).
- `AcceleratedClock`: the demo's promotion clock, `speed` simulated seconds per real second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], int]


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


@dataclass
class AcceleratedClock:
    start_ts: int             # simulated time at the moment the clock was made
    speed: float              # simulated seconds per real second
    real_time: Callable[[], float] = time.monotonic
    _real_start: float = field(init=False)

    def __post_init__(self):
        self._real_start = self.real_time()

    def __call__(self) -> int:
        return int(self.start_ts + (self.real_time() - self._real_start) * self.speed)
