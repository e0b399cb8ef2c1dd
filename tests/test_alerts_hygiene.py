"""Alert hygiene (issue 15, item 3): what people get, and how often.

- a data-stale condition for many campaigns is one alert (each guard's view of a campaign a member),
  fresh data for all of them one announcement;
- a failed probation folds into the open trip (counted, no message); an action change updates it
  (folded into it when not sent yet, else one message saying what changed);
- reminders of a channel go together (one message, most severe first);
- a grouped message links to its most severe item: the link lands on the right kind and campaign;
- the panel lists one entry per alert with its channels, and counts one open alert per open condition;
- the kill switch and an override's four-eyes steps alert, the proposer told by name (mentioned
  when the config knows them) and in the panel;
- the guard worker stops at the end of the promotion day and says so once; reminders stop too.
"""

from __future__ import annotations

import json
import re
import tomllib

import numpy as np
import pytest
from sqlalchemy import select

from app import board
from app.service import Control
from control.clock import ManualClock
from control.config import Settings
from control.domain import GuardMode, OverrideField, Role, User
from control.policy import KillSwitch
from guards.alert_bridge import alert_for, enqueue_day_over_alert, enqueue_guard_alert
from guards.alerts import AlertEvent, AlertKind, Severity, deliver_due, enqueue_alert, list_alerts
from guards.alerts.config import parse_config
from guards.alerts.core import AlertRecord, OpenAlert, most_severe, plan_enqueue
from guards.alerts.notices import kill_switch_alerts
from guards.alerts.templates import Style, render
from guards.alerts.wecom import WeComRobot
from guards.machine import ActionChanged, DataFresh, DataStale, GuardEvent, GuardTripped, ProbationFailed
from guards.worker import GuardWorker
from store import repo
from store import schema as s
from tests.alerts_support import (  # noqa: F401 - the *_fixture names: pytest fixtures
    KEY,
    KEY_ENV,
    START,
    channels_for,
    clock_fixture,
    drain,
    engine_fixture,
    enqueue,
    robot_config,
    server_fixture,
    trip,
)
from tests.guards_helpers import T0, make_store
from tests.helpers import add_users
from tests.test_guards_worker import SETTINGS, play

T = START
HOUR = {"ops": 3600, "file": 3600}.__getitem__
LINK = re.compile(r"/alerts\?alert=(\d+)")


def guard_event(cls, campaign: str, ts: int, guard: str = "roi", **kw) -> GuardEvent:
    before, after = kw.pop("modes", (GuardMode.MODEL, GuardMode.MODEL))
    return cls(guard=guard, campaign_id=campaign, ts=ts, mode_before=before, mode_after=after,
               figures=(("pred_roi", 1.8), ("floor", 2.0)), **kw)


def record(i: int, kind=AlertKind.GUARD_TRIPPED, severity="critical", **kw) -> AlertRecord:
    base = dict(alert_id=i, event_key=f"e{i}", channel="ops", kind=kind, severity=severity,
                campaign_id=f"c{i:02d}", guard="roi", condition_key=f"roi:c{i:02d}", payload={},
                status="pending", occurred_ts=T, created_ts=T, next_attempt_ts=T)
    return AlertRecord(**{**base, **kw})


def robot_and_file(base_url, tmp_path, **extra):
    """A WeCom robot in both languages and a log file, every alert to both (the demo's channels)."""
    doc = {"channels": {"ops": {"type": "wecom", "key_env": KEY_ENV, "base_url": base_url, "timeout_s": 0.3,
                                "language": "both"},
                        "file": {"type": "log_file", "path": "alerts.log"}},
           "routes": [{"channels": ["file"], "continue": True}, {"channels": ["ops"]}], **extra}
    return parse_config(doc, str(tmp_path))


# ---- pure rules -----------------------------------------------------------------------------------

