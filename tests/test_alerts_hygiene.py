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

import re

import pytest

from control.policy import KillSwitch
from guards.alerts import AlertEvent, AlertKind, Severity
from guards.alerts.config import parse_config
from guards.alerts.core import AlertRecord, OpenAlert, most_severe, plan_enqueue
from guards.alerts.notices import kill_switch_alerts
from guards.alerts.templates import Style, render
from guards.alerts.wecom import WeComRobot
from tests.alerts_support import KEY, START

T = START
HOUR = {"ops": 3600, "file": 3600}.__getitem__
LINK = re.compile(r"/alerts\?alert=(\d+)")


def record(i: int, kind=AlertKind.GUARD_TRIPPED, severity="critical", **kw) -> AlertRecord:
    base = dict(alert_id=i, event_key=f"e{i}", channel="ops", kind=kind, severity=severity,
                campaign_id=f"c{i:02d}", guard="roi", condition_key=f"roi:c{i:02d}", payload={},
                status="pending", occurred_ts=T, created_ts=T, next_attempt_ts=T)
    return AlertRecord(**{**base, **kw})


# ---- pure rules -----------------------------------------------------------------------------------

def test_a_failed_probation_folds_into_the_open_trip_and_never_messages():
    failed = AlertEvent(AlertKind.PROBATION_FAILED, "warning", T, campaign_id="c1", guard="roi")
    open_ = [OpenAlert("ops", 7, T - 9000, False), OpenAlert("file", 8, T - 9000, True)]
    plan = plan_enqueue(failed, ["ops", "file"], open_, HOUR, T)
    assert plan.insert == () and plan.suppressed == (("file", 8), ("ops", 7))  # even past the repeat interval
    assert plan_enqueue(failed, ["ops"], [], HOUR, T).insert == ("ops",)  # nothing open: it is news, not lost


def test_an_action_change_folds_into_an_unsent_trip_else_one_message_a_channel():
    changed = AlertEvent(AlertKind.ACTION_CHANGED, "warning", T, campaign_id="c1", guard="roi")
    waiting = [OpenAlert("ops", 7, T - 10, False, queued=True), OpenAlert("file", 8, T - 10, False)]
    plan = plan_enqueue(changed, ["ops", "file"], waiting, HOUR, T)
    assert plan.updated == (("ops", 7),) and plan.insert == ("file",) and not plan.resolve
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
