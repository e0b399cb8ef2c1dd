"""The guard worker against a real store: trips, ledger, audit and alerts in one transaction,
restart in the middle of a trip, one worker per store (SQLite file lock, PostgreSQL advisory lock)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, func, select, text

from app.service import Control
from control.clock import ManualClock
from control.config import Settings
from control.domain import GuardMode, InvalidValue, Role, User
from control.permissions import PermissionDenied
from guards.alert_bridge import CAUSES, enqueue_guard_alert
from guards.alerts import list_alerts
from guards.config import parse_guard_settings
from guards.evaluator import GuardEvaluator
from guards.handlers import loss_avoided
from guards.registry import GUARDS
from guards.rule_pool import PoolBounds
from guards.service import GuardService
from guards.trip_drivers import trip_drivers
from guards.worker import HEARTBEAT_KEY, GuardWorker, LeaseLost, LockBusy, worker_lock
from store import repo
from store import schema as s
from store.audit_files import audit_files, read_anchors
from store.engine import open_store
from tests.guards_helpers import T0, feed_minute, make_store, minute_frames
from tests.helpers import add_users

# The synthetic feed makes every bucket's GMV known at once: a lag curve that says so.
SETTINGS = parse_guard_settings("[machine]\ncooldown_s = 600\nprobation_evaluations = 3\n"
                                "[observe]\nlag_minutes = [0]\nlag_cdf = [1.0]\n")
MANAGER = User("mia", "Mia", Role.MANAGER)
OPERATOR = User("olivia", "Olivia", Role.OPERATOR)


def worker(engine, clock):
    control = Control(engine, clock, Settings())
    return GuardWorker(engine, clock, SETTINGS, expire_overrides=control.expire_overrides,
                       alert_sink=enqueue_guard_alert)


def play(engine, clock, minutes, roi, w=None, start=0, spend=50.0):
    """Feed `minutes` buckets with c1 at `roi` (c2 healthy) and tick after each; returns the events."""
    w = w or worker(engine, clock)
    events = []
    for m in range(start, start + minutes):
        feed_minute(engine, m, {"c1": roi(m) if callable(roi) else roi, "c2": 2.6}, spend=spend)
        clock.now_ts = T0 + 60 * m + 61
        events += w.tick().events
    return events


def count(engine, table):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def test_a_trip_is_stored_ledgered_audited_and_alerted_together(store_url):
    """On SQLite and on PostgreSQL (the observation queries differ by dialect)."""
    engine = make_store(store_url)
    clock = ManualClock(T0)
    events = play(engine, clock, 8, lambda m: 2.5 if m < 4 else 1.5)
    assert [(e.campaign_id, e.kind) for e in events] == [("c1", "tripped")]
    assert events[0].ts == T0 + 60 * 6 + 61  # the third bad bucket (4, 5, 6)
    with engine.connect() as conn:
        states = repo.load_guard_states(conn)
        trips = conn.execute(select(s.guard_trips)).all()
        alerts = list_alerts(conn)
        audit = repo.load_audit(conn, entity="guard")
    assert states["c1"].mode is GuardMode.TRIPPED and states["c2"].mode is GuardMode.MODEL
    assert states["c1"].event_id == trips[0].event_id
    assert trips[0].roi_before == pytest.approx(1.5) and trips[0].detection_delay_s == 120
    assert [a.kind for a in alerts] == ["guard_tripped"]
    assert alerts[0].payload["pred_roi"] == pytest.approx(1.5) and alerts[0].payload["floor"] == 2.0
    assert [a.action for a in audit] == ["guard.tripped"]
    # The worker anchored the audit trail's end outside the store: cutting the trip's entry shows.
    assert [(a.entry_id, a.hash) for a in read_anchors(audit_files(engine).anchors)] == [(1, audit[0].hash)]
    with engine.begin() as conn:
        conn.execute(s.audit_log.delete())
    assert Control(engine, clock, Settings()).verify_audit().code == "truncated"


def test_restart_in_the_middle_of_a_trip_neither_forgets_nor_repeats(tmp_path):
    path = tmp_path / "b.db"
    engine = make_store(path)
    clock = ManualClock(T0)
    play(engine, clock, 8, lambda m: 2.5 if m < 4 else 1.5)
    engine.dispose()
    # A new process: new engine, new worker, same store.
    engine = open_store(f"sqlite:///{path}")
    events = play(engine, clock, 5, 1.5, start=8)
    assert events == []
    with engine.connect() as conn:
        assert repo.load_guard_states(conn)["c1"].mode is GuardMode.TRIPPED
    assert count(engine, s.guard_trips) == 1 and count(engine, s.alerts) == 1
    # The same tick run twice (a crash after evaluating, before anything else) adds nothing.
    w = worker(engine, clock)
    w.tick()
    w.tick()
    assert count(engine, s.guard_events) == 1
    # Recovery: healthy again, and enough orders to show it; after the cooldown, probation (3
    # evaluations whose calibrated prediction is surely at floor + hysteresis), then the model.
    events = play(engine, clock, 20, 2.6, start=13, spend=500.0)
    assert [e.kind for e in events] == ["probation_started", "restored"]
    with engine.connect() as conn:
        trip = conn.execute(select(s.guard_trips)).one()
        assert repo.load_guard_states(conn)["c1"].mode is GuardMode.MODEL
        kinds = [a.kind for a in list_alerts(conn)]
    # During the trip c1's buckets ran at 1.5, then 2.6 (on ten times the spend).
    assert trip.restored_ts == events[-1].ts and 1.5 < trip.roi_after < 2.6
    assert trip.loss_avoided == pytest.approx(loss_avoided(1.5, trip.details["model_spend_est"], trip.roi_after,
                                                           trip.details["pool_spend"], 0.3), abs=0.01)
    # At a gross margin of 0.3 nothing under ROI 3.3 earns: the guard paused the campaign, and says so.
    assert trip.details["action"] == "pause"
    assert sorted(kinds) == ["guard_restored", "guard_tripped"]


def test_an_outcome_outage_is_stale_data_not_a_trip(tmp_path):
    engine = make_store(tmp_path / "b.db")
    clock = ManualClock(T0)
    w = worker(engine, clock)
    play(engine, clock, 5, 2.6, w=w)
    events = []
    for m in range(5, 20):  # decisions keep coming, outcomes stop
        feed_minute(engine, m, {"c1": 2.6, "c2": 2.6}, outcomes=False)
        clock.now_ts = T0 + 60 * m + 61
        events += w.tick().events
    kinds = [(e.guard, e.kind) for e in events if e.guard == "roi"]
    assert kinds.count(("roi", "data_stale")) == 2  # one per campaign, not per tick
    assert all(e.cause == "stale_data" for e in events if e.kind == "tripped")


def test_force_and_kill_switch_are_manager_only_and_audited(tmp_path):
    engine = make_store(tmp_path / "b.db")
    add_users(engine, MANAGER, OPERATOR)
    clock = ManualClock(T0)
    service = GuardService(engine, clock, SETTINGS, PoolBounds(), alert_sink=enqueue_guard_alert)
    with pytest.raises(PermissionDenied):
        service.force(OPERATOR, "c1", "pool", "panic")
    with pytest.raises(InvalidValue, match="campaign_id"):
        service.force(MANAGER, "nope", "pool", "x")
    changed = service.force(MANAGER, "c1", "pool", "818 incident")
    assert {c["mode_after"] for c in changed} == {"forced_pool"}
    play(engine, clock, 6, 3.0)  # healthy data does not release a forced pool
    status = service.status()
    c1 = next(c for c in status["campaigns"] if c["campaign_id"] == "c1")
    assert c1["effective_mode"] == "forced_pool"
    service.force(MANAGER, "c1", "auto", "incident over")
    Control(engine, clock, Settings()).set_kill_switch(MANAGER, True, "promotion pause", "c2")
    status = service.status()
    assert status["kill_switch"]["campaigns"] == ["c2"]
    assert next(c for c in status["campaigns"] if c["campaign_id"] == "c1")["effective_mode"] == "model"
    with engine.connect() as conn:
        actions = [a.action for a in repo.load_audit(conn)]
    assert actions.count("guard.forced") == 2 * len(GUARDS) and "kill_switch.set" in actions


def test_config_errors_name_the_key_and_value():
    with pytest.raises(InvalidValue, match=r"roi\.campaigns\.c7\.floor=-1"):
        parse_guard_settings("[roi.campaigns.c7]\nfloor = -1\n")
    with pytest.raises(InvalidValue, match=r"machine\.stale_action='panic'"):
        parse_guard_settings("[machine]\nstale_action = 'panic'\n")
    with pytest.raises(InvalidValue, match=r"roi\.flor"):
        parse_guard_settings("[roi]\nflor = 2.0\n")
    custom = parse_guard_settings("[roi.campaigns.c7]\nfloor = 2.5\ncooldown_s = 60\n")
    assert custom.for_campaign("roi", "c7").floor == 2.5
    assert custom.for_campaign("roi", "c7").machine.cooldown_s == 60
    assert custom.for_campaign("roi", "c1").floor == 2.0


def _two_workers(engine):
    with worker_lock(engine, timeout_s=0) as first:
        with pytest.raises(LockBusy), worker_lock(engine, timeout_s=0):
            pass
        waited = []
        with pytest.raises(LockBusy), worker_lock(engine, timeout_s=0.2, poll_s=0.1,
                                                  on_wait=lambda: waited.append(1), sleep=lambda s: None):
            pass
        assert waited == [1]
    with worker_lock(engine, timeout_s=0) as second:  # released: the next one gets it, a new generation
        assert second.generation == first.generation + 1


def test_one_worker_per_sqlite_store(tmp_path):
    engine = make_store(tmp_path / "b.db")
    _two_workers(engine)


@pytest.mark.postgres
def test_one_worker_per_postgres_store(postgres_url):
    engine = open_store(postgres_url)
    try:
        _two_workers(engine)
    finally:
        engine.dispose()


def _heartbeat_generation(engine) -> int:
    with engine.connect() as conn:
        return repo.get_flag(conn, HEARTBEAT_KEY)[0]["generation"]


@pytest.mark.postgres
def test_a_second_worker_waits_when_the_firsts_sessions_are_cut(postgres_url):
    """Issue 16: on PostgreSQL, when the first worker's lock session dropped, a second worker took the lock
    and both kept acting (heartbeats alternated)."""
    first_engine, second_engine = make_store(postgres_url), open_store(postgres_url)
    clock = ManualClock(T0)
    try:
        with worker_lock(first_engine, timeout_s=0) as lease:
            first = worker(first_engine, clock)
            first.lease = lease
            first.tick()
            admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                cut = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
            admin.dispose()
            assert cut >= 1  # every session of the first worker is gone
            with pytest.raises(LockBusy), worker_lock(second_engine, timeout_s=0):
                pass
            clock.now_ts += 60
            first.tick()  # the first reconnects and goes on, alone
            assert _heartbeat_generation(second_engine) == lease.generation
    finally:
        first_engine.dispose()
        second_engine.dispose()


def test_a_worker_that_lost_its_lease_writes_nothing_and_stops(store_url):
    """A worker paused past its lease while another took over: its next tick writes no state, event or
    heartbeat (its transaction's fence fails before the commit); its run ends."""
    engine = make_store(store_url)
    clock, wall = ManualClock(T0), ManualClock(1_000_000)
    with worker_lock(engine, timeout_s=0, lease_s=30, wall=wall) as lease_a:
        a = worker(engine, clock)
        a.lease = lease_a
        play(engine, clock, 3, 2.5, w=a)
        wall.advance(31)  # a stops renewing (a long pause): its lease runs out
        with worker_lock(engine, timeout_s=0, lease_s=30, wall=wall) as lease_b:
            b = worker(engine, clock)
            b.lease = lease_b
            assert lease_b.generation == lease_a.generation + 1
            with engine.connect() as conn:
                before = (repo.load_guard_states(conn), conn.execute(select(func.count()).select_from(
                    s.guard_events)).scalar(), repo.get_flag(conn, HEARTBEAT_KEY))
            with pytest.raises(LeaseLost):  # the tick's own fence, just before its commit
                play(engine, clock, 4, 1.5, w=a, start=3)  # bad minutes a would trip on
            with engine.connect() as conn:
                after = (repo.load_guard_states(conn), conn.execute(select(func.count()).select_from(
                    s.guard_events)).scalar(), repo.get_flag(conn, HEARTBEAT_KEY))
            assert after == before
            with pytest.raises(LeaseLost):
                a.run(sleep=lambda _: None)
            assert [e.kind for e in play(engine, clock, 4, 1.5, w=b, start=7)] == ["tripped"]
            assert _heartbeat_generation(engine) == lease_b.generation


def test_the_stress_evaluator_runs_the_same_guard_as_the_worker(store_url):
    """Same feed, same clock: the in-memory evaluator (bidlens stress) and the worker agree event for event,
    with the worker's queries on SQLite and on PostgreSQL."""
    engine = make_store(store_url)
    clock = ManualClock(T0)
    w = worker(engine, clock)
    with engine.connect() as conn:
        campaigns = list(repo.load_campaigns(conn).values())
    evaluator = GuardEvaluator(campaigns, SETTINGS)
    roi = [2.5] * 4 + [1.5] * 8 + [2.6] * 25
    worker_events, evaluator_events = [], []
    for m, value in enumerate(roi):
        # Ten times the spend once it is healthy again: enough orders to show it in probation.
        decisions, outcomes = minute_frames(m, {"c1": value, "c2": 2.6}, spend=500.0 if m >= 12 else 50.0)
        repo.write_decisions(engine, decisions, received_ts=T0 + 60 * m + 60)
        repo.write_outcomes(engine, outcomes)
        evaluator.feed(decisions, outcomes, pd.DataFrame({"campaign_id": ["c1", "c2"], "spend_pace": [1.0, 1.0],
                                                       "inventory_level": [0.9, 0.9]}))
        clock.now_ts = T0 + 60 * m + 61
        worker_events += w.tick().events
        evaluator_events += evaluator.tick(clock.now_ts)
    assert [(e.guard, e.campaign_id, e.kind, e.ts) for e in evaluator_events] == \
        [(e.guard, e.campaign_id, e.kind, e.ts) for e in worker_events]
    assert [e.kind for e in evaluator_events] == ["tripped", "probation_started", "restored"]
    assert evaluator.trips[0].campaign_id == "c1"
    assert evaluator.guard_states()["c1"].mode is GuardMode.MODEL


def test_trip_alerts_carry_the_shap_drivers_of_the_drop(tmp_path):
    engine = make_store(tmp_path / "b.db")
    clock = ManualClock(T0)
    control = Control(engine, clock, Settings())
    w = GuardWorker(engine, clock, SETTINGS, expire_overrides=control.expire_overrides,
                    alert_sink=enqueue_guard_alert, drivers_fn=trip_drivers)
    events = []
    for m in range(30):
        bad = m >= 24
        decisions, outcomes = minute_frames(m, {"c1": 1.5 if bad else 2.5, "c2": 2.6})
        n = len(decisions)
        contributions = np.zeros((n, 3), dtype=np.float32)
        contributions[:, 1] = -0.4 if bad else 0.1  # feature 1 pulled the bid (and the value) down
        contributions[:, 2] = 0.05
        repo.write_decisions(engine, decisions, received_ts=T0 + 60 * m + 60,
                             explanation=repo.ExplanationBatch("t", np.full(n, 1.0), contributions,
                                                               np.ones((n, 3), dtype=np.float32)))
        repo.write_outcomes(engine, outcomes)
        clock.now_ts = T0 + 60 * m + 61
        events += w.tick().events
    assert [e.kind for e in events] == ["tripped"]
    with engine.connect() as conn:
        alert = list_alerts(conn)[0]
    drivers = alert.payload["drivers"]
    assert drivers[0]["feature"] == "f1" and drivers[0]["delta"] < 0
    assert {d["feature"] for d in drivers} <= {"f0", "f1", "f2"}
    assert alert.payload["detail"] == CAUSES[events[0].cause]  # why, in both languages, not a rule's name
