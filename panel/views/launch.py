"""Model launch (模型上线): the launch gate from the panel (docs/LAUNCH.md).

Every model version with its lifecycle status, gate verdict and calibration prior; a version's gate
report (verdict and reasons, stress arms side by side, calibration, objective check, drivers) and its
stored HTML page as an audited, stamped download; a gate run in the background; the four-eyes launch
(request, approve or reject, withdraw), rollback, retirement; the manager's thresholds and the admin's
switch. Buttons a role may not use are hidden, and the core refuses them anyway.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app.gate import GATE_SCENARIOS
from app.gate_report import charts
from control import launch as lc
from control.gate import Reason, reason_text
from control.permissions import Action
from panel.ui import Ctx, attempt, fmt_num, fmt_ts, fragment
from panel.views.stress import scenario_name

GATE_PHASES = ("stress", "calibration", "explanation", "done")
ARMS = ("version", "serving", "pool")
SHARES = (1.0, 0.5, 0.25, 0.1, 0.05)   # the rollout share a request may start with (1: all at once)
KINDS = {"lightgbm": "LightGBM", "xgboost": "XGBoost", "sklearn": "scikit-learn"}
THRESHOLD_STEPS = {"roi_margin": 0.05, "max_extra_campaigns_below_floor": 1, "max_profit_shortfall": 0.01,
                   "calibration_tolerance": 0.01, "calibration_min_orders": 10.0, "max_objective_share": 0.01}
THRESHOLDS = (*THRESHOLD_STEPS, "require_stress")
VERDICT_BOX = {"pass": st.success, "warn": st.warning, "fail": st.error}


def render(ctx: Ctx) -> None:
    st.header(ctx.t("page.launch"))
    _switch(ctx)
    models = ctx.room.models(ctx.user)
    launches = ctx.room.model_launches(ctx.user)
    if not models:
        st.info(ctx.t("la.no_models"))
    else:
        _versions(ctx, models)
    _requests(ctx, launches)
    _live(ctx, launches)
    if models:
        _version(ctx, models, launches)
    job = st.session_state.get("gate_job")
    if job is not None:
        _job(ctx, job)
    _thresholds(ctx)


def _verdict(ctx: Ctx, verdict) -> str:
    return "—" if verdict is None else ctx.t(f"la.verdict_{getattr(verdict, 'value', verdict)}")


def _prior(ctx: Ctx, prior: dict | None) -> str:
    return ctx.t("la.prior_none") if not prior else ctx.t("la.prior", k=f"{prior['k']:.3f}",
                                                         orders=fmt_num(prior["orders"], 0))


# --- the deployment's switch ----------------------------------------------------------------------

def _switch(ctx: Ctx) -> None:
    on = ctx.room.launch_gate_on(ctx.user)
    (st.info if on else st.warning)(ctx.t("la.gate_on" if on else "la.gate_off"))
    if not ctx.may(Action.SWITCH_LAUNCH_GATE):
        return
    with st.expander(ctx.t("la.switch_title")):
        reason = st.text_input(ctx.t("la.reason"), key="la_switch_reason")
        if st.button(ctx.t("la.switch_off" if on else "la.switch_on"), key="la_switch"):
            attempt(ctx, lambda: ctx.room.switch_launch_gate(ctx.user, not on, reason),
                    ctx.t("la.switched_off" if on else "la.switched_on"), forget=("la_switch_reason",))


# --- versions and launches ------------------------------------------------------------------------

def _versions(ctx: Ctx, models) -> None:
    st.subheader(ctx.t("la.versions"))
    st.dataframe(pd.DataFrame({
        ctx.t("la.col_version"): [r.model.model_version for r in models],
        ctx.t("la.col_kind"): [KINDS.get(r.kind, r.kind) for r in models],
        ctx.t("la.col_status"): [ctx.t(f"la.status_{r.model.status.value}") for r in models],
        ctx.t("la.col_since"): [fmt_ts(r.status_ts or r.created_ts) for r in models],
        ctx.t("la.col_verdict"): [_verdict(ctx, r.model.verdict) for r in models],
        ctx.t("la.col_report"): ["—" if r.model.gate_id is None else f"#{r.model.gate_id}" for r in models],
        ctx.t("la.col_prior"): [_prior(ctx, r.meta.get("calibration_prior")) for r in models],
    }), hide_index=True, key="la_versions")
    st.caption(ctx.t("la.versions_help"))


def _launch_line(ctx: Ctx, x: lc.Launch) -> str:
    return ctx.t("la.launch_line", id=x.launch_id, version=x.model_version, previous=x.previous_version or "—",
                 by=x.requested_by, at=fmt_ts(x.requested_ts), verdict=_verdict(ctx, x.verdict),
                 share=f"{x.rollout_share:.0%}", reason=x.reason)


def _requests(ctx: Ctx, launches: list[lc.Launch]) -> None:
    waiting = [x for x in launches if x.status is lc.LaunchStatus.REQUESTED]
    st.subheader(ctx.t("la.requests"))
    if not waiting:
        st.caption(ctx.t("la.no_requests"))
    for x in waiting:
        _request(ctx, x)


def _request(ctx: Ctx, x: lc.Launch) -> None:
    """A waiting request: a manager other than the requester approves or rejects it; the requester (or a
    manager) may withdraw it."""
    with st.container(border=True):
        st.markdown(_launch_line(ctx, x))
        own = x.requested_by == ctx.user.username
        if ctx.may(Action.APPROVE_LAUNCH) and not own:
            if x.verdict.value == "fail":
                st.error(ctx.t("la.fail_needs_reason"))
            comment = st.text_input(ctx.t("la.comment"), key=f"la_comment_{x.launch_id}")
            c1, c2 = st.columns(2)
            if c1.button(ctx.t("la.approve"), type="primary", key=f"la_approve_{x.launch_id}"):
                attempt(ctx, lambda: ctx.room.approve_launch(ctx.user, x.launch_id, x.version, comment),
                        ctx.t("la.approved", id=x.launch_id, version=x.model_version))
            if c2.button(ctx.t("la.reject"), key=f"la_reject_{x.launch_id}"):
                attempt(ctx, lambda: ctx.room.reject_launch(ctx.user, x.launch_id, x.version, comment),
                        ctx.t("la.rejected", id=x.launch_id))
        elif own:
            st.caption(ctx.t("la.own_request"))
        if (own or ctx.may(Action.APPROVE_LAUNCH)) and st.button(ctx.t("la.withdraw"),
                                                                 key=f"la_withdraw_{x.launch_id}"):
            attempt(ctx, lambda: ctx.room.withdraw_launch(ctx.user, x.launch_id, x.version),
                    ctx.t("la.withdrawn", id=x.launch_id))


def _live(ctx: Ctx, launches: list[lc.Launch]) -> None:
    live = next((x for x in launches if x.status is lc.LaunchStatus.LIVE), None)
    st.subheader(ctx.t("la.live"))
    if live is None:
        st.caption(ctx.t("la.no_live"))
    else:
        st.markdown(ctx.t("la.live_line", version=live.model_version, share=f"{live.share:.0%}",
                          by=live.reviewed_by or "—", at=fmt_ts(live.reviewed_ts), previous=live.previous_version or "—"))
        if live.review_comment:
            st.caption(ctx.t("la.review_comment", comment=live.review_comment))
        if ctx.may(Action.ROLLBACK_LAUNCH) and live.previous_version is not None:
            reason = st.text_input(ctx.t("la.rollback_reason"), key="la_rollback_reason")
            if st.button(ctx.t("la.rollback", previous=live.previous_version), key="la_rollback"):
                attempt(ctx, lambda: ctx.room.rollback_launch(ctx.user, reason, live.version),
                        ctx.t("la.rolled_back", version=live.model_version, previous=live.previous_version),
                        forget=("la_rollback_reason",))
    decided = [x for x in launches if x.status is not lc.LaunchStatus.REQUESTED]
    if decided:
        with st.expander(ctx.t("la.history")):
            st.dataframe(pd.DataFrame({
                "#": [x.launch_id for x in decided],
                ctx.t("la.col_version"): [x.model_version for x in decided],
                ctx.t("la.col_previous"): [x.previous_version or "—" for x in decided],
                ctx.t("la.col_status"): [ctx.t(f"la.launch_{x.status.value}") for x in decided],
                ctx.t("la.col_verdict"): [_verdict(ctx, x.verdict) for x in decided],
                ctx.t("la.col_requested_by"): [x.requested_by for x in decided],
                ctx.t("la.col_reviewed_by"): [x.reviewed_by or "—" for x in decided],
                ctx.t("la.col_reviewed"): [fmt_ts(x.reviewed_ts) for x in decided],
                ctx.t("la.col_reason"): [x.reason for x in decided],
                ctx.t("la.comment"): [x.review_comment or "—" for x in decided],
            }), hide_index=True, key="la_history")


# --- one version: its report and what may be done with it ----------------------------------------

def _version(ctx: Ctx, models, launches: list[lc.Launch]) -> None:
    st.subheader(ctx.t("la.version"))
    rows = {r.model.model_version: r for r in models}
    names = list(rows)
    gated = [n for n in names if rows[n].model.gate_id is not None]
    chosen = st.selectbox(ctx.t("la.col_version"), names, key="la_version",
                          index=names.index(gated[-1]) if gated else 0,
                          format_func=lambda n: f"{n} · {ctx.t(f'la.status_{rows[n].model.status.value}')}")
    row = rows[chosen]
    if row.model.gate_id is None:
        st.info(ctx.t("la.no_report"))
    else:
        _report(ctx, row.model.gate_id)
    _version_actions(ctx, row, launches)


def _version_actions(ctx: Ctx, row, launches: list[lc.Launch]) -> None:
    version, status = row.model.model_version, row.model.status
    if ctx.may(Action.RUN_GATE) and status is not lc.VersionStatus.RETIRED:
        with st.expander(ctx.t("la.run_title")):
            scenarios = st.multiselect(ctx.t("la.scenarios"), list(GATE_SCENARIOS), default=list(GATE_SCENARIOS),
                                       key="la_scenarios", format_func=lambda n: scenario_name(ctx, n))
            c1, c2 = st.columns(2)
            seeds = c1.number_input(ctx.t("la.seeds"), min_value=1, max_value=20, value=1, step=1, key="la_seeds")
            minutes = c2.number_input(ctx.t("st.minutes"), min_value=60, max_value=1440, value=1440, step=60,
                                      key="la_minutes")
            if st.button(ctx.t("la.run"), key="la_run_gate"):
                attempt(ctx, lambda: st.session_state.update(gate_job=ctx.room.start_gate(
                    ctx.user, version, scenarios=scenarios or list(GATE_SCENARIOS),
                    seeds=list(range(1, int(seeds) + 1)), minutes=int(minutes))), ctx.t("la.run_started"))
    waiting = any(x.model_version == version and x.status is lc.LaunchStatus.REQUESTED for x in launches)
    if ctx.may(Action.REQUEST_LAUNCH) and status in (lc.VersionStatus.GATED, lc.VersionStatus.APPROVED) \
            and not waiting:
        with st.container(border=True):
            st.markdown(f"**{ctx.t('la.request_title', version=version)}**")
            reason = st.text_input(ctx.t("la.reason"), key="la_request_reason")
            share = st.selectbox(ctx.t("la.rollout_share"), SHARES, key="la_request_share",
                                 format_func=lambda v: ctx.t("la.share_all") if v == 1.0 else f"{v:.0%}",
                                 help=ctx.t("la.rollout_help"))
            if st.button(ctx.t("la.request"), type="primary", key="la_request"):
                attempt(ctx, lambda: ctx.room.request_launch(ctx.user, version, reason, float(share)),
                        ctx.t("la.requested", version=version), forget=("la_request_reason",))
    if ctx.may(Action.RETIRE_MODEL) and status not in (lc.VersionStatus.SERVING, lc.VersionStatus.RETIRED):
        with st.expander(ctx.t("la.retire_title", version=version)):
            reason = st.text_input(ctx.t("la.reason"), key="la_retire_reason")
            if st.button(ctx.t("la.retire"), key="la_retire"):
                attempt(ctx, lambda: ctx.room.retire_model(ctx.user, version, reason),
                        ctx.t("la.retired", version=version), forget=("la_retire_reason",))


def _arm(ctx: Ctx, arm: str) -> str:
    return ctx.t(f"la.arm_{arm}") if arm in ARMS else arm


def _report(ctx: Ctx, gate_id: int) -> None:
    gate = ctx.room.gate_report(ctx.user, gate_id)
    report = gate.report
    verdict = gate.verdict.value
    VERDICT_BOX[verdict](ctx.t("la.verdict_line", id=gate.gate_id, verdict=_verdict(ctx, gate.verdict)))
    st.caption(ctx.t("la.report_meta", by=gate.created_by, at=fmt_ts(gate.created_ts), seconds=fmt_num(gate.seconds, 0),
                     serving=report.get("serving_version") or "—", minutes=report.get("minutes", "—"),
                     seeds=", ".join(str(s) for s in report.get("seeds", []))))
    for r in gate.reasons:
        st.markdown(f"- **{_verdict(ctx, r['level'])}** · {reason_text(Reason.from_json(r), ctx.lang)}")
    if not gate.reasons:
        st.markdown(ctx.t("la.no_reasons"))
    _stress(ctx, report)
    _calibration(ctx, report.get("calibration") or {})
    objective = report.get("objective")
    if objective:
        st.markdown(ctx.t("la.objective", share=f"{objective['share_below_floor']:.1%}",
                          spend=f"{objective['spend_share_below_floor']:.1%}", bids=f"{objective['bids']:,}"))
    else:
        st.markdown(ctx.t("la.objective_none"))
    st.markdown(_prior(ctx, report.get("prior")))
    _drivers(ctx, report.get("explanation") or {})
    if ctx.may(Action.EXPORT):  # made when clicked: checked, stamped with who and when, audited by the core
        c1, c2 = st.columns(2)
        name = f"bidlens-gate-{gate.model_version}-{gate.gate_id}-{ctx.user.username}"
        c1.download_button(ctx.t("la.download_html"),
                           lambda: ctx.room.export_gate_report(ctx.user, gate.gate_id, "html", ctx.lang),
                           file_name=f"{name}.html", mime="text/html", key="la_dl_html")
        c2.download_button(ctx.t("la.download_json"),
                           lambda: ctx.room.export_gate_report(ctx.user, gate.gate_id, "json", ctx.lang),
                           file_name=f"{name}.json", mime="application/json", key="la_dl_json")


def _stress(ctx: Ctx, report: dict) -> None:
    st.markdown(f"**{ctx.t('la.stress')}**")
    scenarios = report.get("scenarios") or []
    if report.get("stress_skipped"):
        st.warning(ctx.t("la.stress_skipped", why=report["stress_skipped"]))
    if not scenarios:
        st.caption(ctx.t("la.no_stress"))
        return
    rows = [(s, arm, d) for s in scenarios for arm, d in s["arms"].items()]
    st.dataframe(pd.DataFrame({
        ctx.t("st.scenario"): [scenario_name(ctx, s["scenario"]) for s, _, _ in rows],
        ctx.t("st.seed"): [s["seed"] for s, _, _ in rows],
        ctx.t("st.arm"): [_arm(ctx, arm) for _, arm, _ in rows],
        "ROI": [fmt_num(d["roi"]) for _, _, d in rows],
        ctx.t("la.floor"): [fmt_num(s["floor"]) for s, _, _ in rows],
        ctx.t("kpi.profit"): [fmt_num(d["profit"], 0) for _, _, d in rows],
        ctx.t("st.below_floor"): [d["campaigns_below_floor"] for _, _, d in rows],
    }), hide_index=True, key="la_arms")
    # The report's charts, scenarios by their name in the person's language.
    named = {**report, "scenarios": [{**s, "scenario": scenario_name(ctx, s["scenario"])} for s in scenarios]}
    drawn = charts(named, ctx.lang)
    if drawn:
        st.altair_chart(alt.vconcat(*drawn), key="la_charts")


def _calibration(ctx: Ctx, calibration: dict) -> None:
    st.markdown(f"**{ctx.t('la.calibration')}**")
    if calibration.get("k") is None:
        st.markdown(ctx.t("la.calibration_none"))
        return
    st.markdown(ctx.t("la.calibration_line", k=f"{calibration['k']:.3f}", low=f"{calibration['low']:.3f}",
                      high=f"{calibration['high']:.3f}", orders=fmt_num(calibration["orders"], 0)))
    by_campaign = calibration.get("by_campaign") or []
    if by_campaign:
        st.dataframe(pd.DataFrame({
            ctx.t("col.campaign"): [r.get("campaign_id", "—") for r in by_campaign],
            "k": [fmt_num(r.get("k"), 3) for r in by_campaign],
            ctx.t("la.interval"): [f"{fmt_num(r.get('low'), 3)}–{fmt_num(r.get('high'), 3)}" for r in by_campaign],
            ctx.t("la.orders"): [fmt_num(r.get("orders"), 0) for r in by_campaign],
        }), hide_index=True, key="la_calibration")


def _drivers(ctx: Ctx, explanation: dict) -> None:
    drivers = (explanation.get("importance") or [])[:5]
    if not drivers:
        return
    st.markdown(f"**{ctx.t('la.drivers')}**")
    label = "label_zh" if ctx.lang == "zh" else "label_en"
    st.dataframe(pd.DataFrame({
        ctx.t("la.feature"): [d.get(label) or d.get("feature", "—") for d in drivers],
        ctx.t("la.mean_abs"): [fmt_num(d.get("mean_abs"), 4) for d in drivers],
    }), hide_index=True, key="la_drivers")


# --- a gate run in the background ----------------------------------------------------------------

def _job(ctx: Ctx, job) -> None:
    @fragment(ctx, run_every=1.0 if job.running else None)
    def progress() -> None:
        phase = "failed" if job.error else job.phase
        text = ctx.t(f"la.phase_{phase}", version=job.model_version) if phase in (*GATE_PHASES, "failed") \
            else ctx.t("la.phase_stress", version=job.model_version)
        st.progress(min(1.0, job.progress), text=text)
        if job.error:
            st.error(ctx.t("la.run_failed", detail=job.error))
        elif job.gate is not None:
            st.success(ctx.t("la.run_done", id=job.gate.gate_id, version=job.model_version,
                             verdict=_verdict(ctx, job.gate.verdict)))
        if not job.running and st.session_state.get("gate_shown") != id(job):
            st.session_state["gate_shown"] = id(job)
            st.rerun(scope="app")

    progress()


# --- the manager's thresholds ---------------------------------------------------------------------

def _thresholds(ctx: Ctx) -> None:
    thresholds, version = ctx.room.gate_thresholds(ctx.user)
    values = thresholds.as_json()
    with st.expander(ctx.t("la.thresholds")):
        st.dataframe(pd.DataFrame({
            ctx.t("la.threshold"): [ctx.t(f"la.th_{k}") for k in THRESHOLDS],
            ctx.t("la.value"): [(ctx.t("la.yes") if values[k] else ctx.t("la.no")) if isinstance(values[k], bool)
                                else f"{values[k]:g}" for k in THRESHOLDS],
        }), hide_index=True, key="la_thresholds")
        if not ctx.may(Action.SET_GATE_THRESHOLDS):
            return
        with st.form("la_thresholds_form"):
            edited = {}
            for key, step in THRESHOLD_STEPS.items():
                whole = isinstance(step, int)
                edited[key] = st.number_input(ctx.t(f"la.th_{key}"), value=int(values[key]) if whole
                                              else float(values[key]), step=step, min_value=0 if whole else None,
                                              key=f"la_th_{key}")
            edited["require_stress"] = st.checkbox(ctx.t("la.th_require_stress"), value=values["require_stress"],
                                                   key="la_th_require_stress")
            reason = st.text_input(ctx.t("la.reason"), key="la_th_reason")
            submitted = st.form_submit_button(ctx.t("la.save_thresholds"))
        if submitted:
            changed = {k: v for k, v in edited.items() if v != values[k]}
            attempt(ctx, lambda: ctx.room.set_gate_thresholds(ctx.user, changed, reason, version),
                    ctx.t("la.thresholds_saved"))

