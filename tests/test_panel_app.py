"""The panel through Streamlit's AppTest on a real seeded SQLite store.

Every page renders for every role that may see it; what a role may not do is
refused by the core and the page says why; the override flow, four eyes, the
kill switch, the language switch, alert acknowledgement and rule pool
validation, end to end through the page and checked in the store.
"""

from __future__ import annotations

import pytest
from panel_support import Panel, data_words, seeded_control, untranslated

from app import board
from control.domain import DecidedBy, OverrideField, OverrideStatus, Role
from control.users import MAX_FAILED_LOGINS
from panel import i18n
from panel.ui import fmt_ts
from store import repo

ROLES_PAGES = {
    "operator": ["board", "explorer", "overrides", "guards", "review", "launch"],
    "engineer": ["board", "explorer", "guards", "stress", "review", "launch"],
    "manager": ["board", "explorer", "overrides", "guards", "audit", "stress", "review", "launch"],
    "admin": ["board", "explorer", "overrides", "guards", "audit", "stress", "review", "launch"],
}


@pytest.fixture
def store(tmp_path):
    return seeded_control(tmp_path)


def zh(key: str, **values) -> str:
    return i18n.translate("zh", key, **values)


def en(key: str, **values) -> str:
    return i18n.translate("en", key, **values)


def _page_header(panel: Panel) -> str:
    return panel.at.header[0].value


@pytest.mark.parametrize("role", sorted(ROLES_PAGES))
def test_each_role_sees_its_pages_and_each_renders(store, role):
    control, _, _ = store
    panel = Panel(control).login(role)
    assert _page_header(panel) == zh("page.board")
    for page in ROLES_PAGES[role]:
        panel.open(page)
        assert _page_header(panel) == zh(f"page.{page}"), page
    hidden = sorted(set(ROLES_PAGES["manager"]) - set(ROLES_PAGES[role]))
    for page in hidden:  # a page the role may not see says so (a link to it does not land silently elsewhere)
        panel.open(page)
        assert _page_header(panel) == zh(f"page.{page}")
        assert panel.at.warning[0].value == zh("app.not_allowed", page=zh(f"page.{page}"), role=zh(f"role.{role}"))
        assert not panel.at.dataframe and not panel.at.get("download_button")


def test_login_refuses_a_wrong_password_and_locks_after_repeated_failures(store):
    control, _, _ = store
    panel = Panel(control).run()
    panel.login("operator", "wrong-password")
    assert zh("login.refused") in panel.errors()
    for _ in range(MAX_FAILED_LOGINS - 1):
        panel.login("operator", "wrong-password")
    assert zh("login.refused") in panel.errors()
    panel.login("operator")  # the right password no longer opens a locked account, and it says no more
    assert panel.errors() == [zh("login.refused")]
    assert "user" not in panel.at.session_state


def test_idle_session_times_out(store):
    control, _, _ = store
    panel = Panel(control).login("operator")
    panel.wall.advance(control.settings.session_timeout_min * 60 - 5)
    panel.run()
    assert _page_header(panel) == zh("page.board")
    panel.wall.advance(control.settings.session_timeout_min * 60 + 1)
    panel.run()
    assert "user" not in panel.at.session_state
    assert zh("login.timeout") in panel.errors()


def test_language_switch_changes_every_label(store):
    control, _, _ = store
    panel = Panel(control).login("manager")
    assert zh("kpi.spend") in panel.texts()
    panel.at.radio(key="lang_choice").set_value("en")
    panel.run()
    assert _page_header(panel) == en("page.board")
    text = panel.texts()
    assert en("kpi.spend") in text and zh("kpi.spend") not in text
    assert "decided by: override" in text  # the seeded approved override, in words
    panel.open("guards")
    assert _page_header(panel) == en("page.guards")


def test_live_board_shows_kpis_from_the_store_and_who_decides(store):
    control, seeded, _ = store
    panel = Panel(control).login("operator")
    with control.engine.connect() as conn:
        spend = conn.exec_driver_sql("SELECT SUM(spend) FROM outcomes").scalar()
    metrics = {m.label: m.value for m in panel.at.metric}
    assert metrics[zh("kpi.spend")] == f"{spend:,.0f}"
    assert metrics[zh("kpi.trips")] == str(len(seeded.tripped))
    assert metrics[zh("kpi.alerts")] == str(len(seeded.tripped))
    override_lines = [m.value for m in panel.at.markdown if zh("decided.override") in m.value]
    assert len(override_lines) == 1 and seeded.campaigns[-1] in override_lines[0]
    assert panel.at.toggle(key="refresh_paused").value is False
    panel.at.toggle(key="refresh_paused").set_value(True)
    panel.run()  # paused: the page still renders, the fragment just stops ticking


