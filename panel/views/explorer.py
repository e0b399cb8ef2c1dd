"""Decision explorer (决策解释): one decision's explanation in bid units, why it changed, global drivers.

The explanation is the stored one (what the model saw then, under that model
version), decomposed by explain/ into steps that add up to the served bid. The raw
contributions are strategy: people without VIEW_EXPLANATION_DETAIL (operators, unless
granted) read the decision and its reasons in words; the core refuses them the rest.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import streamlit as st

from explain import analysis, charts, reasons
from explain.bid_units import steps_frame
from panel.ui import Ctx, decided_by_label, fmt_num, fmt_ts, page_start

WINDOWS_MIN = (60, 180, 1440)
VIEWS = ("decision", "compare", "global", "model")


def render(ctx: Ctx) -> None:
    newest = ctx.room.latest_bucket(ctx.user)
    if not page_start(ctx, "explorer", newest):
        return
    campaigns = ctx.room.campaigns(ctx.user)
    packages = ctx.room.packages(ctx.user)
    ids = sorted(campaigns)
    wanted = st.session_state.get("explore_campaign")
    c1, c2, c3 = st.columns(3)
    campaign_id = c1.selectbox(ctx.t("ex.campaign"), ids, index=ids.index(wanted) if wanted in ids else 0,
                               key="ex_campaign", format_func=lambda c: f"{c} · {campaigns[c].name}")
    codes = sorted(packages)
    package = c2.selectbox(ctx.t("ex.package"), codes, key="ex_package",
                           format_func=lambda p: packages[p][0 if ctx.lang == "zh" else 1])
    buckets = ctx.room.slot_buckets(ctx.user, campaign_id, package)
    if not buckets:
        st.info(ctx.t("ex.no_decision"))
        return
    asked = st.session_state.get("explore_bucket")  # from the board or an alert: the decision then
    at = next((i for i, b in enumerate(buckets) if asked is not None and b <= asked), 0)
    bucket = c3.selectbox(ctx.t("ex.time"), buckets, index=at, key="ex_bucket", format_func=fmt_ts)
    floor = ctx.room.roi_floors(ctx.user, [campaign_id])[campaign_id]
    if not ctx.room.may_see_detail(ctx.user):
        _in_words(ctx, ctx.room.decision_reasons(ctx.user, campaign_id, package, bucket, ctx.lang), floor)
        return
    breakdown = ctx.room.breakdown(ctx.user, campaign_id, package, bucket)
    # One view at a time (not tabs): only the chosen one is computed, so a decision opens fast.
    view = st.segmented_control(ctx.t("ex.view"), VIEWS, default=VIEWS[0], key="ex_view",
                                format_func=lambda v: ctx.t(f"ex.tab_{v}")) or VIEWS[0]
    if breakdown is None and view in ("decision", "compare"):
        st.warning(ctx.t("ex.no_explanation"))
    elif view == "decision":
        _decision(ctx, breakdown, floor)
    elif view == "compare":
        _compare(ctx, breakdown, campaign_id, package, buckets)
    elif view == "global":
        _global(ctx, campaign_id, newest)
    else:
        _model(ctx, campaign_id, package, bucket)


def _figures(ctx: Ctx, d: dict) -> None:
    cols = st.columns([1, 1, 1, 1, 1.6])  # "decided by" reads 人工规则池: room for it
    cols[0].metric(ctx.t("ex.served_bid"), fmt_num(d["bid"], 3))
    cols[1].metric(ctx.t("ex.model_bid"), fmt_num(d["model_bid"], 3))
    cols[2].metric(ctx.t("ex.pred_roi"), fmt_num(d["pred_roi"]))
    cols[3].metric(ctx.t("ex.pacing"), fmt_num(d["pacing"]))
    cols[4].metric(ctx.t("ex.decided_by"), decided_by_label(ctx, d["decided_by"]))


def _in_words(ctx: Ctx, reasons, floor: float) -> None:
    """The decision and its reasons in words: what a person without the raw explanations sees."""
    if reasons is None:
        st.warning(ctx.t("ex.no_explanation"))
        return
    d = reasons.decision
    _figures(ctx, d)
    st.markdown(ctx.t("ex.top_reasons") + "\n" + "\n".join(f"- {line}" for line in reasons.reasons))
    st.caption(ctx.t("ex.budget_audience", share=fmt_num(d["budget_share"] * 100, 3),
                     on=ctx.t("ov.on") if d["audience_on"] else ctx.t("ov.off"),
                     margin=fmt_num(d["pred_roi"] - floor), floor=floor))
    st.info(ctx.t("ex.words_only"))


def _decision(ctx: Ctx, bd, floor: float) -> None:
    d = bd.decision
    _figures(ctx, d)
    steps = steps_frame(bd.steps)
    st.altair_chart(charts.waterfall(steps, ctx.lang), width="stretch")
    st.caption(ctx.t("ex.waterfall_caption", target=d["target_roi"], pacing=fmt_num(d["pacing"])))
    st.markdown(ctx.t("ex.top_reasons") + "\n" + "\n".join(
        f"- {line}" for line in reasons.bid_reasons(bd.steps, bd.features, ctx.lang)))
    label = "label_zh" if ctx.lang == "zh" else "label_en"
    st.dataframe(steps[[label, "feature_value", "value", "total"]].rename(columns={
        label: ctx.t("ex.step"), "feature_value": ctx.t("ex.feature_value"), "value": ctx.t("ex.delta"),
        "total": ctx.t("ex.running")}), hide_index=True)
    st.subheader(ctx.t("ex.budget_audience_title"))
    st.caption(ctx.t("ex.budget_audience", share=fmt_num(d["budget_share"] * 100, 3),
                     on=ctx.t("ov.on") if d["audience_on"] else ctx.t("ov.off"),
                     margin=fmt_num(d["pred_roi"] - floor), floor=floor))
    if bd.roi_steps:
        roi = steps_frame(bd.roi_steps)
        st.dataframe(roi[[label, "value", "total"]].rename(columns={
            label: ctx.t("ex.step"), "value": ctx.t("ex.delta"), "total": ctx.t("ex.running")}), hide_index=True)


def _compare(ctx: Ctx, bd, campaign_id: str, package: str, buckets: list[int]) -> None:
    others = [b for b in buckets if b != bd.decision["bucket_ts"]]
    if not others:
        st.caption(ctx.t("ex.no_other"))
        return
    other = st.selectbox(ctx.t("ex.compare_with"), others, key="ex_other", format_func=fmt_ts)
    before = ctx.room.breakdown(ctx.user, campaign_id, package, other)
    if before is None:
        st.warning(ctx.t("ex.no_explanation"))
        return
    diff = analysis.diff_steps(before.steps, bd.steps).head(12)
    st.markdown(ctx.t("ex.changed", a=fmt_num(before.decision["bid"], 3), b=fmt_num(bd.decision["bid"], 3),
                      ta=fmt_ts(other), tb=fmt_ts(bd.decision["bucket_ts"])))
    st.markdown(reasons.drivers_text(diff, ctx.lang))
    label = "label_zh" if ctx.lang == "zh" else "label_en"
    st.altair_chart(alt.Chart(diff.assign(label=diff[label])).mark_bar().encode(
        y=alt.Y("label:N", sort=alt.SortField("rank"), title=None), x=alt.X("delta:Q", title=ctx.t("ex.bid_units")),
        color=alt.condition("datum.delta > 0", alt.value("#d62728"), alt.value("#2ca02c"))), width="stretch")


def _global(ctx: Ctx, campaign_id: str, newest: int) -> None:
    c1, c2 = st.columns(2)
    window = c1.selectbox(ctx.t("ex.window"), WINDOWS_MIN, key="ex_window",
                          format_func=lambda m: ctx.t("board.window_min", m=m))
    only = c2.checkbox(ctx.t("ex.only_campaign", campaign=campaign_id), key="ex_only")
    win = ctx.room.explanation_window(ctx.user, newest - int(window) * 60 + 1, newest + 1,
                                      campaign_id=campaign_id if only else None)
    if win.decisions.empty:
        st.caption(ctx.t("ex.no_explanation"))
        return
    st.altair_chart(charts.importance_bars(analysis.importance(win.contributions, win.features), ctx.lang),
                    width="stretch")
    names = [f.name for f in win.features]
    labels = {f.name: f.display_zh if ctx.lang == "zh" else f.display_en for f in win.features}
    feature = st.selectbox(ctx.t("ex.dependence"), names, key="ex_feature", format_func=labels.get)
    frame = analysis.dependence_frame(win.contributions, win.feature_values, win.features, feature,
                                      np.random.default_rng(0),
                                      segments=win.decisions["decided_by"].to_numpy(dtype=object))
    st.altair_chart(charts.dependence(frame, ctx.lang), width="stretch")
    st.caption(ctx.t("ex.sampled", n=len(win.decisions)))


def _model(ctx: Ctx, campaign_id: str, package: str, bucket: int) -> None:
    version, meta = ctx.room.decision_model(ctx.user, campaign_id, package, bucket)
    st.markdown(ctx.t("ex.model_version", version=version))
    st.json(meta or {}, expanded=False)
