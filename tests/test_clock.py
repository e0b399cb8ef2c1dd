from control.clock import AcceleratedClock, ManualClock
from store import repo


def test_accelerated_clock_is_shared_through_its_anchor():
    now = [1000.0]
    clock = AcceleratedClock(start_ts=5000, real_start=1000.0, speed=60, real_time=lambda: now[0])
    now[0] = 1002.5
    assert clock() == 5150
    again = AcceleratedClock.from_anchor(clock.anchor())
    assert again.start_ts == 5000 and again.speed == 60


def test_store_clock_is_real_time_until_a_demo_anchors_one(engine):
    with engine.begin() as conn:
        assert repo.store_clock(conn)() > 1_700_000_000
        repo.set_flag(conn, repo.DEMO_CLOCK_KEY, {"start_ts": 10, "real_start": 0.0, "speed": 0.0}, "demo", 1)
        assert repo.store_clock(conn)() == 10


def test_manual_clock_moves_only_by_hand():
    clock = ManualClock(100)
    assert clock() == 100 and clock.advance(60) == 160 and clock() == 160
