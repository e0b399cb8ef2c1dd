"""The guard worker: its own process, one per store, ticking on the clock it is given.

Each tick: expire overrides (Control.expire_overrides), read the effective
thresholds (the config file with the store's edits on top, guards.thresholds: one
flag read, so an edit takes effect on the next tick), observe every campaign
(guards.observe), run every registered guard's pure transition, and record the
events (guards.handlers) in ONE transaction with the new states. A restart reads
the states back from guard_states: a trip is not forgotten, and an event (with
its alert) is written once, in the tick that made it.

Exactly one active worker per store: a file lock next to a SQLite store, a
PostgreSQL advisory lock (held by a dedicated session) for a shared store. A
second worker waits for the lock (or gives up after `timeout_s`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import Engine, text

from guards.config import GuardSettings
from guards.handlers import WORKER_ACTOR, AlertSink, DriversFn, load_states, record_events, save_state
from guards.machine import GuardEvent, MachineState
from guards.observe import load_calibration_prior, load_inputs, lookback_s, observations, observe
from guards.registry import GUARDS, enabled, evaluate
from guards.roi import sequential_for
from guards.threshold_store import ThresholdReader
from store import repo

Clock = Callable[[], int]
HEARTBEAT_KEY = "guard_worker"
PG_LOCK_KEY = 818_2026  # advisory lock id of "the guard worker"


class LockBusy(RuntimeError):
    """Another guard worker holds this store's lock."""


def lock_path(engine: Engine, data_dir: str | Path) -> Path:
    """The SQLite store's worker lock: next to the database file (else in the data folder)."""
    database = engine.url.database
    if database and database != ":memory:":
        return Path(database).resolve().with_suffix(".guard-worker.lock")
    return Path(data_dir).resolve() / "guard-worker.lock"


@contextmanager
def worker_lock(engine: Engine, data_dir: str | Path, *, timeout_s: float | None = None,
                poll_s: float = 1.0, on_wait: Callable[[], None] | None = None,
                sleep: Callable[[float], None] = time.sleep) -> Iterator[None]:
    """Hold the store's single-worker lock; wait for it (up to timeout_s, None = forever)."""
    if engine.dialect.name == "postgresql":
        conn = engine.connect()
        try:
            waited = 0.0
            while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY}).scalar():
                conn.rollback()
                if timeout_s is not None and waited >= timeout_s:
                    raise LockBusy("another guard worker holds this store's advisory lock")
                if on_wait is not None and waited == 0:
                    on_wait()
                sleep(poll_s)
                waited += poll_s
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                conn.commit()
        finally:
            conn.close()
        return
    path = lock_path(engine, data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if timeout_s == 0:
            raise LockBusy(f"another guard worker holds {path}") from None
        if on_wait is not None:
            on_wait()
        try:
            lock.acquire(timeout=-1 if timeout_s is None else timeout_s, poll_interval=poll_s)
        except Timeout:
            raise LockBusy(f"another guard worker holds {path}") from None
    try:
        yield
    finally:
        lock.release()


@dataclass
class TickReport:
    now_ts: int
    campaigns: int
    events: list[GuardEvent] = field(default_factory=list)
    expired_overrides: int = 0
    conflicts: int = 0
    seconds: float = 0.0
    thresholds_version: int = 0
    thresholds_error: str | None = None
    rollout: object | None = None  # what the rollout step decided (control.rollout.RolloutDecision), if one runs


class GuardWorker:
    """Evaluates every guard of every campaign each `interval_s` of `clock`.

    expire_overrides: Control.expire_overrides (or None); alert_sink / drivers_fn: see guards.handlers;
    rollout: a launched version's guarded rollout step (app.launch.Launches.rollout_tick), run each tick.
    """

    def __init__(self, engine: Engine, clock: Clock, settings: GuardSettings, *, interval_s: int = 60,
                 expire_overrides: Callable[[], list] | None = None, alert_sink: AlertSink | None = None,
                 drivers_fn: DriversFn | None = None, rollout: Callable[[], object] | None = None):
        self.engine = engine
        self.clock = clock
        self.settings = settings  # the config file's; each tick evaluates with self.thresholds'
        self.thresholds = ThresholdReader(settings)
        self.interval_s = interval_s
        self.expire_overrides = expire_overrides
        self.alert_sink = alert_sink
        self.drivers_fn = drivers_fn
        self.rollout = rollout
        machines = [settings.defaults[g].machine for g in GUARDS]
        self.lookback = lookback_s(settings.observe, max(m.stale_after_s for m in machines),
                                   settings.defaults["roi"].cusum_window_s)
        self.feature_names = {"spend_pace": settings.defaults["pacing"].feature,
                              "inventory_level": settings.defaults["inventory"].feature}

    def tick(self) -> TickReport:
        started = time.perf_counter()
        now = int(self.clock())
        expired = self.expire_overrides() if self.expire_overrides is not None else []
        with self.engine.connect() as conn:
            settings = self.thresholds.read(conn)
            frames = load_inputs(conn, now, self.settings.observe, self.lookback, self.feature_names)
            prior = load_calibration_prior(conn)
        sequential = sequential_for(settings, frames[3]["campaign_id"].tolist())
        obs_list = observations(observe(*frames, now, self.settings.observe, self.lookback, sequential, prior))
        report = TickReport(now, len(obs_list), expired_overrides=len(expired),
                            thresholds_version=self.thresholds.version, thresholds_error=self.thresholds.error,
                            rollout=self.rollout() if self.rollout is not None else None)
        try:
            with self.engine.begin() as conn:
                stored = load_states(conn)
                for guard in GUARDS:
                    for obs in obs_list:
                        config = settings.for_campaign(guard, obs.campaign_id)
                        if not enabled(config):
                            continue
                        row = stored.get((guard, obs.campaign_id))
                        before = row.state if row is not None else MachineState(since_ts=now)
                        after, events = evaluate(guard, before, obs, config, now)
                        if not events and row is not None and (after is before or _same(before, after)):
                            continue
                        event_id = record_events(conn, events, actor=WORKER_ACTOR,
                                                 observe=self.settings.observe, alert_sink=self.alert_sink,
                                                 drivers_fn=self.drivers_fn)
                        save_state(conn, guard, obs.campaign_id, after, row,
                                   event_id if event_id is not None else (row.event_id if row else None), now)
                        report.events.extend(events)
                repo.set_flag(conn, HEARTBEAT_KEY, {"ts": now, "pid": os.getpid(), "host": socket.gethostname(),
                                                    "interval_s": self.interval_s}, WORKER_ACTOR, now)
        except repo.ConflictError:
            # A manager forced a guard while we evaluated: nothing was written; the next tick redoes it.
            report.events, report.conflicts = [], 1
        report.seconds = time.perf_counter() - started
        return report

    def run(self, *, stop: Callable[[], bool] = lambda: False, sleep: Callable[[float], None] = time.sleep,
            poll_s: float = 0.2, on_tick: Callable[[TickReport], None] | None = None) -> None:
        """Tick every interval_s of the worker's clock until `stop()`; `sleep` waits real seconds."""
        due = int(self.clock())
        while not stop():
            now = int(self.clock())
            if now >= due:
                report = self.tick()
                if on_tick is not None:
                    on_tick(report)
                due = now + self.interval_s
            else:
                sleep(poll_s)


def _same(a: MachineState, b: MachineState) -> bool:
    """Equal but for the evaluation bookmark: not worth a write on every tick."""
    return a.to_json() | {"last_eval_key": None} == b.to_json() | {"last_eval_key": None}