def _fill_bid(panel: Panel, campaign_id: str, value: str, reason: str = "competitor surge",
              hours: str = "4") -> None:
    panel.open("overrides")
    panel.at.selectbox(key="ov_campaign").set_value(campaign_id)
    panel.at.selectbox(key="ov_field").set_value(OverrideField.BID)
    panel.run()
    panel.at.text_input(key=f"ov_value_bid_{campaign_id}_all").input(value)
    panel.at.text_input(key="ov_hours").input(hours)
    panel.at.text_input(key="ov_reason").input(reason)
    panel.run()


def _propose_bid(panel: Panel, campaign_id: str, value: float, reason: str = "competitor surge") -> None:
    _fill_bid(panel, campaign_id, str(value), reason)
    panel.click("ov_submit")


def _proposal_by(control, username: str, campaign_id: str) -> tuple[Panel, object]:
    """`username` proposes the model's own bid for the campaign; the panel and the stored proposal."""
    panel = Panel(control).login(username)
    _propose_bid(panel, campaign_id, round(_model_bid(control, campaign_id), 3))
    [proposal] = control.overrides([OverrideStatus.PROPOSED])
    return panel, proposal


def _model_bid(control, campaign_id: str) -> float:
    with control.engine.connect() as conn:
        return control.latest_model_bid(conn, repo.OverrideScope(campaign_id))


def test_override_flow_operator_proposes_another_manager_approves_board_shows_override(store):
    control, seeded, clock = store
    target = seeded.campaigns[1]
    value = round(_model_bid(control, target) * 1.5, 3)
    panel = Panel(control).login("operator")
    _propose_bid(panel, target, value)
    assert zh("ov.proposed") in panel.texts()
    [proposal] = control.overrides([OverrideStatus.PROPOSED])
    assert (proposal.scope.campaign_id, proposal.value, proposal.proposed_by) == (target, value, "operator")

    panel.logout().login("manager").open("overrides")
    assert f"#{proposal.override_id}" in panel.texts()
    panel.at.text_input(key=f"ov_comment_{proposal.override_id}").input("ok for the evening peak")
    panel.click(f"ov_approve_{proposal.override_id}")
    assert zh("ov.approved", id=proposal.override_id) in panel.texts()

    approved = repo.get_override(control.engine.connect(), proposal.override_id)
    assert approved.status is OverrideStatus.APPROVED and approved.reviewed_by == "manager"
    panel.open("board")
    lines = [m.value for m in panel.at.markdown if target in m.value and zh("decided.override") in m.value]
    assert lines and "operator → manager" in lines[0]
    with control.engine.connect() as conn:
        newest = board.latest_bucket(conn)
        slots = board.bucket_slots(conn, newest)
    policy = board.served_policy(slots, control.overrides([OverrideStatus.APPROVED]),
                                 {}, control.kill_switch(), clock())
    mine = policy[slots["campaign_id"].to_numpy() == target]
    assert (mine["decided_by"] == DecidedBy.OVERRIDE.value).all() and (mine["bid"] == value).all()


def test_an_invalid_proposal_is_named_in_the_users_language_and_cannot_be_submitted(store):
    control, seeded, _ = store
    target = seeded.campaigns[1]
    panel = Panel(control).login("operator")
    model_bid = _model_bid(control, target)
    cases = [  # (value, hours, the problem said on the page)
        (str(round(model_bid * 10, 3)), "4", zh("invalid.bid_above_multiple", multiple="3",
                                                model_bid=f"{model_bid:,.2f}", high=f"{model_bid * 3:,.2f}")),
        ("12abc", "4", zh("err.invalid", field=zh("fieldname.value"), value="12abc",
                          reason=zh("invalid.not_a_number"))),
        ("-5", "4", zh("invalid.bid_below_min", minimum="0.01")),
        ("1.5", "0", zh("err.invalid", field=zh("fieldname.hours"), value="0",
                        reason=zh("invalid.hours_range", minimum=1, maximum=168))),
        ("1.5", "-2", zh("invalid.hours_range", minimum=1, maximum=168)),
        ("1.5", "2.5", zh("invalid.not_whole_hours")),
    ]
    for value, hours, said in cases:
        _fill_bid(panel, target, value, hours=hours)
        assert any(said in e for e in panel.errors()), (value, hours, panel.errors())
        assert panel.at.button(key="ov_submit").disabled  # nothing typed is replaced; it cannot go
        assert panel.at.text_input(key=f"ov_value_bid_{target}_all").value == value  # what was typed stays
        assert not any(ch.isascii() and ch.isalpha() for e in panel.errors() for ch in e.replace(value, ""))
    assert control.overrides([OverrideStatus.PROPOSED]) == []
    _fill_bid(panel, target, "1.5", reason="")  # no reason yet: said calmly, still not submittable
    assert zh("ov.reason_needed") in panel.texts() and panel.at.button(key="ov_submit").disabled


