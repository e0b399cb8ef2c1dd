"""Stress test (压力测试): replay a promotion (shipped scenario or an uploaded file) before launch,
in the background, and read the report: arms side by side, trips, loss avoided, charts."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app.stress_jobs import (
    VARIANTS,
    campaign_frame,
    chosen_scenario,
    hourly_frame,
    scenario_names,
    start_stress,
)
from control.domain import InvalidValue
from control.permissions import Action
from panel.ui import Ctx, attempt, fmt_num, fragment, invalid_text


def render(ctx: Ctx) -> None:
    st.header(ctx.t("page.stress"))
    c1, c2, c3, c4 = st.columns(4)
    source = c1.radio(ctx.t("st.source"), ("shipped", "upload"), key="st_source", horizontal=True,
                      format_func=lambda v: ctx.t(f"st.source_{v}"))
    names = scenario_names()
    if source == "shipped":
        name = c1.selectbox(ctx.t("st.scenario"), names, key="st_scenario",
                            index=names.index("818") if "818" in names else 0,
                            format_func=lambda n: scenario_name(ctx, n))
        upload = None
    else:
        upload = c1.file_uploader(ctx.t("st.upload"), type=["toml"], key="st_file")
    variant = c2.selectbox(ctx.t("st.variant"), VARIANTS, key="st_variant",
                           format_func=lambda v: ctx.t(f"st.variant_{v}"))
    seed = c3.number_input(ctx.t("st.seed"), min_value=0, value=818, step=1, key="st_seed")
    minutes = c4.number_input(ctx.t("st.minutes"), min_value=60, max_value=1440, value=1440, step=60,
                              key="st_minutes")
    if st.button(ctx.t("st.run"), type="primary", key="st_run"):
        scenario = None
        if source == "shipped" or upload is not None:
            try:
                scenario = chosen_scenario(name if source == "shipped" else None,
                                           (upload.name, upload.getvalue()) if upload is not None else None, variant)
            except InvalidValue as exc:
                st.error(ctx.t("st.bad_scenario", detail=invalid_text(ctx, exc)))
        if scenario is not None:
            attempt(ctx, lambda: st.session_state.update(stress_job=start_stress(
                ctx.user, scenario, seed=int(seed), minutes=int(minutes), data_dir=ctx.control.settings.data_dir)),
                    ctx.t("st.started"))
        elif source == "upload" and upload is None:
            st.error(ctx.t("st.no_file"))
    job = st.session_state.get("stress_job")
    if job is not None:
        _job(ctx, job)


def scenario_name(ctx: Ctx, name: str) -> str:
    key = f"st.scenario_{name}"
    return ctx.t(key) if ctx.has(key) else name  # an uploaded file's scenario keeps its own name


def _job(ctx: Ctx, job) -> None:
    @fragment(ctx, run_every=1.0 if job.running else None)
    def progress() -> None:
        st.progress(job.progress, text=ctx.t(f"st.phase_{job.phase}", scenario=scenario_name(ctx, job.scenario),
                                             seed=job.seed))
        if job.phase == "failed":
            st.error(ctx.t("st.failed", detail=job.error))
        if not job.running and st.session_state.get("stress_shown") != id(job):
            st.session_state["stress_shown"] = id(job)
            st.rerun(scope="app")

    progress()
    if job.report is not None:
        _report(ctx, job.report)


ARMS = ("model", "rule_pool", "guarded")
ARM_COLOURS = ("#d62728", "#1f77b4", "#2ca02c")  # by arm, whatever the language


def _arm(ctx: Ctx, arm: str) -> str:
    key = f"st.arm_{arm}"
    return ctx.t(key) if ctx.has(key) else arm


def _report(ctx: Ctx, report: dict) -> None:
    st.subheader(ctx.t("st.report", scenario=scenario_name(ctx, report["scenario"]), seed=report["seed"]))
    arms = report["arms"]
    st.dataframe(pd.DataFrame({
        ctx.t("st.arm"): [_arm(ctx, a) for a in arms],
        ctx.t("kpi.spend"): [fmt_num(d["spend"], 0) for d in arms.values()],
        ctx.t("kpi.gmv"): [fmt_num(d["gmv"], 0) for d in arms.values()],
        "ROI": [fmt_num(d["roi"]) for d in arms.values()],
        ctx.t("kpi.profit"): [fmt_num(d["profit"], 0) for d in arms.values()],
        ctx.t("st.below_floor"): [d.get("campaigns_below_floor", "—") for d in arms.values()],
    }), hide_index=True, key="st_arms")
    st.caption(ctx.t("st.arms_help"))
    trips = report.get("trips") or []
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(ctx.t("gd.trips"), sum(t.get("kind") == "trip" for t in trips), help=ctx.t("st.trips_help"))
    c2.metric(ctx.t("st.false_trips"), report.get("false_trips", 0), help=ctx.t("st.false_trips_help"))
    c3.metric(ctx.t("st.probation_failures"), report.get("probation_failures", 0),
              help=ctx.t("st.probation_failures_help"))
    loss = report.get("loss_avoided")
    c4.metric(ctx.t("gd.loss_avoided"), "—" if loss is None else fmt_num(loss, 0), help=ctx.t("st.loss_help"))
    if report.get("oracle_loss_avoided") is not None:
        capture = report["oracle_capture"]
        o1, o2 = st.columns(2)
        o1.metric(ctx.t("st.oracle_loss_avoided"), fmt_num(report["oracle_loss_avoided"], 0))
        o2.metric(ctx.t("st.oracle_capture"), ctx.t("st.not_material") if capture is None else f"{capture:.1%}")
        st.caption(ctx.t("st.oracle_help"))
    st.caption(ctx.t("st.probation_caption"))
    _charts(ctx, report)
    if trips:
        st.dataframe(pd.DataFrame({
            ctx.t("col.campaign"): [t.get("campaign", "—") for t in trips],
            ctx.t("st.at"): [f"{int(t['at_minute']) // 60:02d}:{int(t['at_minute']) % 60:02d}"
                             if t.get("at_minute") is not None else "—" for t in trips],
            ctx.t("st.trip_kind"): [ctx.t(f"st.kind_{t['kind']}") if ctx.has(f"st.kind_{t.get('kind')}")
                                    else ctx.t("event.other") for t in trips],
            ctx.t("st.delay"): [fmt_num(t.get("detection_delay_min"), 0) if t.get("detection_delay_min") is not None
                                else ctx.t("st.no_drop") for t in trips],
        }), hide_index=True, key="st_trips")
    _breakers(ctx, report.get("breakers", []))
    if ctx.may(Action.EXPORT):  # made when clicked: checked, stamped with who and when, audited by the core
        c1, c2 = st.columns(2)
        name = f"bidlens-stress-{report['scenario']}-{report['seed']}-{ctx.user.username}"
        c1.download_button(ctx.t("st.download_html"),
                           lambda: ctx.room.export_stress_report(ctx.user, report, "html", ctx.lang),
                           file_name=f"{name}.html", mime="text/html", key="st_dl_html")
        c2.download_button(ctx.t("st.download_json"),
                           lambda: ctx.room.export_stress_report(ctx.user, report, "json", ctx.lang),
                           file_name=f"{name}.json", mime="application/json", key="st_dl_json")


def _charts(ctx: Ctx, report: dict) -> None:
    """ROI and profit by hour, ROI by campaign, per arm: titles, axes and arm names in the user's
    language, each arm its own colour in both."""
    labels = [_arm(ctx, a) for a in ARMS]
    colour = alt.Color("arm_label:N", title=ctx.t("st.arm"), scale=alt.Scale(domain=labels, range=list(ARM_COLOURS)),
                       legend=alt.Legend(orient="bottom"))
    hourly = hourly_frame(report).assign(arm_label=lambda f: f["arm"].map(lambda a: _arm(ctx, a)))
    floor = alt.Chart(pd.DataFrame({"floor": [report["floor_roi"]]})).mark_rule(strokeDash=[6, 4], color="red") \
        .encode(y="floor:Q")
    hour = alt.X("hour:O", title=ctx.t("st.hour"))
    roi = alt.Chart(hourly).mark_line(point=True).encode(
        x=hour, y=alt.Y("roi:Q", title="ROI"), color=colour,
        tooltip=[alt.Tooltip("arm_label:N", title=ctx.t("st.arm")), alt.Tooltip("hour:O", title=ctx.t("st.hour")),
                 alt.Tooltip("roi:Q", format=".2f", title="ROI")],
    ).properties(title=ctx.t("st.chart_roi"), height=220)
    profit = alt.Chart(hourly).mark_bar().encode(
        x=hour, xOffset="arm_label:N", y=alt.Y("profit:Q", title=ctx.t("st.profit_axis"), axis=alt.Axis(format=",.0f")),
        color=colour, tooltip=[alt.Tooltip("arm_label:N", title=ctx.t("st.arm")),
                               alt.Tooltip("profit:Q", format=",.0f", title=ctx.t("kpi.profit"))],
    ).properties(title=ctx.t("st.chart_profit"), height=220)
    campaigns = campaign_frame(report).assign(arm_label=lambda f: f["arm"].map(lambda a: _arm(ctx, a)))
    per_campaign = alt.Chart(campaigns).mark_point(filled=True).encode(
        x=alt.X("campaign:N", title=ctx.t("col.campaign")), y=alt.Y("roi:Q", title="ROI"), color=colour,
        tooltip=[alt.Tooltip("arm_label:N", title=ctx.t("st.arm")), alt.Tooltip("campaign:N", title=ctx.t("col.campaign")),
                 alt.Tooltip("roi:Q", format=".2f", title="ROI")],
    ).properties(title=ctx.t("st.chart_campaigns"), height=220)
    st.altair_chart(alt.vconcat(roi + floor, profit, per_campaign + floor), width="stretch", key="st_charts")


def _breakers(ctx: Ctx, rows: list[dict]) -> None:
    """Each breaker alone against the model arm: interceptions, restores and the loss it avoided."""
    if not rows:
        return
    st.markdown(f"**{ctx.t('st.breakers')}**")
    st.dataframe(pd.DataFrame({
        ctx.t("st.breaker"): [ctx.t(f"gd.th_guard_{r['guard']}") for r in rows],
        ctx.t("st.breaker_action"): [ctx.t(f"st.action_{r['action']}") for r in rows],
        ctx.t("st.interceptions"): [r["interceptions"] for r in rows],
        ctx.t("st.restores"): [r["restores"] for r in rows],
        ctx.t("st.announced_again"): [r["announced_again"] for r in rows],
        ctx.t("gd.loss_avoided"): [fmt_num(r["loss_avoided"], 0) for r in rows],
        ctx.t("st.method"): [ctx.t(f"st.method_{r['method']}") for r in rows],
        ctx.t("st.campaigns"): [" ".join(r["campaigns"]) for r in rows],
    }), hide_index=True, key="st_breakers")
