"""Alert delivery figures against the local WeCom-protocol server.

- enqueue-to-delivered latency (p50/p99): enqueue an alert (committed), run one
  delivery pass, the message is recorded delivered; beside a bare HTTP POST of the
  same message to the same server (what the outbox's durability costs), and the
  rate-limit floor (0 s: one message inside a window goes at once).
- a 200-event storm's time to drain, in simulated seconds with the default group
  wait (30 s), beside the rate-limit floor for sending the events one per message
  (ceil(200 / 20) - 1 windows of 60 s); plus the real processing time of the drain.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.registry import BenchContext, BenchResult, benchmark
from guards.alerts import AlertEvent, AlertKind, Severity, build_channels, deliver_due, enqueue_alert
from guards.alerts.config import parse_config
from guards.alerts.core import RateWindow
from guards.alerts.local_server import LocalRobotServer
from guards.alerts.transport import OutboundMessage
from guards.alerts.wecom import WeComRobot
from store.engine import make_engine
from store.migrate import upgrade

KEY = "bench-key"
ENV = {"BENCH_WECOM_KEY": KEY}


class _SimClock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _setup(workdir: str, name: str, base_url: str, group_wait_s: int):
    path = Path(workdir) / f"{name}.db"
    path.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    config = parse_config({"channels": {"ops": {"type": "wecom", "key_env": "BENCH_WECOM_KEY",
                                                "base_url": base_url, "group_wait_s": group_wait_s}}}, workdir)
    return engine, config, build_channels(config, ENV)


def _event(i: int, ts: int) -> AlertEvent:
    return AlertEvent(AlertKind.GUARD_TRIPPED, Severity.CRITICAL, ts, campaign_id=f"c{i:04d}", guard="roi",
                      payload={"pred_roi": 1.8, "realised_roi": 1.7, "floor": 2.0, "spend_at_risk": 1000.0 + i})


@benchmark("alerts")
def bench_alerts(ctx: BenchContext) -> list[BenchResult]:
    n_latency = 5 if ctx.quick else 19  # stay inside one rate window: latency, not throttling
    n_storm = 40 if ctx.quick else 200
    rng = np.random.default_rng(0)
    results = []
    with LocalRobotServer(keys=[KEY]) as srv:
        engine, config, channels = _setup(ctx.workdir, "alerts_latency", srv.base_url, 0)
        robot = WeComRobot("bare", KEY, base_url=srv.base_url)
        bare, latency = [], []
        for i in range(n_latency):
            start = time.perf_counter()
            robot.send(OutboundMessage(f"bare-{i}", "bare", f"## bare {i}", ()))
            bare.append(time.perf_counter() - start)
        srv.state.received.clear()
        for i in range(n_latency):
            start = time.perf_counter()
            with engine.begin() as conn:
                enqueue_alert(conn, _event(i, int(time.time())), int(time.time()), config=config)
            report = deliver_due(engine, channels, time.time, rng)
            latency.append(time.perf_counter() - start)
            assert report.alerts_delivered == 1, report
        engine.dispose()
    p50, p99 = (float(np.percentile(latency, q) * 1000) for q in (50, 99))
    bare_p50 = float(np.percentile(bare, 50) * 1000)
    results.append(BenchResult("alerts.enqueue_to_delivered_p50", p50, "ms", "bare WeCom POST p50, same server",
                               bare_p50, higher_is_better=False,
                               notes="rate-limit floor for one message in a window: 0 ms",
                               extra={"p99_ms": round(p99, 2), "n": n_latency, "rate_limit_floor_ms": 0}))
    results.append(BenchResult("alerts.enqueue_to_delivered_p99", p99, "ms", "bare WeCom POST p99, same server",
                               float(np.percentile(bare, 99) * 1000), higher_is_better=False))

    clock = _SimClock(1_787_000_000.0)
    with LocalRobotServer(keys=[KEY], clock=clock) as srv:
        engine, config, channels = _setup(ctx.workdir, "alerts_storm", srv.base_url, 30)
        t0 = clock.t
        wall = time.perf_counter()
        with engine.begin() as conn:
            for i in range(n_storm):
                enqueue_alert(conn, _event(i, int(t0)), int(t0), config=config)
        delivered = 0
        while delivered < n_storm:
            report = deliver_due(engine, channels, clock, rng)
            delivered += report.alerts_delivered
            clock.t = max(clock.t + 1, report.next_due_ts or clock.t + 1)
        wall = time.perf_counter() - wall
        messages = len(srv.state.received)
        drain_s = max(r.ts for r in srv.state.received) - t0
        refused = sum(1 for c in srv.state.errcodes() if c)
        engine.dispose()
    floor = RateWindow().floor_s(n_storm)
    results.append(BenchResult(
        "alerts.storm_drain_simulated", drain_s, "s", f"rate-limit floor for {n_storm} messages at 20/min",
        floor, higher_is_better=False,
        notes=f"{n_storm} trips at once, default 30 s group wait, {messages} messages, {refused} refused",
        extra={"messages": messages, "grouped_floor_s": RateWindow().floor_s(messages), "refused": refused,
               "wall_s": round(wall, 3)}))
    results.append(BenchResult("alerts.storm_drain_wall", wall, "s", "simulated drain time", drain_s,
                               higher_is_better=False, notes="real processing time of the whole drain"))
    return results
