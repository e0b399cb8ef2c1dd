"""Delivery that is exactly once as far as a person can tell, against the local WeCom-protocol robot.

Each test drives the real outbox (SQLite, PostgreSQL where it says so) against
guards.alerts.local_server on simulated clocks: a robot slower than the read
timeout, a sender killed mid-send, sends at the edge of a second, a backlog after
an outage, a key with `+ / =`, messages longer than WeCom takes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import numpy as np
import pytest
import requests
from sqlalchemy import select

from cli.main import main
from guards.alerts import deliver_due, list_alerts
from guards.alerts.core import RateWindow
from guards.alerts.local_server import LocalRobotServer
from guards.alerts.outbox import send_now
from guards.alerts.transport import OutboundMessage
from guards.alerts.wecom import TRUNCATION_MARK
from store import schema as s
from store.engine import open_store
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
    max_in_rolling_window,
    ref_of,
    repeat_of,
    robot_config,
    run_senders,
    server_fixture,
    store,
    trip,
)

ROOT = Path(__file__).resolve().parents[1]


def copies(received, campaign: str) -> list[str]:
    """The messages the group saw that name a campaign, in order."""
    return [r.content for r in received if re.search(rf"\b{campaign}\b", r.content)]


# ---- a robot slower than the read timeout ---------------------------------------------------------

def test_slow_robot_past_the_read_timeout_shows_a_message_at_most_twice_the_second_marked(
        engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path, group_wait_s=0)  # read timeout 0.3 s
    channels = channels_for(config)
    server.set_mode("slow")
    server.state.slow_s = 0.6  # takes every message at once and shows it, answers after 0.6 s
    enqueue(engine, trip("c001", int(clock())), int(clock()), config)
    report = deliver_due(engine, channels, clock, np.random.default_rng(1))
    assert report.unconfirmed == 1 and report.messages_sent == 0 and "ReadTimeout" in report.errors[0]

    def arrive(now):  # the robot stays slow while more trips come
        if int(now - START) in (20, 40, 60):
            i = int(now - START) // 20 + 1
            enqueue(engine, trip(f"c{i:03d}", int(now)), int(now), config)

    drain(engine, channels, clock, until=START + 600, step=5, on_tick=arrive)
    got = server.state.received
    first, again = copies(got, "c001")
    assert repeat_of(first) is None and repeat_of(again) == ref_of(first) != ref_of(again)
    assert "重发：ref" in again
    for c in ("c002", "c003", "c004"):  # the robot is waited for now: one copy each
        assert len(copies(got, c)) == 1 and repeat_of(copies(got, c)[0]) is None
    assert len(server.messages()) == len(got) == 5, "every message request was shown: none resent blindly"
    with engine.connect() as conn:
        assert {a.status for a in list_alerts(conn)} == {"delivered"}


def test_a_repeat_that_gets_no_answer_either_is_never_sent_a_third_time(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path, group_wait_s=0)
    channels = channels_for(config)
    # The message is shown but its answer lost; the probe is answered; the repeat is shown, its answer lost.
    server.then("accept_drop", "ok", "accept_drop")
    enqueue(engine, trip("c001", int(clock())), int(clock()), config)
    reports = drain(engine, channels, clock, until=START + 900, step=5)
    assert sum(r.unconfirmed for r in reports) == 2 and sum(r.probes for r in reports) == 1
    first, again = copies(server.state.received, "c001")
    assert repeat_of(again) == ref_of(first)
    with engine.connect() as conn:
        [alert] = list_alerts(conn)
    assert alert.status == "delivered" and alert.last_error.startswith("unconfirmed: no answer to ref")
    enqueue(engine, trip("c002", int(clock())), int(clock()), config)  # the channel goes on: probe, then send
    drain(engine, channels, clock, until=clock() + 60, step=5)
    assert len(copies(server.state.received, "c002")) == 1 and len(copies(server.state.received, "c001")) == 2


# ---- a sender killed mid-send ---------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from guards.alerts import deliver_due
    from guards.alerts.config import parse_config
    from store.engine import make_engine
    from tests.alerts_support import channels_for, robot_config
    url, base_url, data_dir, start = sys.argv[1:5]
    config = robot_config(base_url, data_dir, group_wait_s=0, timeout_s=25)
    deliver_due(make_engine(url), channels_for(config), lambda: float(start), np.random.default_rng(1))
""")


