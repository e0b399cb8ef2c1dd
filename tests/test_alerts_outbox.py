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
from guards.alerts.outbox import get_alert
from store import schema as s
from tests.alerts_support import (  # noqa: F401 - the *_fixture names: pytest fixtures
    KEY,
    KEY_ENV,
    START,
    Clock,
    channels_for,
    clock_fixture,
    drain,
    engine_fixture,
    enqueue,
    ref_of,
    robot_config,
    run_senders,
    server_fixture,
    store,
    trip,
)


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
    assert sum(r.retries for r in reports) >= 1 and sum(r.probes for r in reports) >= 3
    outage = [r for r in server.state.requests if r.ts < START + 600]
    assert len([r for r in outage if not r.probe]) <= 2, "while it does not answer, the robot is probed, not sent to"
    probes = [r.ts for r in outage if r.probe]
    assert all(b - a >= config.delivery.backoff_base_s for a, b in zip(probes, probes[1:])), "probes back off"
    assert len(probes) <= 600 / config.delivery.probe_max_s + 3
    order = campaigns_in(r.content for r in server.state.received)
    assert order == [f"c{i:03d}" for i in range(30)], "all delivered after the outage, in order"
    with engine.connect() as conn:
        alerts = list_alerts(conn, limit=None)
    assert {a.status for a in alerts} == {"delivered"}
    assert max(a.delivered_ts for a in alerts) <= START + 600 + config.delivery.probe_max_s + 5


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


def test_crash_between_send_and_mark_sent_repeats_once_marked_as_a_repeat(engine, server, tmp_path, clock):
    """WeCom shows both copies: the one resend says it repeats the first one's ref, and none follows."""
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
    assert report.unconfirmed == 1 and report.resent == 1 and report.alerts_delivered == 4
    got = server.state.received
    assert len(got) == 2 and ref_of(got[0].content) != ref_of(got[1].content)
    assert f"重发：ref {ref_of(got[0].content)}" in got[1].content and "重发" not in got[0].content
    assert campaigns_in([got[0].content]) == campaigns_in([got[1].content])
    drain(engine, channels, clock, until=clock() + 300, step=30)
    assert len(server.state.received) == 2
    with engine.connect() as conn:
        alerts = list_alerts(conn)
    assert {a.message_id for a in alerts} == {ref_of(got[1].content)} and {a.status for a in alerts} == {"delivered"}


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



def test_outbox_and_ack_on_sqlite_and_postgres(store_url, tmp_path, clock):
    """The same enqueue / deliver / ack on both stores (conflict-free inserts, conditional claims)."""
    from app.alert_desk import acknowledge_alert
    from app.service import Control
    from control.config import Settings
    from control.domain import Role, User
    from control.permissions import ActorRefused
    from store.engine import open_store
    from tests.helpers import add_users

    engine = open_store(store_url)
    at = {"ts": int(clock())}
    control = Control(engine, lambda: at["ts"], Settings(data_dir=str(tmp_path)))
    with LocalRobotServer(keys=[KEY], clock=clock) as srv:
        config = robot_config(srv.base_url, tmp_path, group_wait_s=0)
        first = enqueue(engine, trip("c001", int(clock())), int(clock()), config)
        assert enqueue(engine, trip("c001", int(clock())), int(clock()), config).duplicate
        report = deliver_due(engine, channels_for(config), clock, np.random.default_rng(1))
        assert report.alerts_delivered == 1 and len(srv.state.received) == 1
    viewer = User("wang.wu", "Wang Wu", Role.ENGINEER, active=False)
    operator = User("li.lei", "Li Lei", Role.OPERATOR)
    add_users(engine, viewer, operator)
    with pytest.raises(ActorRefused, match="deactivated"):
        acknowledge_alert(control, viewer, first.alert_ids[0])
    at["ts"] += 90
    acked_ts = acknowledge_alert(control, operator, first.alert_ids[0])
    with engine.connect() as conn:
        alert = get_alert(conn, first.alert_ids[0])
    assert alert.acked_by == "li.lei" and acked_ts - alert.occurred_ts == 90
    engine.dispose()


def test_rate_window_runs_on_the_wall_clock_when_events_are_accelerated(engine, server, tmp_path):
    events, wall = Clock(), Clock()  # the demo's promotion clock runs 60 times faster than the wall
    server.state.clock = wall
    config = robot_config(server.base_url, tmp_path, group_wait_s=0)
    channels = channels_for(config)
    for i in range(30):  # one trip a simulated minute = one a real second
        enqueue(engine, trip(f"c{i:03d}", int(events())), int(events()), config)
        deliver_due(engine, channels, events, np.random.default_rng(i), wall_clock=wall)
        events.advance(60)
        wall.advance(1)
    assert set(server.state.errcodes()) == {0} and len(server.state.received) == 20
    wall.advance(60)
    deliver_due(engine, channels, events, np.random.default_rng(0), wall_clock=wall)
    assert sorted(campaigns_in(r.content for r in server.state.received)) == [f"c{i:03d}" for i in range(30)]


def test_dead_alerts_requeued_after_the_key_is_fixed(engine, server, tmp_path, clock):
    from guards.alerts.outbox import requeue_dead
    config = robot_config(server.base_url, tmp_path, group_wait_s=0)
    first = enqueue(engine, trip("c001", int(clock())), int(clock()), config)
    assert deliver_due(engine, channels_for(config, key="old-key"), clock, np.random.default_rng(1)).dead_alerts == 1
    with engine.begin() as conn:
        assert requeue_dead(conn, first.alert_ids, "ops.admin", int(clock())) == list(first.alert_ids)
        assert requeue_dead(conn, first.alert_ids, "ops.admin", int(clock())) == []
    assert deliver_due(engine, channels_for(config), clock, np.random.default_rng(1)).alerts_delivered == 1


