"""`bidlens alerts ...` end to end: local robot server, SQLite store, settings from the environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from app.service import Control
from cli.main import main
from control.audit import verify_chain
from control.config import Settings
from control.domain import Role
from guards.alerts import enqueue_alert, load_config
from guards.alerts.local_server import LocalRobotServer
from store import schema as s
from tests.alerts_support import KEY, KEY_ENV, START, store, trip


def run(argv) -> int:
    return main(argv)


@pytest.fixture
def env(tmp_path, monkeypatch):
    with LocalRobotServer(keys=[KEY]) as srv:
        config = tmp_path / "alerts.toml"
        config.write_text(f"""
[channels.ops]
type = "wecom"
key_env = "{KEY_ENV}"
base_url = "{srv.base_url}"
group_wait_s = 0

[channels.file]
type = "log_file"
path = "alerts.log"
group_wait_s = 0

[[routes]]
channels = ["ops", "file"]
""", encoding="utf-8")
        monkeypatch.setenv("BIDLENS_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("BIDLENS_ALERTS_CONFIG", str(config))
        monkeypatch.setenv(KEY_ENV, KEY)
        monkeypatch.setenv("BIDLENS_PANEL_URL", "https://bidlens.example")
        engine = store(tmp_path)
        control = Control(engine, lambda: START, Settings(data_dir=str(tmp_path)))
        for username in ("han.meimei", "someone.else"):  # who may acknowledge: people BidLens knows
            control.add_user(None, username, username, Role.OPERATOR, "a long password")
        yield srv, engine, tmp_path


def test_send_list_ack_and_stats(env, capsys):
    srv, engine, tmp_path = env
    config = load_config(str(tmp_path / "alerts.toml"), str(tmp_path))
    with engine.begin() as conn:
        result = enqueue_alert(conn, trip("c001", START), START, config=config)
    assert len(result.alert_ids) == 2  # WeCom and the log file
    assert run(["alerts", "send", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["messages_sent"] == 2 and report["alerts_delivered"] == 2
    assert "https://bidlens.example/alerts?alert=" in srv.state.received[0].content
    logged = [json.loads(x) for x in (tmp_path / "alerts.log").read_text(encoding="utf-8").splitlines()]
    assert logged[0]["alerts"][0]["campaign_id"] == "c001"

    assert run(["alerts", "list", "--json", "--status", "delivered"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {a["channel"] for a in listed} == {"ops", "file"}

    alert_id = result.alert_ids[0]
    assert run(["alerts", "ack", str(alert_id), "--by", "han.meimei", "--json"]) == 0
    acked = json.loads(capsys.readouterr().out)
    assert acked["acked_by"] == "han.meimei" and not acked["already"]
    assert run(["alerts", "ack", str(alert_id), "--by", "someone.else"]) == 0
    assert "already acknowledged by han.meimei" in capsys.readouterr().out
    with engine.connect() as conn:
        audit = conn.execute(select(s.audit_log)).all()
        both = conn.execute(select(s.alerts.c.acked_by)).scalars().all()
    assert both == ["han.meimei", "han.meimei"]  # the event is acknowledged on every channel
    acks = [a for a in audit if a.entity == "alert"]
    assert [a.action for a in acks] == ["alert.ack"] and acks[0].actor == "han.meimei"
    assert verify_chain(audit).ok

    assert run(["alerts", "stats", "--json"]) == 0
    [day] = json.loads(capsys.readouterr().out)
    assert day["alerts"] == 1 and day["acked"] == 1 and day["ack_median_s"] > 0


def test_robot_test_command_and_errors_keep_the_key_secret(env, capsys, monkeypatch):
    srv, _, _ = env
    assert run(["alerts", "test", "--robot", "ops"]) == 0
    assert "测试" in srv.state.received[-1].content and "ops: sent" in capsys.readouterr().out
    srv.set_mode("invalid_key")
    assert run(["alerts", "test", "--robot", "ops", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["errcode"] == 93000 and not out["retryable"]
    assert run(["alerts", "test", "--robot", "nope"]) == 2
    monkeypatch.delenv(KEY_ENV)
    assert run(["alerts", "test", "--robot", "ops"]) == 2
    assert run(["alerts", "ack", "12345", "--by", "han.meimei"]) == 2
    captured = capsys.readouterr()
    assert KEY_ENV in captured.err and "no such alert" in captured.err
    assert KEY not in captured.out + captured.err


@pytest.mark.slow
def test_bench_alerts_quick_json_contract():
    out = subprocess.run([sys.executable, "-m", "cli.main", "bench", "alerts", "--quick", "--json", "--no-postgres"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=True)
    results = {r["name"]: r for r in json.loads(out.stdout)}
    assert {"alerts.enqueue_to_delivered_p50", "alerts.storm_drain_simulated"} <= set(results)
    storm = results["alerts.storm_drain_simulated"]
    assert storm["extra"]["refused"] == 0 and storm["value"] <= storm["baseline_value"]


def test_local_robot_command_prints_what_it_receives(tmp_path):
    import os
    import signal

    from guards.alerts.transport import OutboundMessage
    from guards.alerts.wecom import WeComRobot

    env = {**os.environ, "DEMO_KEY": KEY, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "alerts", "local-robot", "--port", "0",
                             "--key-env", "DEMO_KEY"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()
        url = first.split(" at ")[1].split(" ")[0]
        assert WeComRobot("demo", KEY, base_url=url).send(OutboundMessage("m-1", "demo", "## 熔断 c001", ())).ok
        lines = [proc.stdout.readline() for _ in range(2)]
        assert "markdown" in lines[0] and "熔断 c001" in lines[1]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert KEY not in first


def test_robot_test_command_counts_in_the_rate_window(env, capsys):
    """`alerts test` sends through the robot's rate window: the 21st within a minute is not sent."""
    srv, engine, tmp_path = env
    for _ in range(20):
        assert run(["alerts", "test", "--robot", "ops"]) == 0
    capsys.readouterr()
    assert run(["alerts", "test", "--robot", "ops", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["rate_limited"] and "rate window full" in out["error"]
    assert len(srv.state.requests) == 20 and set(srv.state.errcodes()) == {0}, "WeCom never saw the 21st"
    config = load_config(str(tmp_path / "alerts.toml"), str(tmp_path))
    with engine.begin() as conn:
        enqueue_alert(conn, trip("c001", START), START, config=config)
    assert run(["alerts", "send", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["messages_sent"] == 1 and "ops" in report["waiting"]  # the log file went; the robot waits
    assert len(srv.state.requests) == 20
