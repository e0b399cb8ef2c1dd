"""The launch page (模型上线) through Streamlit's AppTest on a real seeded SQLite store.

An engineer requests the launch of a gated version and cannot approve it; a manager approves it and the
version shows as serving; an operator sees the versions but no action; a failing verdict is not
approved without a written reason, and the refusal reads in the person's language; a manager cannot
approve their own request; rollback is one action; the report downloads through the audited export;
the page reads in the person's language for every role.
"""

from __future__ import annotations

import pytest
from launch_support import FAILING, gate_report, register
from panel_support import Panel, data_words, room_for, seeded_control, untranslated

from app.launch import GateJob
from control.gate import Reason, reason_text
from control.launch import LaunchStatus, VersionStatus
from control.permissions import PermissionDenied
from panel import i18n
from store import repo

ACTION_KEYS = ("la_request", "la_approve_", "la_reject_", "la_withdraw_", "la_rollback", "la_retire",
               "la_run_gate", "la_switch")


def zh(key: str, **values) -> str:
    return i18n.translate("zh", key, **values)


@pytest.fixture
def store(tmp_path):
    control, _, _ = seeded_control(tmp_path)
    register(control.engine, "roi-v2", "gmv-v3")
    room = room_for(control)
    users = {u.username: u for u in control.users()}
    room.launches.record_gate(users["engineer"], "roi-v2", gate_report("roi-v2", "pass",
                                                                       prior={"k": 0.97, "orders": 150.0}))
    room.launches.record_gate(users["engineer"], "gmv-v3", gate_report("gmv-v3", "fail", FAILING))
    return control, room, users


def status(room, user, version: str) -> VersionStatus:
    return next(r.model.status for r in room.models(user) if r.model.model_version == version)


def action_buttons(panel: Panel) -> list[str]:
    return [b.key for b in panel.at.button if b.key and b.key.startswith(ACTION_KEYS)]


def table(panel: Panel, column: str):
    """The page's table that has `column` (AppTest keeps no key for a dataframe)."""
    return next(d.value for d in panel.at.dataframe if column in d.value.columns)


def choose(panel: Panel, version: str) -> Panel:
    panel.at.selectbox(key="la_version").set_value(version)
    return panel.run()


def test_an_engineer_requests_a_manager_approves_and_the_version_serves(store):
    control, room, users = store
    panel = Panel(control).login("engineer").open("launch")
    assert panel.at.header[0].value == zh("page.launch")
    choose(panel, "roi-v2")
    assert zh("la.verdict_line", id=1, verdict=zh("la.verdict_pass")) in panel.texts()
    panel.at.text_input(key="la_request_reason").input("校准良好，申请上线")
    panel.click("la_request")
    assert zh("la.requested", version="roi-v2") in panel.texts()
    (launch,) = room.model_launches(users["engineer"])
    assert launch.status is LaunchStatus.REQUESTED and launch.requested_by == "engineer"
    # The requester may withdraw, never approve: no button, and the core refuses anyway.
    assert f"la_withdraw_{launch.launch_id}" in action_buttons(panel)
    assert not [k for k in action_buttons(panel) if k.startswith(("la_approve_", "la_reject_"))]
    with pytest.raises(PermissionDenied):
        room.approve_launch(users["engineer"], launch.launch_id, launch.version)

    manager = Panel(control).login("manager").open("launch")
    manager.click(f"la_approve_{launch.launch_id}")
    assert zh("la.approved", id=launch.launch_id, version="roi-v2") in manager.texts()
    assert status(room, users["manager"], "roi-v2") is VersionStatus.SERVING
    versions = table(manager, zh("la.col_prior"))
    row = versions[versions[zh("la.col_version")] == "roi-v2"].iloc[0]
    assert row[zh("la.col_status")] == zh("la.status_serving")
    assert row[zh("la.col_prior")] == zh("la.prior", k="0.970", orders="150")


def test_an_operator_sees_the_versions_and_no_action(store):
    control, room, users = store
    room.request_launch(users["engineer"], "roi-v2", "ready")
    panel = Panel(control).login("operator").open("launch")
    assert panel.at.header[0].value == zh("page.launch")
    statuses = set(table(panel, zh("la.col_prior"))[zh("la.col_status")])
    assert {zh("la.status_gated"), zh("la.status_registered")} <= statuses
    assert "#1" in panel.texts() and "ready" in panel.texts()  # the waiting request is listed
    assert action_buttons(panel) == []
    assert not panel.at.get("form_submit_button")  # the thresholds are shown, not editable
    assert len(table(panel, zh("la.threshold"))) == 7