def test_sender_killed_with_sigkill_mid_send_is_repeated_once_marked(engine, server, tmp_path, clock):
    """A real sender process dies (SIGKILL) while WeCom holds its message: one marked repeat after the lease."""
    config = robot_config(server.base_url, tmp_path, group_wait_s=0)
    for i in range(3):
        enqueue(engine, trip(f"c{i:03d}", int(clock())), int(clock()), config)
    server.set_mode("slow")
    server.state.slow_s = 30  # the robot takes the message and keeps the answer: the sender waits in the POST
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, f"sqlite:///{tmp_path / 'bidlens.db'}", server.base_url,
                              str(tmp_path), str(START)], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not server.state.received and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert server.state.received, "the child never sent"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    server.set_mode("ok")
    with engine.connect() as conn:
        assert conn.execute(select(s.alert_notifications.c.status)).scalars().all() == ["sending"]
    channels = channels_for(config)
    clock.advance(30)  # within the lease: the message may still be on its way
    assert deliver_due(engine, channels, clock, np.random.default_rng(1)).messages_sent == 0
    clock.advance(31)
    report = deliver_due(engine, channels, clock, np.random.default_rng(1))
    assert report.unconfirmed == 1 and report.messages_sent == 1 and report.alerts_delivered == 3
    drain(engine, channels, clock, until=clock() + 600, step=30)
    first, again = (r.content for r in server.state.received)
    assert repeat_of(again) == ref_of(first) and "c000" in again and "c002" in again
    with engine.connect() as conn:
        assert {a.status for a in list_alerts(conn)} == {"delivered"}


# ---- the rate window, in exact time --------------------------------------------------------------

def test_whole_second_counting_would_let_21_through_in_59_seconds_exact_time_does_not():
    sent = [0.95 + k * 2.955 for k in range(20)]  # the 20th at 57.1 s
    window = RateWindow(20, 60)
    assert window.ready_ts([int(t) for t in sent], [], 60.05) == 60.05  # whole seconds: "first one is 60 s old"
    assert window.ready_ts(sent, [], 60.05) == pytest.approx(60.95)


def test_edge_of_second_sends_never_exceed_20_in_any_rolling_minute(engine, tmp_path):
    clock = Clock(START + 0.95)
    with LocalRobotServer(keys=[KEY], clock=clock) as server:
        config = robot_config(server.base_url, tmp_path, group_wait_s=0)
        channels = channels_for(config)
        waits = []
        for i in range(21):  # 21 sends spread over 59.1 s: each second's fraction hides the first one's age
            enqueue(engine, trip(f"c{i:03d}", int(clock())), int(clock()), config)
            report = deliver_due(engine, channels, clock, np.random.default_rng(i))
            waits.append(report.next_due_ts)
            if i < 20:
                clock.advance(2.955)
        assert len(server.state.received) == 20 and waits[-1] == pytest.approx(START + 60.95)
        clock.t = waits[-1]
        assert deliver_due(engine, channels, clock, np.random.default_rng(0)).messages_sent == 1
        times = [r.ts for r in server.state.received]
    assert len(times) == 21 and set(server.state.errcodes()) == {0}, "the robot never had to refuse"
    assert max_in_rolling_window(times) == 20 and times[20] - times[0] >= 60


class SlowClock(Clock):
    """A clock that takes a moment to read: senders that checked the window and logged their send apart
    (not under one lock) would all see the same free slot."""

    def __call__(self) -> float:
        time.sleep(0.02)
        return self.t


