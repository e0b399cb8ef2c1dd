"""The durable outbox against a real SQLite store and a local WeCom-protocol server, on simulated time."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import insert, select

from guards.alerts import AlertEvent, AlertKind, Severity, deliver_due, enqueue_alert, list_alerts
from guards.alerts.channels import build_channels
from guards.alerts.config import parse_config
from guards.alerts.local_server import LocalRobotServer
from store import schema as s
from tests.alerts_support import (
    KEY,
    KEY_ENV,
    START,
    Clock,
    channels_for,
    drain,
    enqueue,
    ref_of,
    robot_config,
    store,
    trip,
)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def server(clock):
    with LocalRobotServer(keys=[KEY], clock=clock) as srv:
        yield srv


@pytest.fixture
def engine(tmp_path):
    return store(tmp_path)


def campaigns_in(contents) -> list[str]:
    import re
    return [c for text in contents for c in re.findall(r"\bc\d{3}\b", text)]


def test_alert_commits_and_rolls_back_with_the_callers_transaction(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(insert(s.guard_events).values(ts=START, guard="roi", campaign_id="c001", kind="trip",
                                                   payload={}))
        enqueue_alert(conn, trip("c001", START), START, config=config)
        raise RuntimeError("the guard's transaction fails after enqueueing")
    with engine.connect() as conn:
        assert list_alerts(conn) == [] and conn.execute(select(s.guard_events)).all() == []
    first = enqueue(engine, trip("c001", START), START, config)
    again = enqueue(engine, trip("c001", START), START, config)
    assert len(first.alert_ids) == 1 and again.duplicate and again.alert_ids == first.alert_ids


def test_group_wait_then_one_grouped_message(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path)
    channels = channels_for(config)
    for i in range(5):
        enqueue(engine, trip(f"c{i:03d}", int(clock())), int(clock()), config)
        clock.advance(2)
    report = deliver_due(engine, channels, clock, np.random.default_rng(1))
    assert report.messages_sent == 0 and report.next_due_ts == START + 30  # first alert's group wait
    clock.t = START + 30
    report = deliver_due(engine, channels, clock, np.random.default_rng(1))
    assert report.messages_sent == 1 and report.alerts_delivered == 5
    assert sorted(campaigns_in([server.state.received[0].content])) == [f"c{i:03d}" for i in range(5)]


@pytest.mark.slow
def test_storm_of_200_trips_is_delivered_grouped_within_the_rate_limit(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path)
    channels = channels_for(config)
    events = iter(range(200))

    def arrive(now):  # 200 trips of 200 campaigns in 60 s: one every 0.3 s
        while True:
            i = next(events, None)
            if i is None:
                return
            enqueue(engine, trip(f"c{i:03d}", int(now), spend_at_risk=float(i)), int(now), config)
            if (i + 1) % 10 == 0 and i < 199:
                return

    drain(engine, channels, clock, until=START + 59, step=3.0, on_tick=arrive)
    drain(engine, channels, clock, until=START + 600, step=5.0)
    got = server.state.received
    assert set(server.state.errcodes()) == {0}, "WeCom never had to refuse a message"
    assert sorted(campaigns_in(r.content for r in got)) == [f"c{i:03d}" for i in range(200)]  # none lost, none twice
    assert len(got) <= 10, f"{len(got)} messages for a storm: not grouped"
    assert all(len(r.content.encode()) <= 4096 for r in got)
    times = sorted(r.ts for r in got)
    assert all(sum(1 for t in times if w <= t < w + 60) <= 20 for w in times)
    with engine.connect() as conn:
        assert {a.status for a in list_alerts(conn, limit=None)} == {"delivered"}


@pytest.mark.slow
def test_wecom_down_ten_minutes_then_everything_delivered_in_order(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path, group_wait_s=0)
    channels = channels_for(config)
    server.set_mode("http500")
    counter = iter(range(40))

    def arrive(now):
        if now < START + 600 and int(now - START) % 20 == 0:
            i = next(counter)
            enqueue(engine, trip(f"c{i:03d}", int(now)), int(now), config)
        if now >= START + 300:
            server.set_mode("drop")  # half the outage: connections dropped instead of 500s
        if now >= START + 600:
            server.set_mode("ok")

    reports = drain(engine, channels, clock, until=START + 1200, step=5.0, on_tick=arrive)
    assert sum(r.retries for r in reports) >= 3
    outage_requests = [a for a in server.state.answers if a[0] < START + 600]
    assert len([a for a in outage_requests if a[1] == 500]) <= 10, "backoff, not hammering"
    order = campaigns_in(r.content for r in server.state.received)
    assert order == [f"c{i:03d}" for i in range(30)], "all delivered after the outage, in order"
    with engine.connect() as conn:
        alerts = list_alerts(conn, limit=None)
    assert {a.status for a in alerts} == {"delivered"}
    assert max(a.delivered_ts for a in alerts) <= START + 600 + config.delivery.backoff_max_s + 5


def test_invalid_key_goes_dead_visibly_and_is_not_retried(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path, group_wait_s=0)
    channels = channels_for(config, key="revoked-key-123")
    for i in range(3):
        enqueue(engine, trip(f"c{i:03d}", int(clock())), int(clock()), config)
    report = deliver_due(engine, channels, clock, np.random.default_rng(1))
    assert report.dead_alerts == 3 and report.dead_messages == 1
    assert "93000" in report.errors[0] and "revoked-key-123" not in json.dumps(report.as_json())
    drain(engine, channels, clock, until=START + 3600, step=60)
    assert len(server.state.answers) == 1, "a permanent failure is not retried"
    with engine.connect() as conn:
        dead = list_alerts(conn, status="dead")
    assert len(dead) == 3 and all("93000" in a.last_error and "revoked" not in a.last_error for a in dead)


def test_rate_limit_answer_waits_for_the_next_window(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path, group_wait_s=0)
    channels = channels_for(config)
    enqueue(engine, trip("c001", int(clock())), int(clock()), config)
    server.set_mode("rate_limit")
    report = deliver_due(engine, channels, clock, np.random.default_rng(1))
    assert report.throttled == 1 and report.next_due_ts == START + 60
    server.set_mode("ok")
    clock.advance(59)
    assert deliver_due(engine, channels, clock, np.random.default_rng(1)).messages_sent == 0
    clock.advance(1)
    assert deliver_due(engine, channels, clock, np.random.default_rng(1)).messages_sent == 1


class Crash(BaseException):
    """The process dies: nothing after the send runs."""


class CrashAfterSend:
    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def send(self, message):
        self.inner.send(message)
        raise Crash


def test_crash_between_send_and_mark_sent_resends_the_same_message_once(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path, group_wait_s=0)
    channels = channels_for(config)
    for i in range(4):
        enqueue(engine, trip(f"c{i:03d}", int(clock())), int(clock()), config)
    crashing = build_channels(config, {KEY_ENV: KEY})
    crashing.transports["ops"] = CrashAfterSend(crashing.transports["ops"])
    with pytest.raises(Crash):
        deliver_due(engine, crashing, clock, np.random.default_rng(1))
    clock.advance(30)  # a restarted sender within the lease does not touch the in-flight message
    assert deliver_due(engine, channels, clock, np.random.default_rng(1)).messages_sent == 0
    clock.advance(31)
    report = deliver_due(engine, channels, clock, np.random.default_rng(1))
    assert report.resent == 1 and report.alerts_delivered == 4
    got = server.state.received
    assert len(got) == 2 and got[0].content == got[1].content, "the resend is the same message"
    assert ref_of(got[0].content) == ref_of(got[1].content)
    drain(engine, channels, clock, until=clock() + 300, step=30)
    assert len(server.state.received) == 2
    with engine.connect() as conn:
        alerts = list_alerts(conn)
    assert {a.message_id for a in alerts} == {ref_of(got[0].content)} and {a.status for a in alerts} == {"delivered"}


def test_crash_resend_to_a_webhook_is_dropped_by_its_idempotency_key(engine, server, tmp_path, clock):
    config = parse_config({"channels": {"hook": {"type": "webhook", "url_env": "HOOK_URL", "group_wait_s": 0}}},
                          str(tmp_path))
    env = {"HOOK_URL": server.hook_url + "?token=hook-secret"}
    enqueue(engine, trip("c001", int(clock())), int(clock()), config)
    crashing = build_channels(config, env)
    crashing.transports["hook"] = CrashAfterSend(crashing.transports["hook"])
    with pytest.raises(Crash):
        deliver_due(engine, crashing, clock, np.random.default_rng(1))
    clock.advance(61)
    report = deliver_due(engine, build_channels(config, env), clock, np.random.default_rng(1))
    assert report.resent == 1 and report.alerts_delivered == 1
    assert len(server.state.hook_received) == 1 and server.state.hook_duplicates == 1
    assert server.state.hook_received[0]["alerts"][0]["campaign_id"] == "c001"


def test_repeat_only_after_the_repeat_interval_and_resolution_announced_once(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path, group_wait_s=0, repeat_interval_s=3600)
    t = int(clock())
    first = enqueue(engine, trip("c001", t), t, config)
    for minutes in (1, 10, 59):  # the guard reports the same trip again and again
        r = enqueue(engine, trip("c001", t + 60 * minutes), t + 60 * minutes, config)
        assert r.alert_ids == () and r.suppressed == first.alert_ids
    repeat = enqueue(engine, trip("c001", t + 3600), t + 3600, config)
    assert len(repeat.alert_ids) == 1
    restored = AlertEvent(AlertKind.GUARD_RESTORED, Severity.INFO, t + 4000, campaign_id="c001", guard="roi")
    res = enqueue(engine, restored, t + 4000, config)
    assert len(res.alert_ids) == 1 and set(res.resolved) == {*first.alert_ids, *repeat.alert_ids}
    again = enqueue(engine, AlertEvent(AlertKind.GUARD_RESTORED, Severity.INFO, t + 4100,
                                       campaign_id="c001", guard="roi"), t + 4100, config)
    assert again.alert_ids == () and again.resolved == ()
    with engine.connect() as conn:
        rows = {a.alert_id: a for a in list_alerts(conn)}
    assert rows[first.alert_ids[0]].repeats == 3 and rows[first.alert_ids[0]].resolved_ts == t + 4000
    assert rows[res.alert_ids[0]].payload["fired_ts"] == t
    clock.t = t + 4000
    deliver_due(engine, channels_for(config), clock, np.random.default_rng(1))
    texts = [r.content for r in server.state.received]
    assert any("已恢复" in x and "持续 67 分钟" in x for x in texts)


def test_acknowledged_condition_is_not_repeated(engine, server, tmp_path, clock):
    from guards.alerts import acknowledge
    config = robot_config(server.base_url, tmp_path, repeat_interval_s=600)
    t = int(clock())
    first = enqueue(engine, trip("c001", t), t, config)
    with engine.begin() as conn:
        acknowledge(conn, first.alert_ids[0], "li.lei", t + 100)
    later = enqueue(engine, trip("c001", t + 5000), t + 5000, config)
    assert later.alert_ids == () and later.suppressed == first.alert_ids


def test_rate_window_holds_across_sender_restarts(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path, group_wait_s=0, rate_limit=3)
    for i in range(6):  # six single-alert messages: each drains before the next arrives
        enqueue(engine, trip(f"c{i:03d}", int(clock())), int(clock()), config)
        deliver_due(engine, channels_for(config), clock, np.random.default_rng(i))  # a fresh "process" each
        clock.advance(1)
    assert len(server.state.received) == 3
    clock.advance(60)
    deliver_due(engine, channels_for(config), clock, np.random.default_rng(9))
    assert sorted(campaigns_in(r.content for r in server.state.received)) == [f"c{i:03d}" for i in range(6)]


def test_channel_without_its_key_keeps_alerts_waiting(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path, group_wait_s=0)
    enqueue(engine, trip("c001", int(clock())), int(clock()), config)
    channels = build_channels(config, {})
    report = deliver_due(engine, channels, clock, np.random.default_rng(1))
    assert KEY_ENV in report.unavailable["ops"] and report.messages_sent == 0
    report = deliver_due(engine, channels_for(config), clock, np.random.default_rng(1))
    assert report.alerts_delivered == 1


def test_give_up_deadline_marks_dead(engine, server, tmp_path, clock):
    doc = {"channels": {"ops": {"type": "wecom", "key_env": KEY_ENV, "base_url": server.base_url,
                                "group_wait_s": 0, "timeout_s": 0.3}},
           "delivery": {"give_up_after_s": 600, "backoff_max_s": 60}}
    config = parse_config(doc, str(tmp_path))
    enqueue(engine, trip("c001", int(clock())), int(clock()), config)
    server.set_mode("http500")
    drain(engine, channels_for(config), clock, until=START + 900, step=10)
    with engine.connect() as conn:
        [alert] = list_alerts(conn)
    assert alert.status == "dead" and "gave up" in alert.last_error