def test_self_approval_is_refused_by_the_core_and_the_page_says_why(store):
    control, seeded, _ = store
    panel, proposal = _proposal_by(control, "manager", seeded.campaigns[2])
    panel.open("overrides").click(f"ov_approve_{proposal.override_id}")
    assert any(zh("err.four_eyes", detail="").strip() in e for e in panel.errors())
    assert control.overrides([OverrideStatus.PROPOSED]) == [proposal]


def test_operator_is_not_offered_approval_and_the_core_refuses_it(store):
    from control.permissions import PermissionDenied

    control, seeded, _ = store
    panel, proposal = _proposal_by(control, "operator2", seeded.campaigns[2])
    panel.logout().login("operator").open("overrides")
    keys = [b.key for b in panel.at.button]
    assert f"ov_approve_{proposal.override_id}" not in keys and f"ov_reject_{proposal.override_id}" not in keys
    assert f"ov_withdraw_{proposal.override_id}" not in keys  # not theirs to withdraw either
    operator = next(u for u in control.users() if u.username == "operator")
    with pytest.raises(PermissionDenied):  # hidden on the page, and still refused by the core
        control.approve_override(operator, proposal.override_id, proposal.version)
    assert control.overrides([OverrideStatus.PROPOSED]) == [proposal]


def test_a_change_by_someone_else_first_is_shown_as_a_conflict(store):
    control, seeded, _ = store
    _, proposal = _proposal_by(control, "operator", seeded.campaigns[3])
    manager = Panel(control).login("manager").open("overrides")  # sees version 1
    other = next(u for u in control.users() if u.username == "manager2")
    control.reject_override(other, proposal.override_id, proposal.version, "not now")
    manager.click(f"ov_approve_{proposal.override_id}")
    assert any(zh("err.conflict", detail="").strip() in e for e in manager.errors())
    assert repo.get_override(control.engine.connect(), proposal.override_id).status is OverrideStatus.REJECTED


def _kill_switch(panel: Panel, reason: str) -> None:
    panel.open("guards").click("kill_global")
    panel.at.text_input(key="confirm_reason").input(reason)
    panel.click("confirm_ok")


def test_kill_switch_needs_a_manager_and_a_reason_and_is_audited(store):
    from control.permissions import PermissionDenied

    control, _, _ = store
    operator = Panel(control).login("operator").open("guards")
    assert "kill_global" not in [b.key for b in operator.at.button]  # not offered to whom it is refused
    with pytest.raises(PermissionDenied):
        control.set_kill_switch(next(u for u in control.users() if u.username == "operator"), True, "ROI collapsing")
    assert control.kill_switch().global_on is False

    manager = Panel(control).login("manager")
    _kill_switch(manager, "   ")
    assert any("reason" in e for e in manager.errors())
    assert control.kill_switch().global_on is False

    _kill_switch(manager, "818 incident: ROI 1.8")
    assert control.kill_switch().global_on is True
    assert zh("app.kill_on") in manager.texts()
    with control.engine.connect() as conn:
        last = repo.load_audit(conn)[-1]
    assert (last.actor, last.action, last.after["reason"]) == ("manager", "kill_switch.set", "818 incident: ROI 1.8")
    manager.open("board")
    metrics = [m.value for m in manager.at.markdown if zh("decided.override") in m.value]
    assert metrics  # an override still outranks the kill switch


def _force(panel: Panel, campaign_id: str, mode: str, reason: str) -> None:
    panel.open("guards")
    panel.at.selectbox(key="gd_campaign").set_value(campaign_id)
    panel.run().click(f"gd_force_{mode}")
    panel.at.text_input(key="confirm_reason").input(reason)
    panel.click("confirm_ok")