def test_rate_window_is_shared_by_sender_processes_and_the_test_command(store_url, tmp_path):
    """Many senders on one store (SQLite file or PostgreSQL) at the same instant: 20 requests, no more."""
    engine = open_store(store_url)
    clock = SlowClock(START + 0.5)
    with LocalRobotServer(keys=[KEY], clock=lambda: clock.t) as server:
        config = robot_config(server.base_url, tmp_path, group_wait_s=0)
        for i in range(3):  # `bidlens alerts test` three times: counted like every send
            assert send_now(engine, channels_for(config), "ops",
                            OutboundMessage(f"ops-test-{i}", "ops", "## 测试", ()), clock).ok
        outcomes = []

        def tests(own, k):
            for j in range(10):
                outcomes.append(send_now(own, channels_for(config), "ops",
                                         OutboundMessage(f"ops-test-{k}-{j}", "ops", "## 测试", ()), clock))

        assert run_senders(store_url, 4, tests) == []
        assert sum(o.ok for o in outcomes) == 17
        refused = [o for o in outcomes if not o.ok]
        assert all(o.rate_limited and "rate window full" in o.error for o in refused)
        enqueue(engine, trip("c001", int(clock())), int(clock()), config)
        report = deliver_due(engine, channels_for(config), clock, np.random.default_rng(1))
        assert report.messages_sent == 0 and report.next_due_ts == pytest.approx(START + 60.5, abs=0.01)
        clock.t = report.next_due_ts
        assert deliver_due(engine, channels_for(config), clock, np.random.default_rng(1)).messages_sent == 1
        assert len(server.state.received) == 21 and set(server.state.errcodes()) == {0}
        assert max_in_rolling_window([r.ts for r in server.state.received]) == 20
    engine.dispose()


# ---- recovery drains the backlog -------------------------------------------------------------------

@pytest.mark.parametrize("outage", ["http500", "drop"])
def test_backlog_drains_within_one_rate_window_after_the_robot_recovers(engine, server, tmp_path, clock, outage):
    """While the robot is down it is probed (not sent to); its first answer makes the whole backlog due."""
    config = robot_config(server.base_url, tmp_path, group_wait_s=0, language="both",
                          delivery={"backoff_max_s": 300})
    channels = channels_for(config)
    server.set_mode(outage)
    up_at = START + 900
    counter = iter(range(1000))

    def arrive(now):  # a trip every 6 s through a 15-minute outage, with its drivers: a backlog of messages
        if now < up_at and int(now - START) % 6 == 0:
            i = next(counter)
            enqueue(engine, trip(f"c{i:03d}", int(now), drivers=[
                {"feature": "competitor_bid", "display_zh": "竞争出价", "display_en": "Competitor bid", "delta": -0.4},
                {"feature": "hour", "display_zh": "时段", "display_en": "Hour", "delta": 0.1}],
                detail="出价高于规则池 / bids above the rule pool"), int(now), config)
        if now >= up_at:
            server.set_mode("ok")

    drain(engine, channels, clock, until=up_at - 1, step=3, on_tick=arrive)
    during = server.messages()
    assert len(during) <= 1 and len(server.state.requests) - len(during) <= 900 / config.delivery.probe_max_s + 3
    drain(engine, channels, clock, until=up_at + 120, step=1, on_tick=arrive)
    n = next(counter)
    got = [r for r in server.state.received]
    assert sorted(c for r in got for c in set(re.findall(r"\bc\d{3}\b", r.content))) == [f"c{i:03d}" for i in range(n)]
    assert len(got) >= 3, "the backlog is several messages"
    drained = max(r.ts for r in got) - up_at
    assert drained <= config.delivery.probe_max_s + 5 < 60, f"backlog drained {drained:.0f} s after recovery"
    assert 45009 not in server.state.errcodes() and max_in_rolling_window([r.ts for r in got]) <= 20
    with engine.connect() as conn:
        assert {a.status for a in list_alerts(conn, limit=None)} == {"delivered"}


# ---- the key, whatever its encoding ---------------------------------------------------------------

ENCODED_KEY = "ZqP8+VxN3/LmQ5=RtW7+WpE2/KdY9=="
SEGMENTS = [x for x in re.split(r"[+/=]", ENCODED_KEY) if x]


def leaks(text: str) -> list[str]:
    """Any trace of the key: raw, URL-encoded (either case), form-encoded, or any piece of it."""
    forms = {ENCODED_KEY, quote(ENCODED_KEY, safe=""), quote_plus(ENCODED_KEY),
             re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(ENCODED_KEY, safe="")),
             json.dumps(ENCODED_KEY)[1:-1].replace("/", "\\/"), *SEGMENTS}
    return sorted(f for f in forms if f in text)


