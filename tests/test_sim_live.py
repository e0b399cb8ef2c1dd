import threading

import sim_support
from sqlalchemy import func, select

from control.config import Settings
from control.domain import GuardMode, Override, OverrideField, OverrideScope, OverrideStatus
from sim.catalog import DAY_START_TS
from sim.live import run_live
from store import repo
from store import schema as s
from store.engine import open_store


def settings():
    return Settings(data_dir=sim_support._DATA_DIR)


def counts(engine):
    with engine.connect() as conn:
        rows = conn.execute(select(s.decisions.c.decided_by, func.count()).group_by(s.decisions.c.decided_by))
        return dict(rows.all())


def plant_override_and_trip(conn) -> None:
    """An approved bid override on c05 (12 slots) and c09's ROI guard tripped (12 slots)."""
    repo.insert_override(conn, Override(1, OverrideScope("c05"), OverrideField.BID, 0.5, "cool it", "op",
                                        DAY_START_TS - 60, DAY_START_TS + 3600,
                                        status=OverrideStatus.APPROVED, reviewed_by="boss",
                                        reviewed_ts=DAY_START_TS - 30))
    conn.execute(s.guard_states.insert().values(
        guard="roi", campaign_id="c09", mode=GuardMode.TRIPPED.value, state={}, event_id=4, version=1,
        updated_ts=DAY_START_TS))


def test_live_run_writes_decisions_with_features_and_outcomes(sqlite_url):
    engine = open_store(sqlite_url)
    sim_support.full_kit()  # trains the catalog's models once for the test process
    summary = run_live(engine, settings(), clock=lambda: DAY_START_TS + 10**6, max_buckets=3)
    assert summary.buckets == 3 and summary.decisions == 3 * 480 and summary.outcomes > 0
    with engine.connect() as conn:
        row = conn.execute(select(s.decisions).limit(1)).first()
        assert row.features["campaign"] == 0.0 and len(row.features) == 23
        assert conn.execute(select(func.count()).select_from(s.campaigns)).scalar() == 40
        assert conn.execute(select(func.count()).select_from(s.models)).scalar() == 2
        known = conn.execute(select(func.max(s.outcomes.c.known_ts))).scalar()
    assert known <= DAY_START_TS + 3 * 60


def test_the_live_bidder_obeys_overrides_guard_states_and_the_kill_switch_from_the_store(sqlite_url):
    engine = open_store(sqlite_url)
    with engine.begin() as conn:
        plant_override_and_trip(conn)
    run_live(engine, settings(), clock=lambda: DAY_START_TS + 10**6, max_buckets=1)
    assert counts(engine) == {"override": 12, "rule_pool": 12, "model": 480 - 24}
    with engine.begin() as conn:
        repo.set_flag(conn, repo.KILL_SWITCH_KEY, {"global": True, "campaigns": []}, "boss", DAY_START_TS)
    run_live(engine, settings(), clock=lambda: DAY_START_TS + 10**6, max_buckets=1)
    assert counts(engine) == {"override": 24, "rule_pool": 12 + 468, "model": 480 - 24}


def test_live_run_waits_for_the_clock_and_stops_when_asked(sqlite_url):
    engine = open_store(sqlite_url)
    stop = threading.Event()
    ticks = iter(range(10**6))
    # The clock advances 20 simulated seconds per look: a bucket is due every third look.
    clock = lambda: DAY_START_TS + 20 * next(ticks)  # noqa: E731
    seen = []

    def on_bucket(result):
        seen.append(result.minute)
        if len(seen) == 2:
            stop.set()
    summary = run_live(engine, settings(), clock=clock, speed=1e9, stop_event=stop, on_bucket=on_bucket)
    assert summary.buckets == 2 and seen == [0, 1]


def test_the_simulator_as_an_api_bidder_serves_the_same_policy_and_the_api_explains_its_decisions(sqlite_url):
    from api.app import store_app
    from api.client import BidLensClient
    from api.server import serve_in_thread
    from api.sim_bidder import ApiBidder
    from app.tokens import Tokens
    from guards.pool_store import submit_pool
    from guards.rule_pool import PoolBounds
    from sim.kit import RULE_POOL_FILE
    from sim.live import register_catalog
    from tests.api_support import without_launch_gate

    engine = open_store(sqlite_url)
    register_catalog(engine, sim_support.full_kit(), f"{sim_support._DATA_DIR}/models")  # as `bidlens demo`
    api_now = DAY_START_TS + 90  # the API's clock: the promotion's second bucket
    with engine.begin() as conn:
        assert submit_pool(conn, RULE_POOL_FILE.read_text(encoding="utf-8"), "ops", api_now,
                           PoolBounds()).status == "active"
        plant_override_and_trip(conn)
    _, secret = Tokens(engine, lambda: api_now).create(None, "bidder", "simulator")
    without_launch_gate(engine, api_now)  # as `bidlens demo` does: the simulated 818 was never gated
    with serve_in_thread(store_app(engine, lambda: api_now, settings())) as url:
        bidder = ApiBidder(BidLensClient(url, secret, retries=0))
        summary = run_live(engine, settings(), clock=lambda: DAY_START_TS + 10**6, max_buckets=2,
                           bidder=bidder)
    assert summary.decisions == 2 * 480 and summary.outcomes > 0
    with engine.connect() as conn:
        second = conn.execute(select(s.decisions.c.decided_by, func.count())
                              .where(s.decisions.c.bucket_ts == DAY_START_TS + 60)
                              .group_by(s.decisions.c.decided_by)).all()
        sources = conn.execute(select(s.decisions.c.source).distinct()).scalars().all()
        explained = conn.execute(select(func.count()).select_from(s.explanations)).scalar()
        refused = conn.execute(select(func.count()).select_from(s.quarantine)).scalar()
    # The first bucket had no policy yet (nothing decided); the second serves the override and the pool.
    assert dict(second) == {"override": 12, "rule_pool": 12, "model": 480 - 24}
    assert sources == ["api"] and refused == 0
    assert explained == 2 * 480  # the API explained every decision with the registered model
