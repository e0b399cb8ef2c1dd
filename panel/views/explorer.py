"""Decision explorer (决策解释): one decision's explanation in bid units, why it changed, global drivers.

The explanation is the stored one (what the model saw then, under that model
version), decomposed by explain/ into steps that add up to the served bid. The raw
contributions are strategy: people without VIEW_EXPLANATION_DETAIL (operators, unless
granted) read the decision and its reasons in words; the core refuses them the rest.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from control.domain import InvalidValue
from explain import analysis, charts, reasons
from explain.bid_units import steps_frame
from panel.i18n import CATALOGUE
from panel.ui import Ctx, decided_by_label, fmt_num, fmt_ts, page_start

WINDOWS_MIN = (60, 180, 1440)
VIEWS = ("decision", "compare", "global", "model")
MODEL_KINDS = {"lightgbm": "LightGBM", "xgboost": "XGBoost", "sklearn": "scikit-learn"}


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
    if not ctx.room.may_see_detail(ctx.user):
        _in_words(ctx, ctx.room.decision_reasons(ctx.user, campaign_id, package, bucket, ctx.lang))
        return
    try:
        explanation = ctx.room.explanation(ctx.user, campaign_id, package, bucket, ctx.lang)
    except InvalidValue as exc:  # no recorded bid formula, or a model bid the formula does not give
        explanation, unexplained = None, _unexplained(ctx, exc)
    else:
        unexplained = ctx.t("ex.no_explanation")
    # One view at a time (not tabs): only the chosen one is computed, so a decision opens fast.
    view = st.segmented_control(ctx.t("ex.view"), VIEWS, default=VIEWS[0], key="ex_view",
                                format_func=lambda v: ctx.t(f"ex.tab_{v}")) or VIEWS[0]
    if explanation is None and view in ("decision", "compare"):
        st.warning(unexplained)
    elif view == "decision":
        _decision(ctx, explanation)
    elif view == "compare":
        _compare(ctx, explanation, campaign_id, package, buckets)
    elif view == "global":
        _global(ctx, campaign_id, newest)
    else:
        _model(ctx, campaign_id, package, bucket)


def _unexplained(ctx: Ctx, exc: InvalidValue) -> str:
    if exc.field == "bid_formula":
        return ctx.t("ex.no_formula", version=exc.value)
    return ctx.t("ex.formula_mismatch", bid=fmt_num(exc.value, 2))


def _steps_table(explanation) -> pd.DataFrame:
    return steps_frame(explanation.steps).assign(shown=explanation.shown_values)


def _figures(ctx: Ctx, d: dict) -> None:
    cols = st.columns([1, 1, 1, 1, 1.6])  # "decided by" reads 人工规则池: room for it
    cols[0].metric(ctx.t("ex.served_bid"), fmt_num(d["bid"], 2))
    cols[1].metric(ctx.t("ex.model_bid"), fmt_num(d["model_bid"], 2))
    cols[2].metric(ctx.t("ex.pred_roi"), fmt_num(d["pred_roi"]))
    cols[3].metric(ctx.t("ex.pacing"), fmt_num(d["pacing"]))
    cols[4].metric(ctx.t("ex.decided_by"), decided_by_label(ctx, d["decided_by"]))


def _in_words(ctx: Ctx, said) -> None:
    """The decision and its reasons in words: what a person without the raw explanations sees."""
    if said is None:
        st.warning(ctx.t("ex.no_explanation"))
        return
    d = said.decision
    _figures(ctx, d)
    st.markdown(ctx.t("ex.top_reasons") + "\n" + "\n".join(f"- {line}" for line in said.reasons))
    st.caption(ctx.t("ex.budget_audience", share=fmt_num(d["budget_share"] * 100, 2),
                     on=ctx.t("ov.on") if d["audience_on"] else ctx.t("ov.off"),
                     margin=fmt_num(d["pred_roi"] - said.roi_floor), floor=f"{said.roi_floor:g}"))
    st.info(ctx.t("ex.words_only"))


def _decision(ctx: Ctx, ex) -> None:
    d = ex.decision
    formula = ex.breakdown.formula
    _figures(ctx, d)
    steps = _steps_table(ex)
    st.altair_chart(charts.waterfall(steps, ctx.lang), width="stretch", key="ex_waterfall")
    cap = ctx.t("ex.no_cap") if formula.max_bid is None else fmt_num(formula.max_bid, 2)
    st.caption(ctx.t("ex.waterfall_caption", target=f"{formula.target_roi:g}", pacing=fmt_num(d["pacing"]),
                     low=fmt_num(formula.min_bid, 2), high=cap))
    st.markdown(ctx.t("ex.top_reasons") + "\n" + "\n".join(f"- {line}" for line in ex.reasons))
    # A plain table (in the page's text, not a canvas): what is read here is what `bidlens explain decision` says.
    st.table(_steps_shown(ctx, steps, shown=True))
    st.subheader(ctx.t("ex.budget_audience_title"))
    st.caption(ctx.t("ex.budget_audience", share=fmt_num(d["budget_share"] * 100, 2),
                     on=ctx.t("ov.on") if d["audience_on"] else ctx.t("ov.off"),
                     margin=fmt_num(d["pred_roi"] - ex.roi_floor), floor=f"{ex.roi_floor:g}"))
    roi_steps = ex.breakdown.roi_steps
    if roi_steps:
        st.table(_steps_shown(ctx, steps_frame(roi_steps), shown=False))


def _steps_shown(ctx: Ctx, steps: pd.DataFrame, *, shown: bool) -> pd.DataFrame:
    """Steps as a person reads them: the step, the feature's value in words, what it adds, the running total."""
    label = "label_zh" if ctx.lang == "zh" else "label_en"
    table = {ctx.t("ex.step"): steps[label]}
    if shown:
        table[ctx.t("ex.feature_value")] = steps["shown"].replace("", "—")
    table[ctx.t("ex.delta")] = steps["value"].map(lambda v: f"{v:+.3f}")
    table[ctx.t("ex.running")] = steps["total"].map(lambda v: f"{v:.3f}")
    return pd.DataFrame(table).set_index(ctx.t("ex.step"))


