"""The demo's promotion day played fast through the guard worker and the alert outbox, counted.

`bidlens demo` plays a day on a promotion clock at 60x and takes about half an hour of
real time; on a loaded machine it falls behind and goes data_stale. This plays the
same day (scenario, seed, catalogue, rule pool, alert channels as the demo writes
them) on a manual clock as fast as the machine allows: after every simulated minute
the worker ticks and the sender makes a pass half a minute later, both on the
promotion clock, while the rate window runs on the demo's wall time (promotion time
/ speed), against a local WeCom-protocol robot. It then lets the clock run on past
the end of the day and counts what people would have seen (docs/ALERTS.md, "The demo
day's alerts").
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, func, select

from app import board
from app.service import Control
from app.wiring import file_guard_settings
from control.config import Settings, load_settings
from control.domain import GuardMode
from guards.alert_bridge import enqueue_day_over_alert, enqueue_guard_alert
from guards.alerts import build_channels, deliver_due, enqueue_alert
from guards.alerts.local_server import LocalRobotServer
from guards.alerts.outbox import current_config
from guards.pool_store import active_version, submit_pool
from guards.rule_pool import PoolBounds
from guards.trip_drivers import trip_drivers
from guards.worker import GuardWorker
from sim.catalog import BUCKET_SECONDS, DAY_START_TS, MINUTES_PER_DAY
from sim.live import run_live
from store import repo
from store import schema as s
from store.engine import open_store

ROOT = Path(__file__).resolve().parents[1]
DEMO_KEY_ENV = "BIDLENS_WECOM_KEY_DEMO"
ROBOT = "demo_robot"
TRIP_KINDS = ("guard_tripped", "probation_failed")
_LINK = re.compile(r"/alerts\?alert=(\d+)")


def demo_alerts_config(data_dir: Path, robot_url: str) -> Path:
    """The demo's alert channels: the local robot (as WeCom markdown, both languages) and the log file;
    replenishment alerts to a log of their own (the replenishment group), at most daily."""
    path = data_dir / "demo-alerts.toml"
    path.write_text(f"""# Written by `bidlens demo`: the guard's alerts go to a local WeCom-protocol robot.
[channels.{ROBOT}]
type = "wecom"
key_env = "{DEMO_KEY_ENV}"
base_url = "{robot_url}"
language = "both"
group_wait_s = 30

[channels.file]
type = "log_file"
path = "alerts.log"

[channels.replenishment]
type = "log_file"
path = "demo-replenishment.log"
repeat_interval_s = 86400

[[routes]]
channels = ["file"]
continue = true

[[routes]]
guard = ["low_stock"]
channels = ["replenishment"]

[[routes]]
channels = ["{ROBOT}"]
""", encoding="utf-8")
    return path


def ensure_rule_pool(engine: Engine, now_ts: int) -> None:
    """The shipped default rule pool, unless one is in force already."""
    with engine.begin() as conn:
        if active_version(conn) is None:
            submit_pool(conn, (ROOT / "sim" / "rule_pool_default.toml").read_text(encoding="utf-8"),
                        "system", now_ts, PoolBounds())


@dataclass
class DayCounts:
    """What the demo day sent and left open (figures for docs/ALERTS.md)."""

    minutes: int = 0                  # promotion minutes played
    after_minutes: int = 0            # minutes the clock ran on past the day's end
    messages: int = 0                 # WeCom messages the robot showed during the day
    messages_after: int = 0           # ... after the day's end
    messages_with_trips: int = 0      # day messages carrying a trip (or failed probation) alert
    trip_alerts: int = 0              # trip and failed-probation alerts on the robot channel, the day's
    trips: int = 0                    # distinct trips in the ledger (guard_trips rows) during the day
    trips_after: int = 0              # trips the ledger got after the day's end
    stale_alerts: int = 0             # data_stale / data_fresh alerts on the robot channel
    open_alerts: int = 0              # the panel's open alerts at the day's end
    open_alerts_after: int = 0        # ... when the clock stopped
    open_alerts_max: int = 0          # the most the panel showed at any minute of the day
    open_conditions: int = 0          # what is really open at the day's end (see open_conditions)
    open_conditions_after: int = 0
    panel_rows: int = 0               # rows the panel's alert list (recent) shows for the day's alerts
    alert_events: int = 0             # distinct alert events (an event on two channels is one)
    first_trip_link: dict = field(default_factory=dict)  # the alert the first trip message links to
    kinds: dict = field(default_factory=dict)            # robot-channel alerts per kind

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def open_conditions(engine: Engine) -> int:
    """What is really open now, independent of the alerts: each tripped (or probation) guard of a
    campaign, stale data (one condition however many campaigns it covers), each kill switch that is
    on, each override awaiting approval."""
    with engine.connect() as conn:
        states = conn.execute(select(s.guard_states.c.mode, s.guard_states.c.state)).all()
        kill = repo.load_kill_switch(conn)
        proposed = conn.execute(select(func.count()).select_from(s.overrides)
                                .where(s.overrides.c.status == "proposed")).scalar() or 0
    tripped = sum(r.mode in (GuardMode.TRIPPED.value, GuardMode.PROBATION.value) for r in states)
    stale = any((r.state or {}).get("stale") for r in states)
    return tripped + int(stale) + int(kill.global_on) + len(kill.campaigns) + int(proposed)


@contextmanager
def _environment(values: dict[str, str]):
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Clock:
    """The promotion clock, moved by hand; `wall` is the demo's real time at the same moment."""

    def __init__(self, t: float, speed: float):
        self.t = t
        self.speed = speed

    def __call__(self) -> int:
        return int(self.t)

    def wall_at(self, ts: float) -> float:
        return 1_000_000.0 + (ts - DAY_START_TS) / self.speed  # the demo's real time runs `speed` times slower

    def wall(self) -> float:
        return self.wall_at(self.t)