@pytest.mark.slow
def test_two_senders_at_once_deliver_each_alert_once(tmp_path, server, clock):
    """Two sender processes (separate engines) on one store: claims and planning never double a message."""
    engine = store(tmp_path)
    config = robot_config(server.base_url, tmp_path, group_wait_s=0, rate_limit=1000)
    for i in range(60):
        enqueue(engine, trip(f"c{i:03d}", int(clock())), int(clock()), config)
        if i % 6 == 5:
            clock.advance(1)

    def sender(own, seed):
        for _ in range(20):
            deliver_due(own, channels_for(config), clock, np.random.default_rng(seed))

    assert run_senders(f"sqlite:///{tmp_path / 'bidlens.db'}", 2, sender) == []
    assert sorted(campaigns_in(r.content for r in server.state.received)) == [f"c{i:03d}" for i in range(60)]


def test_webhook_token_never_in_errors(engine, tmp_path, clock, caplog):
    import logging
    caplog.set_level(logging.DEBUG)
    with LocalRobotServer() as srv:
        dead_url = srv.hook_url + "/T0001/B0002?token=hook-s3cret-token"
    config = parse_config({"channels": {"hook": {"type": "webhook", "url_env": "HOOK", "group_wait_s": 0,
                                                 "timeout_s": 0.3}}}, str(tmp_path))
    enqueue(engine, trip("c001", int(clock())), int(clock()), config)
    report = deliver_due(engine, build_channels(config, {"HOOK": dead_url}), clock, np.random.default_rng(1))
    assert report.retries == 1 and "ConnectionError" in report.errors[0]
    with engine.connect() as conn:
        stored = list_alerts(conn)[0].last_error
    text = json.dumps(report.as_json()) + stored + caplog.text
    assert "hook-s3cret-token" not in text and "T0001/B0002" not in text


def test_a_broken_config_file_never_fails_the_guards_transaction(engine, tmp_path, clock, monkeypatch, caplog):
    bad = tmp_path / "alerts.toml"
    bad.write_text("[channels.ops]\ntype = 'wecom'\n", encoding="utf-8")  # no key_env
    monkeypatch.setenv("BIDLENS_ALERTS_CONFIG", str(bad))
    monkeypatch.setenv("BIDLENS_DATA_DIR", str(tmp_path))
    with engine.begin() as conn:
        result = enqueue_alert(conn, trip("c001", int(clock())), int(clock()))
    assert len(result.alert_ids) == 1 and "alerts config unusable" in caplog.text
    with engine.connect() as conn:
        assert list_alerts(conn)[0].channel == "log"


def test_unacknowledged_trip_is_repeated_every_interval_until_acked_or_resolved(engine, server, tmp_path, clock):
    from guards.alerts import acknowledge
    from guards.alerts.metrics import response_times_by_day
    config = robot_config(server.base_url, tmp_path, group_wait_s=0, repeat_interval_s=3600)
    channels = channels_for(config)
    first = enqueue(engine, trip("c001", int(clock())), int(clock()), config)
    reports = drain(engine, channels, clock, until=START + 2 * 3600 + 60, step=60)
    assert sum(r.reminders for r in reports) == 2 and len(server.state.received) == 3
    assert "自 08-18" in server.state.received[-1].content  # "still firing since" the first trip
    with engine.begin() as conn:
        latest = list_alerts(conn)[0]
        assert latest.kind is AlertKind.REMINDER and latest.payload["items"][0]["alert_id"] == first.alert_ids[0]
        acknowledge(conn, latest.alert_id, "li.lei", int(clock()))  # acking a reminder acks the condition
    drain(engine, channels, clock, until=clock() + 4 * 3600, step=300)
    assert len(server.state.received) == 3
    with engine.connect() as conn:
        records = list_alerts(conn, limit=None)
    assert {r.acked_by for r in records if r.kind is AlertKind.GUARD_TRIPPED} == {"li.lei"}
    [day] = response_times_by_day(records)
    assert day.alerts == 1 and day.ack_median_s == records[0].acked_ts - START  # reminders are not new anomalies


def test_sender_loop_delivers_after_the_group_wait_and_outlives_a_failed_pass(engine, server, tmp_path, clock,
                                                                                caplog):
    from guards.alerts import deliver_until

    config = robot_config(server.base_url, tmp_path)
    enqueue(engine, trip("c001", int(clock())), int(clock()), config)
    calls, reports = [], []

    def channels():
        calls.append(clock())
        if len(calls) == 2:
            raise OSError("alerts config briefly unreadable")
        return channels_for(config)

    deliver_until(lambda: clock() > START + 40, engine, channels, clock, np.random.default_rng(1),
                  wall_clock=clock, sleep=clock.advance, poll_s=5, on_report=reports.append)
    assert len(calls) == 9 and len(reports) == 8  # passes at 0, 5, ... 40 s; the second one failed
    assert "alert delivery pass failed" in caplog.text and "briefly unreadable" in caplog.text
    assert [r.messages_sent for r in reports] == [0, 0, 0, 0, 0, 1, 0, 0]  # sent at 30 s: the group wait
    assert campaigns_in([m.content for m in server.state.received]) == ["c001"]
