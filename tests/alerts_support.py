"""Shared pieces of the alert tests: a settable clock, a migrated SQLite store, configs, a sender loop."""

from __future__ import annotations

import re

import numpy as np

from guards.alerts import AlertEvent, AlertKind, Severity, build_channels, deliver_due
from guards.alerts.config import parse_config
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


def store(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'bidlens.db'}")
    upgrade(engine)
    return engine


def robot_config(base_url: str, tmp_path, **channel):
    doc = {"channels": {"ops": {"type": "wecom", "key_env": KEY_ENV, "base_url": base_url,
                                "timeout_s": 0.3, **channel}},
           "routes": [{"channels": ["ops"]}],
           "delivery": {"backoff_base_s": 5, "backoff_max_s": 120, "lease_s": 60}}
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


REF = re.compile(r"ref (\S+) ")


def ref_of(content: str) -> str:
    return REF.search(content).group(1)