def test_a_key_with_plus_slash_equals_leaks_nowhere(engine, tmp_path, clock, caplog, capsys, monkeypatch):
    caplog.set_level(logging.DEBUG)  # urllib3 logs each request's URL, with ?key=, at DEBUG
    with LocalRobotServer(keys=[ENCODED_KEY], clock=clock) as server:
        config_file = tmp_path / "alerts.toml"
        config_file.write_text(f'[channels.ops]\ntype = "wecom"\nkey_env = "{KEY_ENV}"\nbase_url = "{server.base_url}"\n'
                               'group_wait_s = 0\ntimeout_s = 0.3\n', encoding="utf-8")
        monkeypatch.setenv("BIDLENS_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("BIDLENS_ALERTS_CONFIG", str(config_file))
        monkeypatch.setenv(KEY_ENV, ENCODED_KEY)
        config = robot_config(server.base_url, tmp_path, group_wait_s=0)
        channels = channels_for(config, key=ENCODED_KEY)
        reports = []
        server.state.slow_s = 0.6
        for mode in ("ok", "slow", "drop", "http500", "ok", "invalid_key"):
            server.set_mode(mode)
            enqueue(engine, trip(f"c-{mode}", int(clock())), int(clock()), config)
            reports += drain(engine, channels, clock, until=clock() + 60, step=5)
        assert main(["alerts", "send"]) == 0 and main(["alerts", "list"]) == 0
        port = server.port
    assert sum(r.messages_sent for r in reports) >= 2 and sum(r.dead_alerts for r in reports) == 1
    assert "/cgi-bin/webhook/send" in caplog.text and "key=***" in caplog.text  # logged, redacted
    # The robot gone: connection refused, with the URL in requests' exception text.
    assert main(["alerts", "test", "--robot", "ops"]) == 1
    assert main(["alerts", "test", "--robot", "ops", "--json"]) == 1
    try:
        requests.post(f"http://127.0.0.1:{port}/cgi-bin/webhook/send", params={"key": ENCODED_KEY}, timeout=0.2)
    except requests.ConnectionError as exc:
        assert quote(ENCODED_KEY, safe="") in str(exc)  # the raw exception does carry it, encoded
        logging.getLogger("some.caller").exception("a caller logs the exception with its traceback")
    with engine.connect() as conn:
        stored = [*conn.execute(select(s.alerts.c.last_error)).scalars(),
                  *conn.execute(select(s.alert_notifications.c.last_error)).scalars(),
                  *conn.execute(select(s.alert_attempts.c.error)).scalars()]
    assert any("93000" in e for e in stored) and any("Timeout" in e or "Connection" in e for e in stored)
    out = capsys.readouterr()
    everything = "\n".join([caplog.text, *(r.getMessage() for r in caplog.records), *stored, out.out, out.err,
                            json.dumps([r.as_json() for r in reports], default=str)])
    assert "FAILED" in out.out and "ConnectionError" in out.out
    assert leaks(everything) == []


# ---- truncation: the body gives way --------------------------------------------------------------

def test_truncation_keeps_the_link_the_reference_and_the_second_language(engine, server, tmp_path, clock):
    long_detail = {"zh": "规则池出价说明。" * 700, "en": "Rule pool bid explanation. " * 400}  # ~15 KB each
    for msgtype, limit in (("markdown", 4096), ("text", 2048)):
        server.state.received.clear()
        config = robot_config(server.base_url, tmp_path, group_wait_s=0, language="both", msgtype=msgtype)
        enqueue(engine, trip(f"c-{msgtype}", int(clock()), detail=long_detail), int(clock()), config)
        deliver_due(engine, channels_for(config), clock, np.random.default_rng(1))
        [got] = server.state.received
        text = got.content
        assert len(text.encode()) <= limit and TRUNCATION_MARK not in text, "fitted, not cut by the client"
        with engine.connect() as conn:
            [alert] = [a for a in list_alerts(conn) if a.campaign_id == f"c-{msgtype}"]
        assert text.count(f"http://panel.example/alerts?alert={alert.alert_id}") == 2  # both languages' links
        assert "ROI 守护熔断" in text and "ROI guard tripped" in text and "说明" in text and "Detail" in text
        assert text.rstrip().endswith(f"ref {alert.message_id} · 08-18 04:53 (UTC+8)" +
                                      ("</font>" if msgtype == "markdown" else ""))
        clock.advance(10)
