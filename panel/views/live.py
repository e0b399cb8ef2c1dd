"""Live board (实时看板): KPIs, campaigns, ROI series, shadow comparison, alerts feed.

The live parts are fragments refreshed every N seconds (pausable); widgets that
set the refresh live outside them so a refresh never resets them.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app import board
from control.clock import PROMOTION_TZ_OFFSET_S
from panel.ui import Ctx, decided_by_label, fmt_num, fmt_ts, fragment, goto
from panel.views.alerts import alert_feed

DEFAULT_REFRESH_S = 5
WINDOWS_MIN = (15, 60, 180, 1440)
DECIDERS = ("model", "guard", "rule_pool", "override")


def render(ctx: Ctx) -> None:
    st.header(ctx.t("page.board"))
    c1, c2, c3 = st.columns([1, 1, 1])
    every = c1.number_input(ctx.t("board.refresh_s"), min_value=1, max_value=600, value=DEFAULT_REFRESH_S,
                            key="refresh_s")
    paused = c2.toggle(ctx.t("board.pause"), key="refresh_paused")
    window_min = c3.selectbox(ctx.t("board.window"), WINDOWS_MIN, index=1, key="window_min",
                              format_func=lambda m: ctx.t("board.window_min", m=m))
    run_every = None if paused else int(every)

    @fragment(ctx, run_every=run_every)
    def live_part() -> None:
        view = ctx.room.board(ctx.user, int(window_min) * 60)
        if view is None:
            st.info(ctx.t("app.no_data"))
            return
        _kpis(ctx, view)
        _overridden(ctx, view)
        _campaigns(ctx, view)
        left, right = st.columns([3, 2])
        with left:
            _roi_chart(ctx, view, int(window_min))
        with right:
            _shadow(ctx, view)

    live_part()

    @fragment(ctx, run_every=run_every)
    def alerts_part() -> None:
        st.subheader(ctx.t("board.alerts"))
        alert_feed(ctx, key="board")

    alerts_part()


def _kpis(ctx: Ctx, view: board.BoardView) -> None:
    k = view.kpis
    cols = st.columns(6)
    cols[0].metric(ctx.t("kpi.spend"), fmt_num(k.spend, 0))
    cols[1].metric(ctx.t("kpi.gmv"), fmt_num(k.gmv, 0))
    cols[2].metric(ctx.t("kpi.roi"), fmt_num(k.realised_roi),
                   delta=None if np.isnan(k.predicted_roi) else f"{k.realised_roi - k.predicted_roi:+.2f}",
                   help=ctx.t("kpi.roi_help", pred=fmt_num(k.predicted_roi)))
    cols[3].metric(ctx.t("kpi.profit"), fmt_num(k.profit, 0))
    cols[4].metric(ctx.t("kpi.trips"), k.active_trips)
    cols[5].metric(ctx.t("kpi.alerts"), k.open_alerts)
    st.caption(ctx.t("board.as_of", ts=fmt_ts(view.latest_bucket), pred=fmt_num(k.predicted_roi)))


def _overridden(ctx: Ctx, view: board.BoardView) -> None:
    """Campaigns a person is deciding for right now, in words (the table below is a canvas)."""
    rows = view.campaigns[view.campaigns["decided_by"] == "override"]
    for r in rows.itertuples():
        st.markdown(ctx.t("board.override_line", campaign=r.campaign_id, name=r.name,
                          who=r.override_by, until=fmt_ts(r.override_until)))
    if view.kill_switch.global_on:
        st.error(ctx.t("app.kill_on"))


def hold_text(ctx: Ctx, hold: board.HoldReason | None) -> str:
    """Why the model does not decide the campaign, in words: which rule, the figure that crossed, since
    when, and what serves instead. A cause without a translation reads as a generic trip, never a code."""
    if hold is None:
        return ""
    if hold.guard == "kill_switch":
        return ctx.t(f"hold.kill_{hold.cause}")
    figures = {k: fmt_num(v) for k, v in hold.figures.items()}
    cause_key = f"cause.{hold.cause}"
    cause = ctx.fill(cause_key, Blank(figures)) if ctx.has(cause_key) else ctx.t("cause.other")
    guard_key = f"gd.th_guard_{hold.guard}"
    guard = ctx.t(guard_key) if ctx.has(guard_key) else ctx.t("gd.guard")
    action = ctx.t(f"hold_action.{hold.action}", factor=fmt_num(hold.bid_factor))
    return ctx.t("hold.line", guard=guard, mode=ctx.t(f"guard.{hold.mode}"), cause=cause,
                 ts=fmt_ts(hold.tripped_ts, with_date=False), action=action)


class Blank(dict):
    """Figures for a cause's sentence: one the trip did not record reads "—"."""

    def __missing__(self, key: str) -> str:
        return "—"


