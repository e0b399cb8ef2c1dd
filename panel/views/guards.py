"""Guards (守护): kill switch and manual trip behind a confirmation, guard states and history,
the manual rule pool, the trip ledger, the alert outbox and response times."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import board
from control.permissions import Action
from panel.ui import Ctx, attempt, fmt_num, fmt_ts
from panel.views.alerts import severity_name
from panel.views.live import Blank, hold_text
from panel.views.stress import scenario_name


def render(ctx: Ctx) -> None:
    st.header(ctx.t("page.guards"))
    _kill_switch(ctx)
    pending = st.session_state.get("confirm")
    if pending:
        _confirm_dialog(ctx, pending)
    tabs = st.tabs([ctx.t("gd.tab_states"), ctx.t("gd.tab_pool"), ctx.t("gd.tab_trips"), ctx.t("gd.tab_alerts"),
                    ctx.t("gd.tab_measures")])
    with tabs[0]:
        _states(ctx)
    with tabs[1]:
        _rule_pool(ctx)
    with tabs[2]:
        _trips(ctx)
    with tabs[3]:
        _alerts(ctx)
    with tabs[4]:
        _measures(ctx)


def _capture(ctx: Ctx, capture: float | None) -> str:
    return ctx.t("st.not_material") if capture is None else f"{capture:.1%}"


def _measures(ctx: Ctx) -> None:
    """The guard against the oracle (a perfect guard on the same day), as the newest stress runs and
    benchmarks measured it."""
    measures = ctx.room.guard_measures(ctx.user)
    st.caption(ctx.t("gd.measures_help"))
    if not measures.stress and not measures.bench:
        st.info(ctx.t("gd.measures_none"))
        return
    if measures.stress:
        st.markdown(f"**{ctx.t('gd.measures_stress')}**")
        st.dataframe(pd.DataFrame({
            ctx.t("st.scenario"): [scenario_name(ctx, m.scenario) for m in measures.stress],
            ctx.t("st.seed"): [m.seed for m in measures.stress],
            ctx.t("gd.loss_avoided"): [fmt_num(m.loss_avoided, 0) for m in measures.stress],
            ctx.t("st.oracle_loss_avoided"): [fmt_num(m.oracle_loss_avoided, 0) for m in measures.stress],
            ctx.t("st.oracle_capture"): [_capture(ctx, m.oracle_capture) for m in measures.stress],
            ctx.t("st.false_trips"): [m.false_trips for m in measures.stress],
            ctx.t("st.probation_failures"): [m.probation_failures for m in measures.stress],
            ctx.t("gd.measured_at"): [fmt_ts(m.written_ts) for m in measures.stress],
        }), hide_index=True, key="gd_measures_stress")
    if measures.bench:
        st.markdown(f"**{ctx.t('gd.measures_bench')}**")
        st.dataframe(pd.DataFrame({
            ctx.t("st.seed"): [m.seed for m in measures.bench],
            ctx.t("gd.bench_days"): [m.days for m in measures.bench],
            ctx.t("st.oracle_capture"): [_capture(ctx, m.oracle_capture) for m in measures.bench],
            ctx.t("gd.delay_median"): [fmt_num(m.delay_median_min, 0) for m in measures.bench],
            ctx.t("gd.delay_p90"): [fmt_num(m.delay_p90_min, 0) for m in measures.bench],
            ctx.t("gd.delay_ideal"): [fmt_num(m.ideal_median_min, 0) for m in measures.bench],
            ctx.t("gd.delay_ideal_p90"): [fmt_num(m.ideal_p90_min, 0) for m in measures.bench],
            ctx.t("gd.delay_ideal_below_floor_p90"): [fmt_num(m.ideal_below_floor_p90_min, 0)
                                                     for m in measures.bench],
            ctx.t("gd.false_per_100"): [fmt_num(m.false_trips_per_100, 2) for m in measures.bench],
            ctx.t("gd.false_predicted"): [fmt_num(m.predicted_false_trips_per_10000, 2) for m in measures.bench],
            ctx.t("gd.restores_below"): [m.restores_below for m in measures.bench],
            ctx.t("gd.failed_per_day"): [fmt_num(m.failed_probations_per_campaign_day, 3) for m in measures.bench],
            ctx.t("gd.measured_at"): [fmt_ts(m.written_ts) for m in measures.bench],
        }), hide_index=True, key="gd_measures_bench")


def _ask(kind: str, value: object, campaign_id: str | None) -> None:
    """Open the confirmation: kind "kill" (value: on/off) or "force" (value: pool / model / auto)."""
    st.session_state["confirm"] = {"kind": kind, "value": value, "campaign_id": campaign_id}
    st.rerun()


def _kill_switch(ctx: Ctx) -> None:
    kill = ctx.room.kill_switch(ctx.user)
    c1, c2 = st.columns([3, 1])
    if kill.global_on:
        c1.error(ctx.t("app.kill_on"))
    else:
        c1.success(ctx.t("app.kill_off"))
    if not ctx.may(Action.KILL_SWITCH):  # hidden from those who may not (the core refuses them too)
        return
    label = ctx.t("gd.kill_off") if kill.global_on else ctx.t("gd.kill_on")
    if c2.button(label, key="kill_global", type="primary"):
        _ask("kill", not kill.global_on, None)


def _forget_confirm() -> None:
    st.session_state.pop("confirm", None)


def _confirm_dialog(ctx: Ctx, pending: dict) -> None:
    """Kept open across reruns while pending, so what it asks survives until confirmed or cancelled."""

    @st.dialog(ctx.t("gd.confirm_title"), on_dismiss=_forget_confirm)
    def dialog() -> None:
        campaign, value = pending["campaign_id"], pending["value"]
        if pending["kind"] == "kill":
            st.markdown(ctx.t("gd.ask_global_on") if value else ctx.t("gd.ask_global_off"))
        else:
            st.markdown(ctx.t(f"gd.ask_force_{value}", campaign=campaign))
        reason = st.text_input(ctx.t("gd.reason"), key="confirm_reason")
        c1, c2 = st.columns(2)
        if c1.button(ctx.t("gd.confirm"), key="confirm_ok", type="primary"):
            _forget_confirm()
            if pending["kind"] == "kill":
                act = lambda: ctx.control.set_kill_switch(ctx.user, value, reason)  # noqa: E731
            else:
                act = lambda: ctx.room.guards.force(ctx.user, campaign, value, reason)  # noqa: E731
            attempt(ctx, act, ctx.t("gd.done"))
        if c2.button(ctx.t("gd.cancel"), key="confirm_cancel"):
            _forget_confirm()
            st.rerun()

    dialog()


def _guard_name(ctx: Ctx, guard: str) -> str:
    key = f"gd.th_guard_{guard}"
    return ctx.t(key) if ctx.has(key) else ctx.t("gd.guard")


def _states(ctx: Ctx) -> None:
    states = ctx.room.guard_states(ctx.user)
    campaigns = ctx.room.campaigns(ctx.user)
    if states.empty:
        st.caption(ctx.t("gd.no_states"))
    else:
        held = states["mode"] != "model"
        st.caption(ctx.t("gd.states_caption", n=int(held.sum()), total=len(states)))
        shown = states[held] if held.any() else states.head(0)
        st.dataframe(pd.DataFrame({
            ctx.t("col.campaign"): shown["campaign_id"],
            ctx.t("gd.guard_type"): shown["guard"].map(lambda g: _guard_name(ctx, g)),
            ctx.t("gd.mode"): shown["mode"].map(lambda m: ctx.t(f"guard.{m}")),
            ctx.t("col.why"): [hold_text(ctx, board.state_reason(g, doc or {}))
                               for g, doc in zip(shown["guard"], shown["state"], strict=True)],
            ctx.t("gd.updated"): shown["updated_ts"].map(fmt_ts),
        }), hide_index=True, key="gd_states_table",
            column_config={ctx.t("col.why"): st.column_config.TextColumn(width="large")})
    ids = sorted(campaigns)
    if not ids:
        return
    campaign_id = st.selectbox(ctx.t("ex.campaign"), ids, key="gd_campaign",
                               format_func=lambda c: f"{c} · {campaigns[c].name}")
    if ctx.may(Action.FORCE_GUARD):  # managers only; hidden from the rest (the core refuses them too)
        c1, c2, c3 = st.columns(3)
        for col, mode in zip((c1, c2, c3), ("pool", "model", "auto"), strict=True):
            if col.button(ctx.t(f"gd.force_{mode}"), key=f"gd_force_{mode}"):
                _ask("force", mode, campaign_id)
        st.caption(ctx.t("gd.trip_help"))
    mine = states[states["campaign_id"] == campaign_id]
    if len(mine):
        st.dataframe(pd.DataFrame({
            ctx.t("gd.guard_type"): mine["guard"].map(lambda g: _guard_name(ctx, g)),
            ctx.t("gd.mode"): mine["mode"].map(lambda m: ctx.t(f"guard.{m}")),
            ctx.t("col.why"): [hold_text(ctx, board.state_reason(g, doc or {})) if m != "model" else "—"
                               for g, doc, m in zip(mine["guard"], mine["state"], mine["mode"], strict=True)],
            ctx.t("gd.stale"): [ctx.t("gd.yes") if (doc or {}).get("stale") else ctx.t("gd.no")
                                for doc in mine["state"]],
            ctx.t("gd.trips_hour"): [len((doc or {}).get("trip_ts") or []) for doc in mine["state"]],
            ctx.t("gd.updated"): mine["updated_ts"].map(fmt_ts),
        }), hide_index=True, key="gd_campaign_states",
            column_config={ctx.t("col.why"): st.column_config.TextColumn(width="large")})
    _thresholds(ctx, campaign_id)
    history = ctx.room.guard_history(ctx.user, campaign_id)
    st.markdown(ctx.t("gd.history"))
    if history.empty:
        st.caption(ctx.t("gd.no_history"))
    else:
        st.dataframe(pd.DataFrame({
            ctx.t("gd.when"): history["ts"].map(fmt_ts),
            ctx.t("gd.guard_type"): history["guard"].map(lambda g: _guard_name(ctx, g)),
            ctx.t("gd.event"): history["kind"].map(lambda k: _event_name(ctx, k)),
            ctx.t("gd.detail"): [event_detail(ctx, p or {}) for p in history["payload"]],
        }), hide_index=True, key="gd_history",
            column_config={ctx.t("gd.detail"): st.column_config.TextColumn(width="large")})


def _event_name(ctx: Ctx, kind: str) -> str:
    key = f"event.{kind}"
    return ctx.t(key) if ctx.has(key) else ctx.t("event.other")


FIGURES = ("pred_roi", "calibrated_pred_roi", "realised_roi", "floor", "spend_pace", "inventory_level")


def event_detail(ctx: Ctx, payload: dict) -> str:
    """A guard event in words: the mode it moved between, its known figures, its reason (never the raw
    document)."""
    parts = []
    before, after = payload.get("mode_before"), payload.get("mode_after")
    if before and after and before != after:
        parts.append(ctx.t("gd.moved", before=ctx.t(f"guard.{before}"), after=ctx.t(f"guard.{after}")))
    cause = payload.get("cause")
    if cause:
        figures = Blank({k: fmt_num(v) for k, v in (payload.get("figures") or {}).items() if isinstance(v, (int, float))})
        parts.append(ctx.fill(f"cause.{cause}", figures) if ctx.has(f"cause.{cause}") else ctx.t("cause.other"))
    else:
        figures = payload.get("figures") or {}
        parts += [ctx.t("gd.figure", name=ctx.t(f"figure.{k}"), value=fmt_num(figures[k]))
                  for k in FIGURES if isinstance(figures.get(k), (int, float))]
    if payload.get("actor"):
        parts.append(ctx.t("gd.by", who=payload["actor"]))
    return ctx.t("gd.detail_sep").join(parts) or "—"


def _thresholds(ctx: Ctx, campaign_id: str) -> None:
    """The guards' thresholds (file, then managers' edits); managers edit them for all campaigns or this one."""
    st.markdown(ctx.t("gd.thresholds"))
    c1, c2 = st.columns(2)
    guard = c1.selectbox(ctx.t("gd.th_guard"), list(ctx.room.EDITABLE_THRESHOLDS), key="th_guard",
                         format_func=lambda g: ctx.t(f"gd.th_guard_{g}"))
    scope = c2.radio(ctx.t("gd.th_scope"), ["all", "campaign"], key="th_scope", horizontal=True,
                     format_func=lambda x: ctx.t(f"gd.th_scope_{x}", campaign=campaign_id))
    target = campaign_id if scope == "campaign" else None
    view = ctx.room.thresholds(ctx.user, target)
    shown = view["guards"][guard]
    st.dataframe(pd.DataFrame({
        ctx.t("gd.th_field"): [ctx.t(f"th.{name}") for name in shown],
        ctx.t("gd.th_value"): [f["value"] for f in shown.values()],
        ctx.t("gd.th_file"): [f["file"] for f in shown.values()],
        ctx.t("gd.th_source"): [ctx.t(f"gd.th_source_{f['source']}") for f in shown.values()],
    }), hide_index=True)
    if not ctx.may(Action.EDIT_GUARD_CONFIG):
        st.caption(ctx.t("gd.th_read_only"))
        return
    # The version this manager was shown: saving over someone else's later change is a conflict.
    # Inputs are keyed by scope and version, so another campaign or a newer version starts from its own values.
    seen = st.session_state.get("th_seen", view["version"])
    keys = tuple(f"th_{guard}_{target or '*'}_v{seen}_{name}" for name in shown)
    with st.form("th_form"):
        values = {}
        for key, (name, f) in zip(keys, shown.items(), strict=True):
            if isinstance(f["value"], int):
                values[name] = st.number_input(ctx.t(f"th.{name}"), value=f["value"], step=1, key=key)
            else:
                values[name] = st.number_input(ctx.t(f"th.{name}"), value=float(f["value"]), step=0.05,
                                               format="%.3f", key=key)
        reason = st.text_input(ctx.t("gd.reason"), key="th_reason")
        b1, b2 = st.columns(2)
        save = b1.form_submit_button(ctx.t("gd.th_save"), type="primary", key="th_save")
        reset = b2.form_submit_button(ctx.t("gd.th_reset", campaign=campaign_id), key="th_reset")
    st.session_state["th_seen"] = view["version"]
    if save:
        changed = {n: v for n, v in values.items() if v != shown[n]["value"]}
        attempt(ctx, lambda: ctx.room.set_thresholds(ctx.user, guard, target, changed, reason, seen),
                ctx.t("gd.th_saved"), forget=("th_reason",))
    if reset:
        attempt(ctx, lambda: ctx.room.guards.reset_thresholds(ctx.user, campaign_id, reason, guard, seen),
                ctx.t("gd.th_reset_done", campaign=campaign_id), forget=("th_reason",))


def _rule_pool(ctx: Ctx) -> None:
    versions, active = ctx.room.rule_pool_versions(ctx.user)
    if active:
        st.markdown(ctx.t("gd.pool_active", version=active.version, who=active.created_by,
                          ts=fmt_ts(active.created_ts)))
    else:
        st.warning(ctx.t("gd.pool_none"))
    draft = st.text_area(ctx.t("gd.pool_editor"), value=active.source if active else "", height=240,
                         key="pool_draft")
    c1, c2 = st.columns(2)
    if c1.button(ctx.t("gd.pool_validate"), key="pool_validate"):
        problems = ctx.room.check_rule_pool(ctx.user, draft)
        st.session_state["pool_problems"] = [(p.rule_id, p.field, p.value, p.reason) for p in problems]
    if c2.button(ctx.t("gd.pool_publish"), key="pool_publish", type="primary"):
        st.session_state.pop("pool_problems", None)
        attempt(ctx, lambda: ctx.room.publish_rule_pool(ctx.user, draft), ctx.t("gd.pool_published"))
    problems = st.session_state.get("pool_problems")
    if problems is not None:
        for p in problems:
            st.error(ctx.t("gd.pool_problem", rule=p[0], field=p[1], value=p[2], reason=p[3]))
        if not problems:
            st.success(ctx.t("gd.pool_ok"))
    if versions:
        st.dataframe(pd.DataFrame({
            ctx.t("gd.pool_version"): [f"v{v.version}" for v in reversed(versions)],
            ctx.t("ov.status"): [ctx.t(f"pool.{v.status}") for v in reversed(versions)],
            ctx.t("gd.pool_by"): [v.created_by for v in reversed(versions)],
            ctx.t("gd.when"): [fmt_ts(v.created_ts) for v in reversed(versions)],
            ctx.t("gd.pool_error"): [v.error or "—" for v in reversed(versions)],
        }), hide_index=True, key="gd_pool_versions")


def _trips(ctx: Ctx) -> None:
    trips = ctx.room.trip_ledger(ctx.user)
    per_breaker = ctx.room.breaker_ledger(ctx.user)
    if per_breaker:
        st.markdown(f"**{ctx.t('gd.per_breaker')}**")
        st.dataframe(pd.DataFrame({
            ctx.t("st.breaker"): [ctx.t(f"gd.th_guard_{r['guard']}") for r in per_breaker],
            ctx.t("st.interceptions"): [r["interceptions"] for r in per_breaker],
            ctx.t("st.restores"): [r["restored"] for r in per_breaker],
            ctx.t("gd.open"): [r["open"] for r in per_breaker],
            ctx.t("st.announced_again"): [r["announced_again"] for r in per_breaker],
            ctx.t("gd.loss_avoided"): [fmt_num(r["loss_avoided"], 0) for r in per_breaker],
            ctx.t("st.method"): [", ".join(ctx.t(f"gd.loss_method_{m}") for m in r["methods"])
                                 for r in per_breaker],
        }), hide_index=True)
    c1, c2, c3 = st.columns(3)
    c1.metric(ctx.t("gd.trips"), len(trips))
    c2.metric(ctx.t("gd.loss_avoided"), fmt_num(float(trips["loss_avoided"].fillna(0).sum()), 0))
    delay = pd.to_numeric(trips["detection_delay_s"], errors="coerce")
    c3.metric(ctx.t("gd.detect_delay"), fmt_num(float(delay.median()) / 60 if len(delay) else float("nan"), 1))
    if len(trips):
        st.dataframe(pd.DataFrame({
            ctx.t("col.campaign"): trips["campaign_id"],
            ctx.t("gd.guard_type"): trips["guard"].map(lambda g: _guard_name(ctx, g)),
            ctx.t("gd.tripped_at"): trips["tripped_ts"].map(fmt_ts),
            ctx.t("gd.restored_at"): trips["restored_ts"].map(lambda t: fmt_ts(t) if t == t and t is not None
                                                              else ctx.t("gd.still_tripped")),
            ctx.t("gd.roi_before"): trips["roi_before"].map(fmt_num),
            ctx.t("gd.roi_after"): trips["roi_after"].map(fmt_num),
            ctx.t("gd.loss_avoided"): trips["loss_avoided"].map(lambda v: fmt_num(v, 0)),
        }), hide_index=True, key="gd_trips")


def _alerts(ctx: Ctx) -> None:
    summary = ctx.room.outbox_summary(ctx.user)
    recent = summary.recent
    c = st.columns(3)
    for col, status in zip(c, ("pending", "delivered", "dead"), strict=True):
        col.metric(ctx.t(f"gd.outbox_{status}"), summary.counts[status])
    stats = summary.response_times
    st.markdown(ctx.t("gd.response_times"))
    if stats:
        st.dataframe(pd.DataFrame({
            ctx.t("gd.day"): [x.key for x in stats], ctx.t("gd.alerts_n"): [x.alerts for x in stats],
            ctx.t("gd.acked_n"): [x.acked for x in stats],
            ctx.t("gd.ack_median"): [fmt_num(None if x.ack_median_s is None else x.ack_median_s / 60, 1) for x in stats],
            ctx.t("gd.ack_p90"): [fmt_num(None if x.ack_p90_s is None else x.ack_p90_s / 60, 1) for x in stats],
        }), hide_index=True, key="gd_response_times")
    st.dataframe(pd.DataFrame({
        "#": recent["alert_id"],
        ctx.t("gd.alert_kind"): recent["kind"].map(lambda k: ctx.room.alert_title(k, ctx.lang)),
        ctx.t("gd.severity"): recent["severity"].map(lambda v: severity_name(ctx, v)),
        ctx.t("col.campaign"): recent["campaigns"].replace("", "—"),
        ctx.t("gd.channel"): recent["channels"],
        ctx.t("ov.status"): recent["status"].map(lambda v: ctx.t(f"gd.outbox_{v}")),
        ctx.t("gd.attempts"): recent["attempts"],
        ctx.t("gd.occurred"): recent["occurred_ts"].map(fmt_ts),
        ctx.t("gd.acked_by"): recent["acked_by"].fillna("—"),
        ctx.t("gd.acked_at"): recent["acked_ts"].map(fmt_ts),
        ctx.t("gd.last_error"): recent["last_error"].replace("", "—"),
    }), hide_index=True, key="gd_outbox")