def replay_demo_day(data_dir: str | Path, *, scenario: str = "demo", seed: int = 1, speed: float = 60.0,
                    minutes: int | None = None, after_minutes: int = 60, startup_lag_minutes: int = 15,
                    catch_up_s: int = 20, explain: bool = False) -> DayCounts:
    """Play the demo's day (or its first `minutes`) through the worker and the outbox; count the alerts.

    As in the demo, the worker ticks every minute of the promotion clock and the sender
    passes every 2 real seconds (2 x speed promotion seconds). The simulator starts
    `startup_lag_minutes` late (loading its models while the clock runs) and then
    catches up at `catch_up_s` promotion seconds a minute played, as a loaded demo does;
    after the day the clock runs on for `after_minutes`.
    data_dir keeps the trained models between runs; the store in it is made afresh.
    explain: explain every decision as the demo does (slower; trip alerts then carry SHAP drivers).
    """
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    db = data / "demo-day.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    (data / "alerts.log").unlink(missing_ok=True)
    clock = _Clock(DAY_START_TS, speed)
    key = secrets.token_hex(16)
    with LocalRobotServer(keys=[key], clock=clock.wall) as robot:
        config_path = demo_alerts_config(data, robot.base_url)
        env = {"BIDLENS_DATA_DIR": str(data), "BIDLENS_ALERTS_CONFIG": str(config_path), DEMO_KEY_ENV: key,
               "BIDLENS_PANEL_URL": "http://panel.local"}
        with _environment(env):
            settings: Settings = dataclasses.replace(load_settings(), db_url=f"sqlite:///{db}")
            day = _Day(settings, clock, robot, seed)
            return day.play(scenario, seed, minutes, after_minutes, startup_lag_minutes, catch_up_s, explain)


