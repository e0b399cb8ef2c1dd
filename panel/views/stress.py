"""Stress test (压力测试): replay a promotion (shipped scenario or an uploaded file) before launch,
in the background, and read the report: arms side by side, trips, loss avoided, charts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.stress_jobs import VARIANTS, chosen_scenario, report_charts, scenario_names, start_stress
from control.domain import InvalidValue
from control.permissions import Action
from panel.ui import Ctx, attempt, fmt_num


def render(ctx: Ctx) -> None:
    st.header(ctx.t("page.stress"))
    c1, c2, c3, c4 = st.columns(4)
    source = c1.radio(ctx.t("st.source"), ("shipped", "upload"), key="st_source", horizontal=True,
                      format_func=lambda v: ctx.t(f"st.source_{v}"))
    names = scenario_names()
    if source == "shipped":
        name = c1.selectbox(ctx.t("st.scenario"), names, key="st_scenario",
                            index=names.index("818") if "818" in names else 0)
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
                st.error(ctx.t("st.bad_scenario", detail=str(exc)))
        if scenario is not None:
            attempt(ctx, lambda: st.session_state.update(stress_job=start_stress(
                ctx.user, scenario, seed=int(seed), minutes=int(minutes), data_dir=ctx.control.settings.data_dir)),
                    ctx.t("st.started"))
        elif source == "upload" and upload is None:
            st.error(ctx.t("st.no_file"))
    job = st.session_state.get("stress_job")
    if job is not None:
        _job(ctx, job)


def _job(ctx: Ctx, job) -> None:
    @st.fragment(run_every=1.0 if job.running else None)
    def progress() -> None:
        st.progress(job.progress, text=ctx.t(f"st.phase_{job.phase}", scenario=job.scenario, seed=job.seed))
        if job.phase == "failed":
            st.error(ctx.t("st.failed", detail=job.error))
        if not job.running and st.session_state.get("stress_shown") != id(job):
            st.session_state["stress_shown"] = id(job)
            st.rerun(scope="app")

    progress()
    if job.report is not None:
        _report(ctx, job.report)


def _report(ctx: Ctx, report: dict) -> None:
    st.subheader(ctx.t("st.report", scenario=report["scenario"], seed=report["seed"]))
    arms = pd.DataFrame([{ctx.t("st.arm"): arm, ctx.t("kpi.spend"): d["spend"], ctx.t("kpi.gmv"): d["gmv"],
                          "ROI": d["roi"], ctx.t("kpi.profit"): d["profit"],
                          ctx.t("st.below_floor"): d["campaigns_below_floor"]}
                         for arm, d in report["arms"].items()])
    st.dataframe(arms, hide_index=True)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(ctx.t("gd.trips"), sum(t["kind"] == "trip" for t in report["trips"]))
    c2.metric(ctx.t("st.false_trips"), report["false_trips"])
    c3.metric(ctx.t("st.probation_failures"), report["probation_failures"])
    loss = report["loss_avoided"]
    c4.metric(ctx.t("gd.loss_avoided"), "—" if loss is None else fmt_num(loss, 0))
    if report["trips"]:
        st.dataframe(pd.DataFrame(report["trips"]), hide_index=True)
    _breakers(ctx, report.get("breakers", []))
    st.altair_chart(report_charts(report))
    if ctx.may(Action.EXPORT):  # made when clicked: checked, stamped with who and when, audited by the core
        c1, c2 = st.columns(2)
        name = f"bidlens-stress-{report['scenario']}-{report['seed']}-{ctx.user.username}"
        c1.download_button(ctx.t("st.download_html"),
                           lambda: ctx.room.export_stress_report(ctx.user, report, "html", ctx.lang),
                           file_name=f"{name}.html", mime="text/html", key="st_dl_html")
        c2.download_button(ctx.t("st.download_json"),
                           lambda: ctx.room.export_stress_report(ctx.user, report, "json", ctx.lang),
                           file_name=f"{name}.json", mime="application/json", key="st_dl_json")


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
    }), hide_index=True)