def _campaigns(ctx: Ctx, view: board.BoardView) -> None:
    table = view.campaigns
    f1, f2, f3 = st.columns([2, 2, 1])
    search = f1.text_input(ctx.t("board.search"), key="board_search")
    who = f2.multiselect(ctx.t("board.decided_filter"), DECIDERS, key="board_who", placeholder=ctx.t("app.choose"),
                         format_func=lambda v: decided_by_label(ctx, v))
    below = f3.checkbox(ctx.t("board.below_floor"), key="board_below")
    if search:
        hit = (table["campaign_id"].str.contains(search, case=False, regex=False)
               | table["name"].fillna("").str.contains(search, case=False, regex=False))
        table = table[hit]
    if who:
        table = table[table["decided_by"].isin(who)]
    if below:
        table = table[table["below_floor"]]
    shown = pd.DataFrame({
        ctx.t("col.campaign"): table["campaign_id"],
        ctx.t("col.name"): table["name"],
        ctx.t("col.bid"): table["bid"].map(fmt_num),
        ctx.t("col.model_bid"): table["model_bid"].map(fmt_num),
        ctx.t("col.budget"): table["daily_budget"],
        ctx.t("col.pace"): (table["pace"] * 100).round(1),
        ctx.t("col.packages_on"): table["packages_on"].astype(str) + "/" + table["packages"].astype(str),
        ctx.t("col.pred_roi"): table["pred_roi"].map(fmt_num),
        ctx.t("col.realised_roi"): table["realised_roi"].map(fmt_num),
        ctx.t("col.floor"): table["floor"],
        ctx.t("col.guard"): table["guard"].map(lambda m: ctx.t(f"guard.{m}")),
        ctx.t("col.decided_by"): table["decided_by"].map(lambda v: decided_by_label(ctx, v)),
        ctx.t("col.why"): table["campaign_id"].map(lambda c: hold_text(ctx, view.holds.get(c))),
        ctx.t("col.override_by"): table["override_by"],
        ctx.t("col.override_until"): table["override_until"].map(fmt_ts),
    })
    money = st.column_config.NumberColumn(format="localized")
    event = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="single-row",
                         key="board_table", height=360,
                         column_config={ctx.t("col.pace"): st.column_config.ProgressColumn(
                             ctx.t("col.pace"), min_value=0, max_value=100, format="%.0f%%"),
                             ctx.t("col.budget"): money,
                             ctx.t("col.floor"): st.column_config.NumberColumn(format="%.2f"),
                             ctx.t("col.why"): st.column_config.TextColumn(width=480)})
    picked = event.selection.rows if event is not None else []
    if picked:
        campaign_id = table.iloc[picked[0]]["campaign_id"]
        if st.button(ctx.t("board.explain", campaign=campaign_id), key="board_explain"):
            goto("explorer", explore_campaign=campaign_id, explore_bucket=view.latest_bucket)


SERIES = ("predicted", "realised", "rule_pool_predicted")
SERIES_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd")  # by series, whatever the language


def _roi_chart(ctx: Ctx, view: board.BoardView, window_min: int) -> None:
    """Predicted, realised and rule-pool ROI over the chosen window (the axis is the window, not the day),
    the floor as a dashed line, each trip start as a thin mark."""
    st.subheader(ctx.t("board.roi_chart"))
    start = board.window_start(view.latest_bucket, window_min * 60)
    domain = [pd.Timestamp(t + PROMOTION_TZ_OFFSET_S, unit="s") for t in (start, view.latest_bucket)]
    labels = [ctx.t(f"series.{v}") for v in SERIES]
    series = view.series.assign(time=pd.to_datetime(view.series["bucket_ts"] + PROMOTION_TZ_OFFSET_S, unit="s"),
                                label=view.series["series"].map(dict(zip(SERIES, labels, strict=True))))
    x = alt.X("time:T", title=None, scale=alt.Scale(domain=domain), axis=alt.Axis(format="%H:%M"))
    lines = alt.Chart(series).mark_line().encode(
        x=x, y=alt.Y("roi:Q", title="ROI"),
        color=alt.Color("label:N", title=None, scale=alt.Scale(domain=labels, range=list(SERIES_COLOURS)),
                        legend=alt.Legend(orient="bottom")),
        tooltip=[alt.Tooltip("time:T", format="%H:%M", title=ctx.t("ex.time")), alt.Tooltip("label:N", title=" "),
                 alt.Tooltip("roi:Q", format=".2f", title="ROI")])
    floor_value = ctx.room.default_floor(ctx.user)
    floor = alt.Chart(pd.DataFrame({"roi": [floor_value]})).mark_rule(strokeDash=[6, 4], color="red") \
        .encode(y="roi:Q")
    trips = view.trips[(view.trips["start"] >= start) & (view.trips["start"] <= view.latest_bucket)]
    marks = alt.Chart(trips.assign(time=pd.to_datetime(trips["start"] + PROMOTION_TZ_OFFSET_S, unit="s"))) \
        .mark_tick(color="#ff7f0e", thickness=2, size=14).encode(
            x=x, y=alt.value(6), tooltip=[alt.Tooltip("campaign_id:N", title=ctx.t("col.campaign")),
                                          alt.Tooltip("time:T", format="%H:%M", title=ctx.t("gd.tripped_at"))])
    st.altair_chart(lines + floor + marks, width="stretch", key="board_roi_chart")
    st.caption(ctx.t("board.roi_caption", floor=fmt_num(floor_value), trips=len(trips)))


def _shadow(ctx: Ctx, view: board.BoardView) -> None:
    st.subheader(ctx.t("board.shadow"))
    shadow = view.shadow.head(15)
    st.dataframe(pd.DataFrame({
        ctx.t("col.campaign"): shadow["campaign_id"],
        ctx.t("col.model_pred_roi"): shadow["model_pred_roi"].map(fmt_num),
        ctx.t("col.pool_pred_roi"): shadow["pool_pred_roi"].map(fmt_num),
        ctx.t("col.gap"): shadow["gap"].map(lambda v: fmt_num(v, signed=True)),
    }), hide_index=True, height=300, key="board_shadow")
    st.caption(ctx.t("board.shadow_caption", n=int(view.shadow["pool_better"].sum())))