def test_a_failed_probation_folds_into_the_open_trip_and_never_messages():
    failed = AlertEvent(AlertKind.PROBATION_FAILED, "warning", T, campaign_id="c1", guard="roi")
    open_ = [OpenAlert("ops", 7, T - 9000, False), OpenAlert("file", 8, T - 9000, True)]
    plan = plan_enqueue(failed, ["ops", "file"], open_, HOUR, T)
    assert plan.insert == () and plan.suppressed == (("file", 8), ("ops", 7))  # even past the repeat interval
    assert plan_enqueue(failed, ["ops"], [], HOUR, T).insert == ("ops",)  # nothing open: it is news, not lost


def test_an_action_change_folds_into_its_trip_sent_or_not():
    """The demo day had 140 action changes for 41 trips: each as a message, they drowned the trips."""
    changed = AlertEvent(AlertKind.ACTION_CHANGED, "warning", T, campaign_id="c1", guard="roi")
    waiting = [OpenAlert("ops", 7, T - 10, False, queued=True), OpenAlert("file", 8, T - 10, False)]
    plan = plan_enqueue(changed, ["ops", "file"], waiting, HOUR, T)
    assert plan.updated == (("ops", 7),) and plan.insert == () and plan.suppressed == (("file", 8),)
    assert not plan.resolve
    assert plan_enqueue(changed, ["ops"], [], HOUR, T).insert == ("ops",)


def test_members_of_a_shared_condition_join_quietly_and_it_resolves_when_the_last_leaves():
    def stale(member):
        return AlertEvent(AlertKind.DATA_STALE, "warning", T, campaign_id=member[-3:], guard="roi",
                          condition_key="data:stale", member=member)

    def fresh(member):
        return AlertEvent(AlertKind.DATA_FRESH, "info", T, campaign_id=member[-3:], guard="roi",
                          condition_key="data:stale", member=member)

    first = plan_enqueue(stale("roi:c01"), ["ops"], [], HOUR, T)
    assert first.insert == ("ops",) and first.members == {"roi:c01"}
    open_ = [OpenAlert("ops", 1, T - 7200, False)]  # past the repeat interval: a member still only joins
    join = plan_enqueue(stale("roi:c02"), ["ops"], open_, HOUR, T, frozenset({"roi:c01"}))
    assert join.insert == () and join.suppressed == (("ops", 1),) and join.members == {"roi:c01", "roi:c02"}
    leave = plan_enqueue(fresh("roi:c01"), ["ops"], open_, HOUR, T, frozenset({"roi:c01", "roi:c02"}))
    assert leave.insert == () and not leave.resolve and leave.members == {"roi:c02"}
    last = plan_enqueue(fresh("roi:c02"), ["ops"], open_, HOUR, T, frozenset({"roi:c02"}))
    assert last.insert == ("ops",) and last.resolve and last.members == frozenset()
    assert stale("roi:c01").event_key != stale("roi:c02").event_key  # each member its own event


def test_a_grouped_message_links_to_its_most_severe_item():
    fresh_other = record(1, AlertKind.DATA_FRESH, "info", campaign_id="c09")
    warning = record(2, AlertKind.PROBATION_FAILED, "warning")
    small, big = (record(i, payload={"spend_at_risk": risk}) for i, risk in ((3, 100.0), (4, 9000.0)))
    assert most_severe([fresh_other, warning, small, big]).alert_id == 4
    assert most_severe([fresh_other, warning]).alert_id == 2
    text = render([fresh_other, small, big], "ops-1", Style("both", panel_url="https://p"))
    assert set(LINK.findall(text)) == {"4"}


