"""The guard worker: its own process, one per store, ticking on the clock it is given.

Each tick: expire overrides (Control.expire_overrides), read the effective
thresholds (the config file with the store's edits on top, guards.thresholds: one
flag read, so an edit takes effect on the next tick), observe every campaign
(guards.observe), run every registered guard's pure transition, and record the
events (guards.handlers) in ONE transaction with the new states; then anchor the
audit trail's end outside the store (store.audit_files). A restart reads the
states back from guard_states: a trip is not forgotten, and an event (with its
alert) is written once, in the tick that made it.

After the promotion day recorded in the store is over, it evaluates nothing more
and says so once (guards.day_end).

Exactly one acting worker per store, on SQLite and PostgreSQL alike: a lease row in the store
(`worker_leases`) with an expiry and a generation number. A worker takes the lease when it is free or
has expired (generation + 1) and renews it every third of its length; every tick's transaction proves,
before it commits, that it still holds that generation (`Lease.fence`, a write that also locks the
row until the commit), so a worker
that lost the lease (paused past its expiry, its connections cut, and another took over) writes nothing
and stops at once. A second worker waits for the lease (or gives up after `timeout_s`).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine, select, update

from guards.config import GuardSettings
from guards.day_end import DayOverSink, day_over
from guards.feeds import load_breaker_inputs
from guards.handlers import WORKER_ACTOR, AlertSink, DriversFn, load_states, record_events, save_state
from guards.machine import GuardEvent, MachineState
from guards.observe import load_calibration_prior, load_inputs, lookback_s, observations, observe
from guards.registry import GUARDS, enabled, evaluate, feeds_stale_after_s
from guards.roi import sequential_for
from guards.threshold_store import ThresholdReader
from store import repo
from store import schema as s
from store.audit_files import anchor as anchor_audit
from store.repo import insert_or_nothing

Clock = Callable[[], int]
HEARTBEAT_KEY = "guard_worker"


class LockBusy(RuntimeError):
    """Another guard worker holds this store's lease."""


class LeaseLost(RuntimeError):
    """Another worker took this store's lease over: this one must not act again."""


WORKER_LEASE = "guard_worker"


@dataclass
class Lease:
    """A worker's hold on the store: `generation` is its fencing token."""

    engine: Engine
    name: str
    holder: str
    generation: int
    duration_s: int
    wall: Callable[[], float]  # real time: how long a silent holder keeps the lease, whatever its clock

    def fence(self, conn) -> None:
        """In the caller's transaction: prove the lease is still this generation's and extend it, the row
        locked to the end of the transaction (a takeover waits for it); else LeaseLost, and the caller's
        writes roll back."""
        w = s.worker_leases
        if conn.execute(update(w).where(w.c.name == self.name, w.c.generation == self.generation)
                        .values(expires_ts=int(self.wall()) + self.duration_s)).rowcount != 1:
            raise LeaseLost(f"the guard worker lease of this store moved past generation {self.generation} "
                            "to another worker; this one stops")

    def renew(self) -> None:
        with self.engine.begin() as conn:
            self.fence(conn)

    def release(self) -> None:
        """Let the next worker take over at once (nothing, if the lease already moved on)."""
        w = s.worker_leases
        with self.engine.begin() as conn:
            conn.execute(update(w).where(w.c.name == self.name, w.c.generation == self.generation)
                         .values(expires_ts=0))


def take_lease(engine: Engine, name: str, holder: str, duration_s: int,
               wall: Callable[[], float]) -> Lease | None:
    """The lease, a new generation of it, if nobody holds it (free, or expired by `wall`'s time); else None."""
    w = s.worker_leases
    now = int(wall())
    with engine.begin() as conn:
        insert_or_nothing(conn, w, name=name, generation=0, holder="", acquired_ts=0, expires_ts=0)
        conn.execute(update(w).where(w.c.name == name).values(generation=w.c.generation))  # lock the row
        row = conn.execute(select(w).where(w.c.name == name)).one()
        if row.expires_ts > now:
            return None
        conn.execute(update(w).where(w.c.name == name).values(
            generation=row.generation + 1, holder=holder, acquired_ts=now, expires_ts=now + duration_s))
    return Lease(engine, name, holder, row.generation + 1, duration_s, wall)