def _modes(control, campaign_id: str) -> str:
    with control.engine.connect() as conn:
        state = repo.load_guard_states(conn).get(campaign_id)
    return state.mode.value if state else "model"


def test_forcing_a_guard_goes_through_the_confirmation_and_needs_a_manager(store):
    control, seeded, _ = store
    target = seeded.campaigns[4]
    for role in ("operator", "engineer"):  # not offered; the core refuses them all the same
        panel = Panel(control).login(role).open("guards")
        assert not {"gd_force_pool", "gd_force_model", "gd_force_auto", "kill_global"} & \
            {b.key for b in panel.at.button}
    from control.permissions import PermissionDenied
    with pytest.raises(PermissionDenied):
        control_room = Panel(control).control
        from app.wiring import guard_service
        guard_service(control_room).force(next(u for u in control.users() if u.username == "engineer"), target,
                                          "pool", "stock-out")
    assert _modes(control, target) == "model"

    panel = Panel(control).login("manager").open("guards")
    panel.at.selectbox(key="gd_campaign").set_value(target)
    panel.run().click("gd_force_pool")
    panel.click("confirm_cancel")
    assert _modes(control, target) == "model"
    _force(panel, target, "pool", "stock-out")
    assert _modes(control, target) == "forced_pool"
    panel.open("board")
    row = [m.value for m in panel.at.markdown if target in m.value]
    assert not row  # forced to the pool: not an override line
    with control.engine.connect() as conn:
        view = board.build_board(conn, repo.load_campaigns(conn), board.bucket_slots(conn, seeded.last_bucket),
                                 seeded.last_bucket, control.clock())
    assert view.campaigns.set_index("campaign_id").loc[target, "decided_by"] == DecidedBy.RULE_POOL.value
    _force(panel, target, "auto", "back to normal")
    assert _modes(control, target) == "model"


def test_acknowledging_an_alert_records_who_and_when(store):
    control, seeded, clock = store
    panel = Panel(control).login("operator")
    first = seeded.alert_ids[0]
    panel.click(f"board_ack_{first}")
    assert zh("board.acked", id=first) in panel.texts()
    with control.engine.connect() as conn:
        row = board.alerts_frame(conn).set_index("alert_id").loc[first]
    assert (row["acked_by"], row["acked_ts"]) == ("operator", clock())
    assert f"board_ack_{first}" not in [b.key for b in panel.at.button]



def test_the_wecom_link_opens_its_alert_after_login_and_acknowledges_it(store):
    control, seeded, clock = store
    first = seeded.alert_ids[0]
    panel = Panel(control)
    panel.at.query_params["alert"] = str(first)  # http://panel/alerts?alert=ID, as the robot's message links
    panel.run().login("operator")
    assert zh("al.focus", id=first) in panel.texts()
    with control.engine.connect() as conn:
        alert = board.alerts_frame(conn).set_index("alert_id").loc[first]
    shown = "\n".join(t.value for t in panel.at.text)
    assert "ROI 守护熔断" in shown and alert["campaign_id"] in shown  # the message as WeCom showed it
    panel.click("focus_ack")
    assert zh("board.acked", id=first) in panel.texts()
    with control.engine.connect() as conn:
        assert board.alerts_frame(conn).set_index("alert_id").loc[first, "acked_by"] == "operator"
    assert "focus_ack" not in [b.key for b in panel.at.button]
    panel.click("focus_explain")
    assert panel.at.selectbox(key="ex_campaign").value == alert["campaign_id"]


def test_dead_alerts_are_listed_with_their_error_and_can_be_resent(store):
    from sqlalchemy import update

    from store import schema

    control, seeded, _ = store
    dead = seeded.alert_ids[-1]
    with control.engine.begin() as conn:
        conn.execute(update(schema.alerts).where(schema.alerts.c.alert_id == dead)
                     .values(status="dead", last_error="errcode 93000: invalid webhook url"))
    panel = Panel(control).login("operator").open("alerts")
    assert "errcode 93000" in " ".join(panel.errors())
    panel.click("resend_dead")
    assert zh("al.resent", n=1) in panel.texts()
    with control.engine.connect() as conn:
        assert board.alerts_frame(conn).set_index("alert_id").loc[dead, "status"] == "pending"
        assert repo.load_audit(conn)[-1].action == "alert.requeue"