def test_messages_say_members_changes_and_whom_they_are_for():
    stale = record(1, AlertKind.DATA_STALE, "warning", campaign_id=None, guard=None, payload={
        "pred_roi": 2.9, "members": {f"roi:c{i:02d}": f"c{i:02d}" for i in range(40)}})
    text = render([stale], "ops-1", Style("zh"))
    assert "c00、c01" in text and "等 40 个计划" in text and "2.90" not in text  # no one member's figures
    changed = record(2, AlertKind.ACTION_CHANGED, "warning", payload={
        "action_before": "pool", "action_after": "bid_cut", "action": "bid_cut", "bid_factor": 0.7})
    assert "人工规则池接管 → 模型出价下调（出价 ×0.70）" in render([changed], "ops-2", Style("zh"))
    assert "the manual rule pool serves → the model's bid is cut (bid x0.70)" in render([changed], "ops-2",
                                                                                      Style("en"))
    approved = record(3, AlertKind.OVERRIDE_APPROVED, "info", payload={"notify": ["olivia", "otto"]})
    md = render([approved], "ops-3", Style("zh", userids={"olivia": "wx_olivia"}))
    assert "通知：<@wx_olivia> otto" in md
    assert "For: olivia otto" in render([approved], "ops-3", Style("en", "text", userids={"olivia": "wx"}))


def test_a_text_robot_mentions_the_people_an_alert_is_for():
    robot = WeComRobot("ops", KEY, msgtype="text", mentioned_list=["@all"],
                       people={"olivia": ("wx_olivia", "13800001111"), "otto": ("", "")})
    body = robot.body("hello", ["olivia", "otto", "nobody"])["text"]
    assert body["mentioned_list"] == ["@all", "wx_olivia"] and body["mentioned_mobile_list"] == ["13800001111"]
    plain = robot.body("hello")["text"]  # addressed to nobody: the channel's own mentions only
    assert plain["mentioned_list"] == ["@all"] and "mentioned_mobile_list" not in plain


def test_people_in_the_config_are_checked():
    from control.domain import InvalidValue
    doc = {"channels": {"log": {"type": "log_file", "path": "a.log"}}}
    cfg = parse_config({**doc, "people": {"olivia": {"wecom_userid": "wx", "mobile": "13800001111"}}})
    assert cfg.people["olivia"].wecom_userid == "wx"
    with pytest.raises(InvalidValue) as e:
        parse_config({**doc, "people": {"olivia": {"mobile": "138-0000"}}})
    assert e.value.field == "people.olivia.mobile"
    with pytest.raises(InvalidValue) as e:
        parse_config({**doc, "people": {"olivia": {"wechat": "x"}}})
    assert e.value.field == "people.olivia.wechat"


def test_kill_switch_changes_are_alerts_on_their_own_conditions():
    on = kill_switch_alerts(KillSwitch(), KillSwitch(True, frozenset({"c1"})), "mia", "818 incident", T)
    assert [(e.kind, e.campaign_id, e.condition_key, e.severity) for e in on] == [
        (AlertKind.KILL_SWITCH_ON, None, "kill_switch:*", Severity.CRITICAL),
        (AlertKind.KILL_SWITCH_ON, "c1", "kill_switch:c1", Severity.CRITICAL)]
    off = kill_switch_alerts(KillSwitch(True, frozenset({"c1"})), KillSwitch(True), "mia", "c1 fixed", T)
    assert [(e.kind, e.condition_key) for e in off] == [(AlertKind.KILL_SWITCH_OFF, "kill_switch:c1")]
    assert kill_switch_alerts(KillSwitch(True), KillSwitch(True), "mia", "again", T) == []


# ---- against a store and the local robot ----------------------------------------------------------