@contextmanager
def worker_lock(engine: Engine, *, timeout_s: float | None = None, lease_s: int = 30, poll_s: float = 1.0,
                on_wait: Callable[[], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                wall: Callable[[], float] = time.time) -> Iterator[Lease]:
    """Hold the store's guard worker lease; wait for it (up to timeout_s, None = forever). Released on exit."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    waited = 0.0
    while (lease := take_lease(engine, WORKER_LEASE, holder, lease_s, wall)) is None:
        if timeout_s is not None and waited >= timeout_s:
            raise LockBusy("another guard worker holds this store's lease")
        if on_wait is not None and waited == 0:
            on_wait()
        sleep(poll_s)
        waited += poll_s
    try:
        yield lease
    finally:
        lease.release()


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
    day_over: int | None = None  # the promotion day ended then: nothing was evaluated
    rollout: object | None = None  # what the rollout step decided (control.rollout.RolloutDecision), if one runs


class GuardWorker:
    """Evaluates every guard of every campaign each `interval_s` of `clock`.

    expire_overrides: Control.expire_overrides (or None); alert_sink / drivers_fn: see guards.handlers;
    day_over_sink: see guards.day_end.
    rollout: a launched version's guarded rollout step (app.launch.Launches.rollout_tick), run each tick.
    """

    def __init__(self, engine: Engine, clock: Clock, settings: GuardSettings, *, interval_s: int = 60,
                 expire_overrides: Callable[[], list] | None = None, alert_sink: AlertSink | None = None,
                 drivers_fn: DriversFn | None = None, lease: Lease | None = None,
                 day_over_sink: DayOverSink | None = None, rollout: Callable[[], object] | None = None):
        self.engine = engine
        self.lease = lease  # the store's worker lease (worker_lock); None: tests and in-memory runs
        self.clock = clock
        self.settings = settings  # the config file's; each tick evaluates with self.thresholds'
        self.thresholds = ThresholdReader(settings)
        self.interval_s = interval_s
        self.expire_overrides = expire_overrides
        self.alert_sink = alert_sink
        self.drivers_fn = drivers_fn
        self.day_over_sink = day_over_sink
        self.rollout = rollout
        self.lookback = lookback_s(settings.observe, feeds_stale_after_s(settings, GUARDS),
                                   settings.defaults["roi"].cusum_window_s)
        self.feature_names = settings.feature_names()

    def tick(self) -> TickReport:
        """One evaluation; LeaseLost (nothing written) when another worker holds the store's lease now."""
        started = time.perf_counter()
        now = int(self.clock())
        expired = self.expire_overrides() if self.expire_overrides is not None else []
        ended = day_over(self.engine, now, WORKER_ACTOR, self.day_over_sink,
                         fence=self.lease.fence if self.lease is not None else None)
        if ended is not None:
            return TickReport(now, 0, expired_overrides=len(expired), day_over=ended,
                              seconds=time.perf_counter() - started)
        with self.engine.connect() as conn:
            settings = self.thresholds.read(conn)
            frames = load_inputs(conn, now, self.settings.observe, self.lookback, self.feature_names)
            prior = load_calibration_prior(conn)
            breakers = load_breaker_inputs(conn, now, self.settings.observe, frames[3]["campaign_id"].tolist())
        sequential = sequential_for(settings, frames[3]["campaign_id"].tolist())
        obs_list = observations(observe(*frames, now, self.settings.observe, self.lookback, sequential, prior,
                                        breakers=breakers))
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
                                                    "interval_s": self.interval_s,
                                                    "generation": self.lease.generation if self.lease else None},
                              WORKER_ACTOR, now)
                if self.lease is not None:  # last, just before the commit: a stale worker's writes roll back,
                    self.lease.fence(conn)  # and the lease row's lock is held no longer than the commit
        except repo.ConflictError:
            # A manager forced a guard while we evaluated: nothing was written; the next tick redoes it.
            report.events, report.conflicts = [], 1
        anchor_audit(self.engine, now)  # the audit trail's end, outside the store: a later cut shows
        report.seconds = time.perf_counter() - started
        return report

    def run(self, *, stop: Callable[[], bool] = lambda: False, sleep: Callable[[float], None] = time.sleep,
            poll_s: float = 0.2, on_tick: Callable[[TickReport], None] | None = None) -> None:
        """Tick every interval_s of the worker's clock until `stop()`, renewing the lease every third of its
        length of real time in between; `sleep` waits real seconds. LeaseLost ends the run."""
        due = int(self.clock())
        renewed = self.lease.wall() if self.lease is not None else 0.0
        while not stop():
            now = int(self.clock())
            if now >= due:
                report = self.tick()
                if on_tick is not None:
                    on_tick(report)
                due = now + self.interval_s
                renewed = self.lease.wall() if self.lease is not None else 0.0
            elif self.lease is not None and self.lease.wall() - renewed >= self.lease.duration_s / 3:
                self.lease.renew()
                renewed = self.lease.wall()
            else:
                sleep(poll_s)


def _same(a: MachineState, b: MachineState) -> bool:
    """Equal but for the evaluation bookmark: not worth a write on every tick."""
    return a.to_json() | {"last_eval_key": None} == b.to_json() | {"last_eval_key": None}