BAD_POOL = ('[[rules]]\nrule_id = "base"\naction = "multiplier"\nvalue = 0.8\n\n'
            '[[rules]]\nrule_id = "crazy"\naction = "fixed_bid"\nvalue = 900.0\ncampaign_id = "nope"\n')
GOOD_POOL = '[[rules]]\nrule_id = "base"\naction = "multiplier"\nvalue = 0.7\n'


def test_rule_pool_validation_errors_name_the_rule_and_the_field(store):
    control, _, _ = store
    panel = Panel(control).login("engineer").open("guards")
    panel.at.text_area(key="pool_draft").input(BAD_POOL)
    panel.click("pool_validate")
    errors = " ".join(panel.errors())
    assert "crazy" in errors and "value" in errors and "campaign_id" in errors
    panel.at.text_area(key="pool_draft").input('[[rules]]\nrule_id = "x"\naction = "fixed_bid"\nhour_from = 30\n')
    panel.click("pool_validate")
    assert any("rules[0]" in e and "hour_from" in e for e in panel.errors())


def test_rule_pool_publishing_refuses_a_bad_pool_and_activates_a_good_one(store):
    control, _, _ = store
    from guards.pool_store import active_version

    operator = Panel(control).login("operator").open("guards")
    operator.at.text_area(key="pool_draft").input(GOOD_POOL)
    operator.click("pool_publish")
    assert zh("err.permission", role=zh("role.operator"), action=zh("action.edit_rule_pool")) in operator.errors()

    engineer = Panel(control).login("engineer").open("guards")
    engineer.at.text_area(key="pool_draft").input(BAD_POOL)
    engineer.click("pool_publish")
    assert any("crazy" in e for e in engineer.errors())
    with control.engine.connect() as conn:
        assert active_version(conn).version == 1
    engineer.at.text_area(key="pool_draft").input(GOOD_POOL)
    engineer.click("pool_publish")
    assert zh("gd.pool_published") in engineer.texts()
    with control.engine.connect() as conn:
        active = active_version(conn)
    assert (active.version, active.created_by, active.source) == (3, "engineer", GOOD_POOL)


def test_explorer_shows_the_stored_explanation_of_a_decision_and_a_comparison(store):
    control, seeded, _ = store
    panel = Panel(control).login("engineer")
    panel.at.session_state["explore_campaign"] = seeded.tripped[0]
    panel.open("explorer")
    assert panel.at.selectbox(key="ex_campaign").value == seeded.tripped[0]
    text = panel.texts()
    assert zh("ex.top_reasons") in text and "竞品出价" in text  # the seeded incident's driver
    assert {m.label for m in panel.at.metric} >= {zh("ex.served_bid"), zh("ex.model_bid")}
    served = float(next(m.value for m in panel.at.metric if m.label == zh("ex.served_bid")))  # 2 decimals
    steps = panel.at.table[0].value  # the steps as the page writes them: "+0.123"
    assert steps[zh("ex.delta")].astype(float).sum() == pytest.approx(served, abs=0.02)
    assert float(steps[zh("ex.running")].iloc[-1]) == pytest.approx(served, abs=0.005)
    assert any(zh("decided.rule_pool") in label for label in steps.index)  # the replacement is a step
    for view in ("compare", "global", "model"):
        panel.at.get("button_group")[0].set_value(view)
        panel.run()
    text = panel.texts()  # the model version in words, with the bid formula it serves with; no raw document
    assert zh("ex.formula", target="2", low="0.20", high="60.00") in text and not panel.at.json


def test_audit_page_shows_the_chain_and_offers_csv(store):
    control, _, _ = store
    panel = Panel(control).login("manager").open("audit")
    n = control.verify_audit().entries
    assert zh("au.chain_ok", n=n) in panel.texts()
    assert panel.at.get("download_button")
    admin = Panel(control).login("admin").open("audit")  # reads the trail; taking it out needs EXPORT
    assert zh("au.chain_ok", n=control.verify_audit().entries) in admin.texts() and not admin.at.get("download_button")


def test_an_operator_reads_a_decisions_reasons_in_words_not_its_contributions(store):
    control, seeded, _ = store
    panel = Panel(control).login("operator")
    panel.at.session_state["explore_campaign"] = seeded.tripped[0]
    panel.open("explorer")
    text = panel.texts()
    assert zh("ex.top_reasons") in text and "竞品出价" in text and zh("ex.words_only") in text
    assert "元:" not in text  # no yuan per reason
    assert not panel.at.dataframe and not panel.at.get("button_group")  # no steps, no other views