def test_a_stale_storm_is_one_alert_and_fresh_data_one_announcement(engine, server, tmp_path, clock):
    config = robot_and_file(server.base_url, tmp_path)
    channels = channels_for(config)
    t = int(clock())
    campaigns = [f"c{i:02d}" for i in range(1, 41)]
    with engine.begin() as conn:
        for c in campaigns:
            for g in ("roi", "pacing", "inventory"):  # every guard sees the same feed
                enqueue_alert(conn, alert_for(guard_event(DataStale, c, t, g, age_s=900, action="hold"), 1, []),
                              t, config=config)
    drain(engine, channels, clock, until=t + 120, step=10)
    assert len(server.state.received) == 1 and "等 40 个计划" in server.state.received[0].content
    with engine.connect() as conn:
        assert board.open_alert_count(conn) == 1
        [row] = board.alerts_frame(conn, open_only=True).itertuples()
    assert row.channels == "file, ops" and row.campaigns.endswith("(40)") and row.repeats == 0
    t = int(clock())
    with engine.begin() as conn:
        for c in campaigns[:-1]:
            for g in ("roi", "pacing", "inventory"):
                enqueue_alert(conn, alert_for(guard_event(DataFresh, c, t, g), 2, []), t, config=config)
    drain(engine, channels, clock, until=t + 120, step=10)
    with engine.connect() as conn:
        assert len(server.state.received) == 1 and board.open_alert_count(conn) == 1  # c40 is still stale
    t = int(clock())
    with engine.begin() as conn:
        for g in ("roi", "pacing", "inventory"):
            enqueue_alert(conn, alert_for(guard_event(DataFresh, "c40", t, g), 3, []), t, config=config)
    drain(engine, channels, clock, until=t + 120, step=10)
    assert len(server.state.received) == 2 and "数据已恢复" in server.state.received[1].content
    with engine.connect() as conn:
        assert board.open_alert_count(conn) == 0


def test_failed_probations_and_action_changes_stay_on_the_open_trip(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path)
    channels = channels_for(config)

    def alert(event, event_id):
        with engine.begin() as conn:
            enqueue_alert(conn, alert_for(event, event_id, []), event.ts, config=config)

    def change(before, after, ts, factor=1.0):
        return guard_event(ActionChanged, "c01", ts, action_before=before, action_after=after, bid_factor=factor,
                           modes=(GuardMode.TRIPPED, GuardMode.TRIPPED))

    t = int(clock())
    alert(guard_event(GuardTripped, "c01", t, cause="pred_roi", detection_delay_s=0,
                      modes=(GuardMode.MODEL, GuardMode.TRIPPED)), 1)
    alert(change("pool", "bid_cut", t + 5, 0.7), 2)  # before the trip's message is sent: it says the new action
    drain(engine, channels, clock, until=t + 60, step=10)
    [first] = server.state.received
    assert "模型出价下调（出价 ×0.70）" in first.content and "ROI 守护熔断" in first.content
    t = int(clock())
    for k in range(3):  # failed probations, hours apart: counted on the trip, never a message
        alert(guard_event(ProbationFailed, "c01", t + 3600 * k, reason="breach", cooldown_s=1800,
                          modes=(GuardMode.PROBATION, GuardMode.TRIPPED)), 3 + k)
    alert(change("bid_cut", "pause", t + 10), 9)  # after it was sent: counted on the trip, which now says it
    drain(engine, channels, clock, until=t + 120, step=10)
    assert len(server.state.received) == 1
    with engine.connect() as conn:
        assert board.open_alert_count(conn) == 1
        [row] = board.alerts_frame(conn, open_only=True).itertuples()
    assert row.kind == "guard_tripped" and row.repeats == 4 and row.payload["action"] == "pause"


@pytest.fixture(name="env_config")
def env_config_fixture(server, tmp_path, monkeypatch):
    """The alerts config as the process reads it (BIDLENS_ALERTS_CONFIG): Control and the guard bridge."""
    path = tmp_path / "alerts.toml"
    path.write_text(f"""
[channels.ops]
type = "wecom"
key_env = "{KEY_ENV}"
base_url = "{server.base_url}"
timeout_s = 0.3
group_wait_s = 0
msgtype = "text"

[people.olivia]
mobile = "13800001111"

[[routes]]
kind = ["override_pending"]
channels = ["ops"]

[[routes]]
channels = ["ops"]
""", encoding="utf-8")
    monkeypatch.setenv("BIDLENS_ALERTS_CONFIG", str(path))
    monkeypatch.setenv("BIDLENS_DATA_DIR", str(tmp_path))
    return parse_config(tomllib.loads(path.read_text(encoding="utf-8")), str(tmp_path))


