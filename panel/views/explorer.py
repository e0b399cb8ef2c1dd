"""Decision explorer (决策解释): one decision's explanation in bid units, a comparison, global drivers.

Explanations are the stored ones (what the model saw then, under that model version).
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from control import explorer
from panel import data
from panel.ui import Ctx, decided_by_label, fmt_num, fmt_ts

WINDOWS_MIN = (60, 180, 1440)
VIEWS = ("decision", "compare", "global", "model")


def render(ctx: Ctx) -> None:
    st.header(ctx.t("page.explorer"))
    newest = data.latest_bucket(ctx.control)
    if newest is None:
        st.info(ctx.t("app.no_data"))
        return
    campaigns = data.campaigns(ctx.control, newest)
    packages = data.packages(ctx.control)
    ids = sorted(campaigns)
    wanted = st.session_state.get("explore_campaign")
    c1, c2, c3 = st.columns(3)
    campaign_id = c1.selectbox(ctx.t("ex.campaign"), ids, index=ids.index(wanted) if wanted in ids else 0,
                               key="ex_campaign", format_func=lambda c: f"{c} · {campaigns[c].name}")
    codes = sorted(packages)
    package = c2.selectbox(ctx.t("ex.package"), codes, key="ex_package",
                           format_func=lambda p: packages[p][0 if ctx.lang == "zh" else 1])
    with ctx.control.engine.connect() as conn:
        buckets = explorer.slot_buckets(conn, campaign_id, package)
    if not buckets:
        st.info(ctx.t("ex.no_decision"))
        return
    bucket = c3.selectbox(ctx.t("ex.time"), buckets, key="ex_bucket", format_func=fmt_ts)
    target_roi = campaigns[campaign_id].target_roi
    with ctx.control.engine.connect() as conn:
        stored = explorer.load_decision(conn, explorer.find_decision_id(conn, campaign_id, package, bucket))
    # One view at a time (not tabs): only the chosen one is computed, so a decision opens fast.
    view = st.segmented_control(ctx.t("ex.view"), VIEWS, default=VIEWS[0], key="ex_view",
                                format_func=lambda v: ctx.t(f"ex.tab_{v}")) or VIEWS[0]
    if view == "decision":
        _decision(ctx, stored, target_roi)
    elif view == "compare":
        _compare(ctx, stored, campaign_id, package, buckets, target_roi)
    elif view == "global":
        _global(ctx, campaign_id, newest)
    else:
        with ctx.control.engine.connect() as conn:
            meta = explorer.model_meta(conn, stored.decision["model_version"])
        st.markdown(ctx.t("ex.model_version", version=stored.decision["model_version"]))
        st.json(meta or {}, expanded=False)


def _labels(ctx: Ctx, stored: explorer.StoredDecision) -> dict[str, str]:
    names = stored.labels_zh if ctx.lang == "zh" else stored.labels_en
    out = dict(zip(stored.features, names, strict=True))
    out.update({"base": ctx.t("ex.step_base"), "clip": ctx.t("ex.step_clip"), "bid": ctx.t("ex.step_bid")})
    return out


def _decision(ctx: Ctx, stored: explorer.StoredDecision, target_roi: float) -> None:
    d = stored.decision
    cols = st.columns(5)
    cols[0].metric(ctx.t("ex.served_bid"), fmt_num(d["bid"], 3))
    cols[1].metric(ctx.t("ex.model_bid"), fmt_num(d["model_bid"], 3))
    cols[2].metric(ctx.t("ex.pred_roi"), fmt_num(d["pred_roi"]))
    cols[3].metric(ctx.t("ex.pacing"), fmt_num(d["pacing"]))
    cols[4].metric(ctx.t("ex.decided_by"), decided_by_label(ctx, d["decided_by"]))
    st.caption(ctx.t("ex.budget_audience", share=fmt_num(d["budget_share"] * 100, 3),
                     on=ctx.t("ov.on") if d["audience_on"] else ctx.t("ov.off"), reason=d["decided_reason"] or "—"))
    if stored.base_value is None:
        st.warning(ctx.t("ex.no_explanation"))
        return
    steps = explorer.bid_waterfall(stored, target_roi)
    labels = _labels(ctx, stored)
    steps["label"] = [labels.get(n, decided_by_label(ctx, k) if k in ("override", "rule_pool") else n)
                      for n, k in zip(steps["name"], steps["step"], strict=True)]
    steps["order"] = range(len(steps))
    steps["sign"] = ["total" if k in ("base", "bid") else ("up" if v >= 0 else "down")
                     for k, v in zip(steps["step"], steps["delta"], strict=True)]
    chart = alt.Chart(steps).mark_bar().encode(
        y=alt.Y("label:N", sort=alt.SortField("order"), title=None),
        x=alt.X("start:Q", title=ctx.t("ex.bid_units")), x2="end:Q",
        color=alt.Color("sign:N", scale=alt.Scale(domain=["total", "up", "down"],
                                                  range=["#4c78a8", "#54a24b", "#e45756"]), legend=None),
        tooltip=["label", alt.Tooltip("delta:Q", format="+.4f"), alt.Tooltip("value:Q", format=".3f")])
    st.altair_chart(chart, width="stretch")
    st.caption(ctx.t("ex.waterfall_caption", target=target_roi, pacing=fmt_num(d["pacing"])))
    top = steps[steps["step"] == "feature"].head(3)
    st.markdown(ctx.t("ex.top_reasons") + "\n" + "\n".join(
        f"- {r.label}: {r.delta:+.3f} ({ctx.t('ex.raises') if r.delta > 0 else ctx.t('ex.lowers')})"
        for r in top.itertuples()))
    st.dataframe(steps[["label", "value", "delta", "end"]].rename(columns={
        "label": ctx.t("ex.step"), "value": ctx.t("ex.feature_value"), "delta": ctx.t("ex.delta"),
        "end": ctx.t("ex.running")}), hide_index=True)


def _compare(ctx: Ctx, stored: explorer.StoredDecision, campaign_id: str, package: str, buckets: list[int],
             target_roi: float) -> None:
    others = [b for b in buckets if b != stored.decision["bucket_ts"]]
    if not others:
        st.caption(ctx.t("ex.no_other"))
        return
    other = st.selectbox(ctx.t("ex.compare_with"), others, key="ex_other", format_func=fmt_ts)
    with ctx.control.engine.connect() as conn:
        before = explorer.load_decision(conn, explorer.find_decision_id(conn, campaign_id, package, other))
    if before.base_value is None or stored.base_value is None:
        st.warning(ctx.t("ex.no_explanation"))
        return
    diff = explorer.compare_decisions(before, stored, target_roi)
    labels = _labels(ctx, stored)
    diff["label"] = [labels.get(n, n) for n in diff["name"]]
    st.markdown(ctx.t("ex.changed", a=fmt_num(before.decision["bid"], 3), b=fmt_num(stored.decision["bid"], 3),
                      ta=fmt_ts(other), tb=fmt_ts(stored.decision["bucket_ts"])))
    st.altair_chart(alt.Chart(diff).mark_bar().encode(
        y=alt.Y("label:N", sort="-x", title=None), x=alt.X("change:Q", title=ctx.t("ex.bid_units")),
        color=alt.condition("datum.change > 0", alt.value("#54a24b"), alt.value("#e45756"))), width="stretch")


def _global(ctx: Ctx, campaign_id: str, newest: int) -> None:
    c1, c2 = st.columns(2)
    window = c1.selectbox(ctx.t("ex.window"), WINDOWS_MIN, key="ex_window",
                          format_func=lambda m: ctx.t("board.window_min", m=m))
    only = c2.checkbox(ctx.t("ex.only_campaign", campaign=campaign_id), key="ex_only")
    with ctx.control.engine.connect() as conn:
        long, names = explorer.window_explanations(conn, newest - int(window) * 60, newest,
                                                   campaign_id if only else None)
    if long.empty:
        st.caption(ctx.t("ex.no_explanation"))
        return
    drivers = explorer.global_drivers(long)
    st.altair_chart(alt.Chart(drivers).mark_bar().encode(
        y=alt.Y("feature:N", sort="-x", title=None), x=alt.X("mean_abs:Q", title=ctx.t("ex.mean_abs"))),
        width="stretch")
    feature = st.selectbox(ctx.t("ex.dependence"), names, key="ex_feature")
    points = long[long["feature"] == feature]
    st.altair_chart(alt.Chart(pd.DataFrame(points)).mark_circle(size=18, opacity=0.5).encode(
        x=alt.X("value:Q", title=feature), y=alt.Y("contribution:Q", title=ctx.t("ex.shap_value"))),
        width="stretch")
    st.caption(ctx.t("ex.sampled", n=long["decision_id"].nunique()))