def test_the_review_page_shows_the_period_and_offers_the_export_to_those_who_may(store):
    control, _, _ = store
    manager = Panel(control).login("manager").open("review")
    assert zh("rv.breakers") in manager.texts() and len(manager.at.dataframe) == 9
    assert len(manager.at.get("download_button")) == 2
    operator = Panel(control).login("operator").open("review")
    assert zh("rv.breakers") in operator.texts() and not operator.at.get("download_button")


@pytest.mark.slow
def test_stress_test_runs_in_the_background_and_shows_the_report(store):
    control, _, _ = store
    panel = Panel(control).login("engineer").open("stress")
    panel.at.number_input(key="st_minutes").set_value(60)
    panel.click("st_run")
    job = panel.at.session_state["stress_job"]
    assert job.started_by == "engineer" and job.minutes == 60
    job.thread.join(timeout=300)
    assert job.phase == "done", job.error
    panel.run()
    assert set(job.report["arms"]) == {"model", "rule_pool", "guarded"}
    text = panel.texts()
    assert zh("st.report", scenario=zh("st.scenario_818"), seed=818) in text
    arms = panel.at.dataframe[0].value
    assert list(arms[zh("st.arm")]) == [zh("st.arm_model"), zh("st.arm_rule_pool"), zh("st.arm_guarded")]
    assert all("," in v for v in arms[zh("kpi.spend")])  # money with thousands separators
    data = data_words(control)
    assert not untranslated(panel.rendered(), "zh", data)  # the report, its tables and charts, in Chinese
    panel.at.radio(key="lang_choice").set_value("en")
    panel.run()
    assert not untranslated(panel.rendered(), "en", data)  # ... and in English


def test_starting_a_stress_test_is_refused_by_the_core_for_an_operator(store):
    from app.stress_jobs import start_stress
    from control.permissions import PermissionDenied
    from sim.scenario import load_scenario

    control, _, _ = store
    operator = next(u for u in control.users() if u.username == "operator")
    with pytest.raises(PermissionDenied):
        start_stress(operator, load_scenario("818"), seed=1, minutes=60, data_dir=control.settings.data_dir)


def test_a_demoted_or_deactivated_users_open_session_ends_and_does_nothing(store):
    """Issue 16: a session whose user was since demoted (or deactivated) still approved an override."""
    control, seeded, _ = store
    _, proposal = _proposal_by(control, "operator", seeded.campaigns[3])
    admin = next(u for u in control.users() if u.username == "admin")
    manager = Panel(control).login("manager").open("overrides")
    control.set_user_role(admin, "manager", Role.OPERATOR)
    manager.click(f"ov_approve_{proposal.override_id}")
    assert "user" not in manager.at.session_state and zh("login.changed") in manager.errors()
    assert control.overrides([OverrideStatus.PROPOSED]) == [proposal]

    manager2 = Panel(control).login("manager2").open("overrides")
    control.set_user_active(admin, "manager2", False)
    manager2.click(f"ov_approve_{proposal.override_id}")
    assert "user" not in manager2.at.session_state and zh("login.changed") in manager2.errors()
    assert control.overrides([OverrideStatus.PROPOSED]) == [proposal]


def _live_fragment(room, clock):
    """A page with one self-refreshing fragment, as the live board has, without the router around it."""
    import streamlit as st

    from panel.ui import Ctx, Session, fragment

    user = st.session_state.get("user")
    if user is None:
        st.write("login")
        return
    ctx = Ctx(room, user, "zh", Session(clock, 60))

    @fragment(ctx, run_every=5)
    def live() -> None:
        st.session_state["refreshes"] = st.session_state.get("refreshes", 0) + 1

    live()