def test_a_failing_verdict_is_not_approved_without_a_written_reason(store):
    control, room, users = store
    launch = room.request_launch(users["engineer"], "gmv-v3", "try it on 818")
    panel = Panel(control).login("manager").open("launch")
    choose(panel, "gmv-v3")
    for reason in FAILING:  # the verdict's reasons, in the person's language
        assert reason_text(Reason.from_json(reason), "zh") in panel.texts()
    assert zh("la.fail_needs_reason") in panel.errors()
    panel.click(f"la_approve_{launch.launch_id}")
    refusal = zh("err.refused_because", detail=zh("err.invalid_empty", field=zh("fieldname.comment"),
                                                  reason=zh("invalid.fail_needs_reason")))
    assert refusal in panel.errors()
    assert status(room, users["manager"], "gmv-v3") is VersionStatus.GATED
    panel.at.text_input(key=f"la_comment_{launch.launch_id}").input("大促前人工盯盘，先上线观察")
    panel.click(f"la_approve_{launch.launch_id}")
    assert status(room, users["manager"], "gmv-v3") is VersionStatus.SERVING
    with control.engine.connect() as conn:
        approval = [e for e in repo.load_audit(conn) if e.action == "launch.approve"][-1]
    assert approval.after["against_failing_gate"] is True


def test_a_manager_cannot_approve_their_own_request_and_rollback_is_one_action(store):
    control, room, users = store
    first = room.request_launch(users["engineer"], "roi-v2", "first")
    room.approve_launch(users["manager"], first.launch_id, first.version)
    own = room.request_launch(users["manager"], "gmv-v3", "mine", rollout_share=1.0)
    panel = Panel(control).login("manager").open("launch")
    assert zh("la.own_request") in panel.texts()
    assert f"la_approve_{own.launch_id}" not in action_buttons(panel)
    room.approve_launch(users["manager2"], own.launch_id, own.version, "看过报告，同意")
    assert status(room, users["manager"], "gmv-v3") is VersionStatus.SERVING

    engineer = Panel(control).login("engineer").open("launch")
    engineer.at.text_input(key="la_rollback_reason").input("ROI 跌破底线")
    engineer.click("la_rollback")
    assert zh("la.rolled_back", version="gmv-v3", previous="roi-v2") in engineer.texts()
    assert status(room, users["engineer"], "roi-v2") is VersionStatus.SERVING
    assert status(room, users["engineer"], "gmv-v3") is VersionStatus.GATED


def test_the_report_downloads_through_the_audited_export_and_a_gate_run_shows_its_end(store):
    control, room, users = store
    page = room.export_gate_report(users["engineer"], 1, "html", "zh").decode("utf-8")
    assert "roi-v2" in page and "导出人" in page
    with control.engine.connect() as conn:
        assert [e.action for e in repo.load_audit(conn)][-1] == "export.gate_report_html"
    with pytest.raises(PermissionDenied):
        room.export_gate_report(users["operator"], 1, "json", "zh")

    panel = Panel(control).login("engineer")
    gate = room.gate_report(users["engineer"], 1)
    panel.at.session_state["gate_job"] = GateJob("roi-v2", "engineer", phase="done", progress=1.0, gate=gate)
    panel.open("launch")
    assert zh("la.run_done", id=1, version="roi-v2", verdict=zh("la.verdict_pass")) in panel.texts()
    assert len(panel.at.get("download_button")) == 2  # EXPORT: the report's HTML page and its data


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("role", ["operator", "engineer", "manager", "admin"])
def test_the_page_reads_in_the_users_language_for_every_role(store, role, lang):
    control, room, users = store
    first = room.request_launch(users["engineer"], "roi-v2", "校准良好")
    room.approve_launch(users["manager"], first.launch_id, first.version, "同意")
    room.request_launch(users["engineer"], "gmv-v3", "大促前试运行")
    panel = Panel(control).login(role)
    if lang == "en":
        panel.at.radio(key="lang_choice").set_value("en")
        panel.run()
    panel.open("launch")
    texts = panel.rendered()
    choose(panel, "gmv-v3")  # the failing report, its reasons
    texts += panel.rendered()
    assert i18n.translate(lang, "la.versions") in texts
    assert not untranslated(texts, lang, data_words(control))