def test_reminders_of_a_channel_go_in_one_message(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path, group_wait_s=0, repeat_interval_s=3600)
    channels = channels_for(config)
    for k, c in enumerate(("c01", "c02", "c03")):  # three trips 10, 20, 30 minutes apart
        enqueue(engine, trip(c, int(clock())), int(clock()), config)
        drain(engine, channels, clock, until=clock() + 600 * (k + 1), step=60)
    sent = len(server.state.received)
    drain(engine, channels, clock, until=START + 3 * 3600, step=60)
    reminders = [m.content for m in server.state.received[sent:]]
    assert len(reminders) <= 3 and all(c in reminders[0] for c in ("c01", "c02", "c03"))
    with engine.connect() as conn:
        assert board.open_alert_count(conn) == 3  # reminders are no new alerts


def test_the_link_of_a_message_lands_on_an_alert_of_the_right_kind_and_campaign(engine, server, tmp_path, clock):
    config = robot_config(server.base_url, tmp_path)
    t = int(clock())
    with engine.begin() as conn:  # a restore of another campaign first, then two trips
        enqueue_alert(conn, trip("c09", t - 600), t - 600, config=config)
        enqueue_alert(conn, AlertEvent(AlertKind.GUARD_RESTORED, "info", t, campaign_id="c09", guard="roi"), t,
                      config=config)
        enqueue_alert(conn, trip("c01", t, spend_at_risk=500.0), t, config=config)
        enqueue_alert(conn, trip("c02", t, spend_at_risk=9000.0), t, config=config)
    drain(engine, channels_for(config), clock, until=t + 60, step=10)
    last = server.state.received[-1].content
    with engine.connect() as conn:
        target = board.alerts_frame(conn).set_index("alert_id").loc[int(LINK.search(last).group(1))]
    assert (target.kind, target.campaign_id) == ("guard_tripped", "c02")


def test_the_panel_lists_an_alert_once_with_its_channels(engine, server, tmp_path, clock):
    config = robot_and_file(server.base_url, tmp_path)
    enqueue(engine, trip("c01", int(clock())), int(clock()), config)
    enqueue(engine, trip("c02", int(clock())), int(clock()), config)
    drain(engine, channels_for(config), clock, until=clock() + 60, step=10)
    with engine.connect() as conn:
        frame = board.alerts_frame(conn)
    assert len(frame) == 2 and set(frame["channels"]) == {"file, ops"}
    assert set(frame["delivery"]) == {"file: delivered · ops: delivered"} and set(frame["status"]) == {"delivered"}


def test_kill_switch_and_override_steps_alert_and_tell_the_proposer(tmp_path, server, env_config):
    from app.wiring import open_control  # the wiring gives Control its alert sink
    from control.config import load_settings
    engine = make_store(tmp_path / "b.db")
    control = Control(engine, ManualClock(T0), Settings(), alert_sink=enqueue_alert)
    assert open_control(load_settings()).alert_sink is enqueue_alert
    manager, operator = User("mia", "Mia", Role.MANAGER), User("olivia", "Olivia", Role.OPERATOR)
    add_users(engine, manager, operator)
    control.set_kill_switch(manager, True, "818 incident")
    control.set_kill_switch(manager, False, "over")
    proposed = control.propose_override(operator, campaign_id="c1", audience_package=None, field=OverrideField.BUDGET,
                                        value=5000.0, reason="slow down", expires_ts=T0 + 3600)
    with engine.connect() as conn:
        assert board.open_alert_count(conn) == 1  # the kill switch is off again; the proposal waits
        [pending] = board.alerts_frame(conn, open_only=True).itertuples()
    assert pending.kind == "override_pending" and pending.campaign_id == "c1"
    control.approve_override(manager, proposed.override_id, proposed.version)
    with engine.connect() as conn:
        kinds = [a.kind.value for a in reversed(list_alerts(conn))]
        notices = board.notices_for(conn, "olivia", since_ts=T0)
        assert board.open_alert_count(conn) == 0
    assert kinds == ["kill_switch_on", "kill_switch_off", "override_pending", "override_approved"]
    assert list(notices["kind"]) == ["override_approved"] and "mia 已批准" in notices.iloc[0].payload["detail"]["zh"]
    deliver_due(engine, channels_for(env_config), ManualClock(T0 + 60), np.random.default_rng(1))
    told = [r for r in server.state.received if "人工干预已批准" in r.content]
    assert told and told[0].body["text"]["mentioned_mobile_list"] == ["13800001111"]