def test_a_fragment_checks_the_session_itself_and_refreshing_is_not_activity(store):
    """Issue 16: the idle timeout was checked on full reruns only, so a timed-out live board kept
    refreshing (a fragment's rerun skips the router) and its alert feed acknowledged an alert."""
    from panel_support import Clock, room_for
    from streamlit.testing.v1 import AppTest

    control, _, _ = store
    wall = Clock(1_000_000.0)
    at = AppTest.from_function(_live_fragment, kwargs={"room": room_for(control), "clock": wall})
    at.session_state["user"] = next(u for u in control.users() if u.username == "operator")
    at.session_state["last_seen"] = wall()
    at.run()
    assert at.session_state["refreshes"] == 1
    wall.advance(40)
    at.run()  # the fragment refreshes: still within the timeout, but it does not count as activity
    assert at.session_state["refreshes"] == 2 and at.session_state["last_seen"] == 1_000_000.0
    wall.advance(21)
    at.run()
    assert "user" not in at.session_state and at.session_state["refreshes"] == 2
    assert at.session_state["login_error"] == zh("login.timeout")


def _board_rows(panel: Panel):
    return panel.at.dataframe[0].value.set_index(zh("col.campaign"))


def test_each_tripped_campaign_says_why_in_words_and_a_new_cause_still_reads(store):
    from sqlalchemy import update

    from store import schema

    control, seeded, _ = store
    panel = Panel(control).login("operator")
    why = _board_rows(panel).loc[seeded.tripped[0], zh("col.why")]
    assert why == zh("hold.line", guard=zh("gd.th_guard_roi"), mode=zh("guard.tripped"),
                     cause=zh("cause.pred_roi", calibrated_pred_roi="1.60", floor="2.00"),
                     ts=panel_ts(why), action=zh("hold_action.pool"))
    assert _board_rows(panel).loc[seeded.campaigns[1], zh("col.why")] == ""  # the model decides: nothing to say
    with control.engine.begin() as conn:  # a cause the catalogue does not know yet reads as a trip, not a code
        doc = conn.execute(schema.guard_states.select()).first().state
        conn.execute(update(schema.guard_states).values(state={**doc, "cause": "competitor_crash"}))
    panel.run()
    why = _board_rows(panel).loc[seeded.tripped[0], zh("col.why")]
    assert zh("cause.other") in why and "competitor_crash" not in why


def panel_ts(text: str) -> str:
    """The time a hold line names (HH:MM in its brackets)."""
    import re
    return re.search(r"（(\d\d:\d\d)）", text).group(1)


def test_the_override_form_starts_from_what_is_served_and_previews_served_to_proposed(store):
    control, seeded, _ = store
    target = seeded.tripped[0]  # the rule pool serves it, below the model's bid
    panel = Panel(control).login("operator").open("overrides")
    panel.at.selectbox(key="ov_campaign").set_value(target)
    panel.run()
    with control.engine.connect() as conn:
        newest = board.latest_bucket(conn)
        slots = board.bucket_slots(conn, newest)
    mine = slots[slots["campaign_id"] == target]
    served = board.served_policy(mine.reset_index(drop=True), control.overrides([OverrideStatus.APPROVED]),
                                 repo.load_guard_states(control.engine.connect()), control.kill_switch(), control.clock())
    expected = served.loc[served["audience_on"], "bid"].mean()
    value = panel.at.text_input(key=f"ov_value_bid_{target}_all").value
    assert float(value) == pytest.approx(expected, abs=0.005) and float(value) < mine["model_bid"].max()
    text = panel.texts()
    assert zh("ov.served_now", value=zh("ov.amount_bid", value=f"{expected:,.2f}"), who=zh("decided.rule_pool"),
              on=int(served["audience_on"].sum()), n=len(mine)) in text
    assert zh("ov.effect_line", old=zh("ov.amount_bid", value=f"{expected:,.2f}"),
              new=zh("ov.amount_bid", value=f"{float(value):,.2f}")) in text  # unchanged: served → the same
    _fill_bid(panel, target, f"{mine['model_bid'].max() * 2.9:.2f}")  # a high bid: its predicted ROI falls
    assert any(zh("ov.below_floor", roi="", floor="2.00")[:8] in w.value for w in panel.at.warning)