def _compare(ctx: Ctx, ex, campaign_id: str, package: str, buckets: list[int]) -> None:
    """This decision against another of the same slot; by default the one just before it."""
    at = ex.decision["bucket_ts"]
    others = [b for b in buckets if b != at]
    if not others:
        st.caption(ctx.t("ex.no_other"))
        return
    previous = next((b for b in buckets if b < at), None)
    other = st.selectbox(ctx.t("ex.compare_with"), others, key="ex_other",
                         index=others.index(previous) if previous is not None else 0,
                         format_func=lambda b: ctx.t("ex.previous", ts=fmt_ts(b)) if b == previous else fmt_ts(b))
    try:
        them = ctx.room.explanation(ctx.user, campaign_id, package, other, ctx.lang)
    except InvalidValue as exc:
        st.warning(_unexplained(ctx, exc))
        return
    if them is None:
        st.warning(ctx.t("ex.no_explanation"))
        return
    before, after = (them, ex) if other < at else (ex, them)  # always earlier → later
    a, b = before.decision, after.decision
    diff = analysis.diff_steps(before.steps, after.steps)
    if abs(b["bid"] - a["bid"]) < 0.005:
        st.markdown(ctx.t("ex.unchanged", bid=fmt_num(b["bid"], 2), ta=fmt_ts(a["bucket_ts"]),
                          tb=fmt_ts(b["bucket_ts"])))
    else:
        st.markdown(ctx.t("ex.changed", a=fmt_num(a["bid"], 2), b=fmt_num(b["bid"], 2), ta=fmt_ts(a["bucket_ts"]),
                          tb=fmt_ts(b["bucket_ts"]), delta=fmt_num(b["bid"] - a["bid"], 2, signed=True)))
    moved = diff[diff["delta"].abs() >= 0.005].head(12)
    if moved.empty:
        st.caption(ctx.t("ex.nothing_moved"))
        return
    st.markdown(ctx.t("ex.moved") + " " + reasons.drivers_text(moved, ctx.lang))
    label = "label_zh" if ctx.lang == "zh" else "label_en"
    st.altair_chart(alt.Chart(moved.assign(label=moved[label])).mark_bar().encode(
        y=alt.Y("label:N", sort=alt.SortField("rank"), title=None), x=alt.X("delta:Q", title=ctx.t("ex.bid_units")),
        color=alt.condition("datum.delta > 0", alt.value("#d62728"), alt.value("#2ca02c")),
        tooltip=[alt.Tooltip("label:N", title=ctx.t("ex.step")),
                 alt.Tooltip("delta:Q", format="+.3f", title=ctx.t("ex.delta"))]),
        width="stretch", key="ex_compare_chart")


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
                    width="stretch", key="ex_importance")
    names = [f.name for f in win.features]
    labels = {f.name: f.display_zh if ctx.lang == "zh" else f.display_en for f in win.features}
    feature = st.selectbox(ctx.t("ex.dependence"), names, key="ex_feature", format_func=labels.get)
    frame = analysis.dependence_frame(win.contributions, win.feature_values, win.features, feature,
                                      np.random.default_rng(0),
                                      segments=win.decisions["decided_by"].map(lambda v: decided_by_label(ctx, v))
                                      .to_numpy(dtype=object))
    st.altair_chart(charts.dependence(frame, ctx.lang), width="stretch", key="ex_dependence")
    st.caption(ctx.t("ex.sampled", n=len(win.decisions)))
    unrecorded = int((~win.decisions["formula_recorded"]).sum())
    if unrecorded:
        st.caption(ctx.t("ex.window_unrecorded", n=unrecorded))