def test_an_override_that_expires_tells_its_proposer(tmp_path, env_config):
    engine = make_store(tmp_path / "b.db")
    clock = ManualClock(T0)
    control = Control(engine, clock, Settings(), alert_sink=enqueue_alert)
    add_users(engine, User("olivia", "Olivia", Role.OPERATOR))
    proposed = control.propose_override(User("olivia", "Olivia", Role.OPERATOR), campaign_id="c1",
                                        audience_package="pets", field=OverrideField.BID, value=1.0,
                                        reason="test", expires_ts=T0 + 600)
    clock.now_ts = T0 + 601
    assert [o.override_id for o in control.expire_overrides()] == [proposed.override_id]
    with engine.connect() as conn:
        [notice] = board.notices_for(conn, "olivia", since_ts=T0).itertuples()
        assert notice.kind == "override_expired" and board.open_alert_count(conn) == 0


def test_the_worker_stops_at_the_end_of_the_day_and_says_so_once(tmp_path, env_config):
    engine = make_store(tmp_path / "b.db")
    clock = ManualClock(T0)
    control = Control(engine, clock, Settings(), alert_sink=enqueue_alert)
    control.start_promotion_day(None, "test day", ends_ts=T0 + 60 * 10)
    w = GuardWorker(engine, clock, SETTINGS, expire_overrides=control.expire_overrides,
                    alert_sink=enqueue_guard_alert, day_over_sink=enqueue_day_over_alert)
    events = play(engine, clock, 9, 1.5, w=w)  # c1 trips within the day
    assert [e.kind for e in events] == ["tripped"]
    after = play(engine, clock, 20, 1.0, w=w, start=9)  # the clock runs on past the end; no more evaluation
    assert after == []
    reports = [w.tick(), w.tick()]
    assert all(r.day_over == T0 + 600 and r.campaigns == 0 for r in reports)
    with engine.connect() as conn:
        day_over = [a for a in list_alerts(conn) if a.kind is AlertKind.DAY_OVER]
        audit = [e.action for e in repo.load_audit(conn, entity="guard")]
        trips = conn.execute(select(s.guard_trips)).all()
        config = parse_config({"channels": {"log": {"type": "log_file", "path": "x.log"}}}, str(tmp_path))
        from guards.alerts.outbox import enqueue_reminders
        assert enqueue_reminders(conn, config, T0 + 99 * 3600) == ()  # the day is over: no reminders
    assert len(day_over) == 1 and day_over[0].payload["trips"] == 1 and day_over[0].payload["held"] == 1
    assert audit.count("guard.day_over") == 1 and len(trips) == 1


@pytest.mark.slow
def test_the_demo_day_meets_the_targets(capsys):
    """`bidlens alerts demo-day`: the demo's day (its first 90 minutes: the incident and most of its trips, a
    start 15 minutes late) played through the worker and the outbox, and half an hour past its end
    (docs/ALERTS.md, "The demo day's alerts")."""
    from cli.main import main
    from tests.sim_support import _DATA_DIR  # the simulator tests' trained models
    assert main(["alerts", "demo-day", "--minutes", "90", "--after-minutes", "30", "--dir", _DATA_DIR, "--json"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert c["trips"] >= 20 and c["messages"] <= 2 * c["trips"]
    assert c["open_alerts"] <= c["open_conditions"] and c["open_alerts_after"] <= c["open_conditions_after"]
    assert c["stale_alerts"] <= 2  # the late start: one stale data alert for every campaign, one fresh again
    assert c["trips_after"] == 0 and c["messages_after"] == 1  # the day over, said once
    assert c["first_trip_link"].get("kind") == "guard_tripped" and c["panel_rows"] == c["alert_events"]