def test_the_queue_shows_what_is_served_who_decides_and_time_left_and_keeps_its_tab(store):
    control, seeded, clock = store
    _, proposal = _proposal_by(control, "operator", seeded.campaigns[5])
    manager = Panel(control).login("manager").open("overrides")
    queue_tab = zh("ov.tab_queue")
    manager.at.session_state["ov_tab"] = queue_tab
    manager.run()
    text = manager.texts()
    left = (proposal.expires_ts - clock()) // 60
    assert zh("ov.decides", who="operator", left=zh("time.left", h=left // 60, m=left % 60),
              until=fmt_ts(proposal.expires_ts)) in text  # who decides, and how long it can wait
    assert f"由{zh('decided.model')}决策" in text  # what is served now, and by whom
    assert zh("ov.effect") in text
    manager.click(f"ov_approve_{proposal.override_id}")
    assert zh("ov.approved", id=proposal.override_id) in manager.texts()
    assert manager.at.session_state["ov_tab"] == queue_tab  # the page kept the tab the manager acted in


def test_the_proposer_is_told_when_a_proposal_is_decided_or_expires(store):
    control, seeded, clock = store
    operator, approved = _proposal_by(control, "operator", seeded.campaigns[6])
    users = {u.username: u for u in control.users()}
    control.approve_override(users["manager"], approved.override_id, approved.version, "ok")
    lapsing = control.propose_override(users["operator"], campaign_id=seeded.campaigns[7], audience_package=None,
                                       field=OverrideField.BUDGET, value=25_000.0, reason="evening",
                                       expires_ts=clock() + 60)
    clock.advance(120)
    control.expire_overrides()
    operator.open("board")
    text = operator.texts()
    assert f"#{approved.override_id}" in text and "manager" in text
    assert zh("ov.outcome_expired", id=lapsing.override_id, campaign=seeded.campaigns[7], field=zh("field.budget"),
              value=zh("ov.amount_budget", value="25,000"), who="—", ts=fmt_ts(lapsing.expires_ts),
              comment="—") in text
    operator.click("ov_dismiss")
    assert f"#{lapsing.override_id}" not in operator.texts()  # told once, until they dismiss it


def test_the_guard_page_shows_the_guard_against_the_oracle_from_the_newest_measurements(store):
    """Issue 14: the guard page shows oracle capture, from the stress reports and benchmarks on disk."""
    import json
    from pathlib import Path

    control, _, _ = store
    reports = Path(control.settings.data_dir) / "reports"
    (reports / "stress-818-11").mkdir(parents=True)
    (reports / "stress-818-11" / "report.json").write_text(json.dumps({
        "scenario": "818", "seed": 11, "arms": {"model": {}, "guarded": {}}, "loss_avoided": 7_000_000.0,
        "oracle_loss_avoided": 7_500_000.0, "oracle_capture": 0.9333, "false_trips": 0, "probation_failures": 4}))
    (reports / "stress-normal-1").mkdir()
    (reports / "stress-normal-1" / "report.json").write_text(json.dumps({  # a healthy day: judged by its false trips
        "scenario": "normal", "seed": 1, "arms": {"guarded": {}}, "loss_avoided": 0.0, "oracle_loss_avoided": 0.0,
        "oracle_capture": None, "false_trips": 0, "probation_failures": 0}))
    (reports / "stress-broken-2").mkdir()
    (reports / "stress-broken-2" / "report.json").write_text("{not json")  # skipped, not shown half
    (reports / "guard-bench-1-60.json").write_text(json.dumps({
        "seed": 1, "days": 60, "oracle_capture": 0.84, "detection_delay_min": {
            "median": 52.0, "p90": 190.0, "ideal": {"median": 41.0, "p90": 60.0}, "ideal_below_floor": {"p90": 240.0}},
        "false_trips_per_100_healthy_campaign_days": 0.21, "restores_below_floor_plus_hysteresis": 0,
        "cusum_null_tail": {"false_trips_per_campaign_day": 0.000123},
        "failed_probations_per_campaign_day": 0.012}))
    page = Panel(control).login("operator").open("guards")
    frames = [d.value for d in page.at.dataframe]
    [stress] = [f for f in frames if zh("st.scenario") in f.columns and zh("st.oracle_capture") in f.columns]
    [bench] = [f for f in frames if zh("gd.delay_ideal") in f.columns]
    by_scenario = stress.set_index(zh("st.scenario"))[zh("st.oracle_capture")]
    assert by_scenario[zh("st.scenario_818")] == "93.3%" and by_scenario[zh("st.scenario_normal")] == zh("st.not_material")
    assert len(stress) == 2
    row = bench.iloc[0]
    assert (row[zh("st.oracle_capture")], row[zh("gd.delay_median")], row[zh("gd.delay_ideal")]) == ("84.0%", "52", "41")
    assert (row[zh("gd.delay_ideal_p90")], row[zh("gd.delay_ideal_below_floor_p90")]) == ("60", "240")
    assert row[zh("gd.false_predicted")] == "1.23"  # per 10,000 healthy campaign-days