class _Day:
    """The demo's processes on one manual clock: the worker's ticks and the sender's passes when due."""

    def __init__(self, settings: Settings, clock: _Clock, robot: LocalRobotServer, seed: int):
        self.settings = settings
        self.clock = clock
        self.robot = robot
        self.engine = open_store(settings.database_url)
        self.control = Control(self.engine, clock, settings, alert_sink=enqueue_alert)
        ensure_rule_pool(self.engine, DAY_START_TS)
        self.worker = GuardWorker(self.engine, clock, file_guard_settings(settings), interval_s=60,
                                  expire_overrides=self.control.expire_overrides, alert_sink=enqueue_guard_alert,
                                  drivers_fn=trip_drivers, day_over_sink=enqueue_day_over_alert)
        self.channels = build_channels(current_config(), os.environ, panel_url=settings.panel_url)
        self.rng = np.random.default_rng(seed)
        self.pass_s = int(2 * clock.speed)
        self.next_tick = DAY_START_TS
        self.next_pass = DAY_START_TS + self.pass_s
        self.counts = DayCounts()

    def run_until(self, ts: float) -> None:
        """Move the clock to `ts`, ticking the worker and passing the sender at each moment due on the way."""
        while min(self.next_tick, self.next_pass) <= ts:
            if self.next_tick <= self.next_pass:
                self.clock.t = self.next_tick
                self.worker.tick()
                self.next_tick += self.worker.interval_s
            else:
                self.clock.t = self.next_pass
                deliver_due(self.engine, self.channels, self.clock, self.rng, wall_clock=self.clock.wall)
                self.next_pass += self.pass_s
                with self.engine.connect() as conn:
                    self.counts.open_alerts_max = max(self.counts.open_alerts_max, board.open_alert_count(conn))
        self.clock.t = max(self.clock.t, ts)

    def played(self, bucket_ts: int, catch_up_s: int) -> None:
        """A minute was played: the clock is at least at its end, and moves catch_up_s while behind."""
        self.run_until(max(bucket_ts + BUCKET_SECONDS, self.clock.t + catch_up_s))

    def play(self, scenario: str, seed: int, minutes: int | None, after_minutes: int, startup_lag_minutes: int,
             catch_up_s: int, explain: bool) -> DayCounts:
        counts = self.counts
        day_end = DAY_START_TS + (minutes or MINUTES_PER_DAY) * BUCKET_SECONDS
        self.control.start_promotion_day(None, "demo day replay", ends_ts=day_end)
        explain_fn = None
        if explain:
            from explain.store import explain_hook
            from sim.kit import prepare
            from sim.scenario import load_scenario
            kit = prepare(load_scenario(scenario), self.settings.data_dir)
            explain_fn = explain_hook(b.artifact for b in kit.bidders.values())
        self.run_until(DAY_START_TS + startup_lag_minutes * BUCKET_SECONDS)
        summary = run_live(self.engine, self.settings, clock=lambda: DAY_START_TS + 10**9, scenario=scenario,
                           seed=seed, explain=explain_fn, max_buckets=minutes,
                           on_bucket=lambda result: self.played(result.bucket_ts, catch_up_s))
        counts.minutes = summary.buckets
        self.run_until(day_end)
        with self.engine.connect() as conn:
            counts.open_alerts = board.open_alert_count(conn)
            counts.trips = conn.execute(select(func.count()).select_from(s.guard_trips)
                                        .where(s.guard_trips.c.tripped_ts < day_end)).scalar() or 0
        counts.open_conditions = open_conditions(self.engine)
        self.run_until(day_end + after_minutes * BUCKET_SECONDS)
        counts.after_minutes = after_minutes
        _count(self.engine, self.robot, counts, day_end, self.clock.wall_at(day_end))
        counts.open_conditions_after = open_conditions(self.engine)
        return counts


def _count(engine: Engine, robot: LocalRobotServer, counts: DayCounts, day_end: int, day_end_wall: float) -> None:
    a = s.alerts
    received = list(robot.state.received)
    day = [m for m in received if m.ts < day_end_wall]
    counts.messages = len(day)
    counts.messages_after = len(received) - len(day)
    with engine.connect() as conn:
        rows = conn.execute(select(a.c.alert_id, a.c.kind, a.c.campaign_id, a.c.message_id, a.c.event_key,
                                   a.c.occurred_ts, a.c.channel)
                            .where(a.c.occurred_ts < day_end)).all()
        counts.open_alerts_after = board.open_alert_count(conn)
        counts.trips_after = conn.execute(select(func.count()).select_from(s.guard_trips)
                                          .where(s.guard_trips.c.tripped_ts >= day_end)).scalar() or 0
        counts.panel_rows = len(board.alerts_frame(conn, limit=None).query("occurred_ts < @day_end"))
        by_id = {r.alert_id: r for r in conn.execute(select(a.c.alert_id, a.c.kind, a.c.campaign_id))}
    robot_rows = [r for r in rows if r.channel == ROBOT]
    counts.alert_events = len({r.event_key for r in rows})
    counts.trip_alerts = sum(r.kind in TRIP_KINDS for r in robot_rows)
    counts.stale_alerts = sum(r.kind in ("data_stale", "data_fresh") for r in robot_rows)
    for r in robot_rows:
        counts.kinds[r.kind] = counts.kinds.get(r.kind, 0) + 1
    trip_messages = {r.message_id for r in robot_rows if r.kind in TRIP_KINDS and r.message_id}
    with_trips = [m for m in day if any(f"ref {mid} " in m.content or f"ref {mid}<" in m.content
                                        for mid in trip_messages)]
    counts.messages_with_trips = len(with_trips)
    if with_trips:
        link = _LINK.search(with_trips[0].content)
        target = by_id.get(int(link.group(1))) if link else None
        counts.first_trip_link = {"alert_id": target.alert_id, "kind": target.kind,
                                  "campaign_id": target.campaign_id} if target else {}
