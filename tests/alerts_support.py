"""Shared pieces of the alert tests: a settable clock, a migrated SQLite store, configs, a sender loop."""

from __future__ import annotations

import re

import numpy as np
import pytest

from guards.alerts import AlertEvent, AlertKind, Severity, build_channels, deliver_due
from guards.alerts.config import parse_config
from guards.alerts.local_server import LocalRobotServer
from store.engine import make_engine
from store.migrate import upgrade

KEY = "k3y-SECRET-0f9e8d7c-6b5a"
KEY_ENV = "BIDLENS_WECOM_KEY_OPS"
START = 1_787_000_000  # a fixed epoch second; only differences matter


class Clock:
    """Simulated time: tests move it; the sender and the local robot server both read it."""

    def __init__(self, t: float = START):
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# Fixtures for the alert test modules, which import them by these names: they replace conftest's
# clock and engine there with the simulated clock and a fresh SQLite store.
@pytest.fixture(name="clock")
def clock_fixture():
    return Clock()


@pytest.fixture(name="server")
def server_fixture(clock):
    """The local WeCom-protocol robot, on the test's simulated clock."""
    with LocalRobotServer(keys=[KEY], clock=clock) as srv:
        yield srv


@pytest.fixture(name="engine")
def engine_fixture(tmp_path):
    return store(tmp_path)


def store(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'bidlens.db'}")
    upgrade(engine)
    return engine


def robot_config(base_url: str, tmp_path, *, delivery: dict | None = None, **channel):
    doc = {"channels": {"ops": {"type": "wecom", "key_env": KEY_ENV, "base_url": base_url,
                                "timeout_s": 0.3, **channel}},
           "routes": [{"channels": ["ops"]}],
           "delivery": {"backoff_base_s": 5, "backoff_max_s": 120, "lease_s": 60, **(delivery or {})}}
    return parse_config(doc, str(tmp_path))


def channels_for(config, key: str = KEY):
    return build_channels(config, {KEY_ENV: key}, panel_url="http://panel.example")


def trip(campaign: str, ts: int, *, severity=Severity.CRITICAL, **payload) -> AlertEvent:
    figures = {"pred_roi": 1.8, "realised_roi": 1.7, "floor": 2.0, "spend_at_risk": 12000.0}
    return AlertEvent(AlertKind.GUARD_TRIPPED, severity, ts, campaign_id=campaign, guard="roi",
                      payload={**figures, **payload})


def enqueue(engine, event, now_ts, config):
    from guards.alerts import enqueue_alert
    with engine.begin() as conn:
        return enqueue_alert(conn, event, now_ts, config=config)


def run_senders(store_url: str, n: int, work) -> list[Exception]:
    """Run work(engine, k) in n threads at once, each with an engine of its own (a sender process's
    connections); returns what they raised."""
    import threading

    errors: list[Exception] = []

    def sender(k):
        own = make_engine(store_url)
        try:
            work(own, k)
        except Exception as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def max_in_rolling_window(times, window_s: float = 60.0) -> int:
    """The most receive times in any half-open window [t, t + window_s)."""
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + window_s) for t in times), default=0)


def drain(engine, channels, clock, *, until: float, step: float = 1.0, on_tick=None, seed: int = 7):
    """Run delivery passes every `step` simulated seconds until `until`; returns the reports."""
    rng = np.random.default_rng(seed)
    reports = []
    while clock() <= until:
        if on_tick:
            on_tick(clock())
        reports.append(deliver_due(engine, channels, clock, rng))
        clock.advance(step)
    return reports


REF = re.compile(r"ref (\S+) · ")
REPEAT = re.compile(r"(?:重发：|Repeat of )ref (\S+?)[ :]")


def ref_of(content: str) -> str:
    """The message's own reference (its footer)."""
    return REF.findall(content)[-1]


def repeat_of(content: str) -> str | None:
    """The reference a message says it repeats, if it is a marked repeat."""
    found = REPEAT.search(content)
    return found.group(1) if found else None