def _model(ctx: Ctx, campaign_id: str, package: str, bucket: int) -> None:
    """The model version that decided, as a person reads it: what it is, its bid formula, its metrics and
    features (no raw registry document)."""
    version, row, formula = ctx.room.decision_model(ctx.user, campaign_id, package, bucket)
    st.markdown(ctx.t("ex.model_version", version=version))
    if formula is not None:
        cap = ctx.t("ex.no_cap") if formula.max_bid is None else fmt_num(formula.max_bid, 2)
        st.markdown(ctx.t("ex.formula", target=f"{formula.target_roi:g}", low=fmt_num(formula.min_bid, 2), high=cap))
    if row is None:
        st.caption(ctx.t("ex.model_unregistered"))
        return
    meta = row["meta"] or {}
    window = meta.get("training_window") or (None, None)
    st.markdown(ctx.t("ex.model_about", kind=MODEL_KINDS.get(meta.get("kind", "lightgbm"), meta.get("kind")),
                      variant=ctx.t(f"ex.variant_{meta['variant']}") if meta.get("variant") in ("roi", "gmv")
                      else ctx.t("ex.variant_other"),
                      start=fmt_ts(window[0]), end=fmt_ts(window[1])))
    metrics = {k: v for k, v in (meta.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and f"metric.{k}" in CATALOGUE[ctx.lang]}
    if metrics:
        st.dataframe(pd.DataFrame({ctx.t("ex.metric"): [ctx.t(f"metric.{k}") for k in metrics],
                                   ctx.t("ex.metric_value"): [fmt_num(v, 0 if k == "rows" else 2)
                                                              for k, v in metrics.items()]}),
                     hide_index=True, key="ex_metrics")
    features = meta.get("features") or []
    st.dataframe(pd.DataFrame({
        ctx.t("ex.feature"): [f["display_zh"] if ctx.lang == "zh" else f["display_en"] for f in features],
        ctx.t("ex.unit"): [(f.get("unit_zh") if ctx.lang == "zh" else f.get("unit_en")) or "—" for f in features],
        ctx.t("ex.levels"): [ctx.t("ex.levels_n", n=len(f["categorical_levels"])) if f.get("categorical_levels")
                             else ctx.t("ex.numeric") for f in features],
    }), hide_index=True, key="ex_features")
