"""Review (双周复盘): the biweekly algorithm-operations review of a period, and its export.

Figures and tables come from the core (app.review, app.review_report); the export is
made when clicked, checked (EXPORT), stamped with who and when, and audited.
"""

from __future__ import annotations

import datetime as dt

import streamlit as st

from app.review_report import review_charts, review_tables
from control.clock import PROMOTION_TZ
from control.permissions import Action
from panel.ui import CORE_REFUSALS, Ctx, fmt_num, page_start, refusal_text

DAYS = 14  # the plan's review cadence: every two weeks
TABLES = ("kpi", "kpi_by_campaign", "breakers", "breakers_by_promotion", "breakers_by_campaign", "overrides",
          "alerts", "models", "authorities")


def render(ctx: Ctx) -> None:
    newest = ctx.room.latest_bucket(ctx.user)
    if not page_start(ctx, "review", newest):
        return
    last = dt.datetime.fromtimestamp(newest, PROMOTION_TZ).date()
    c1, c2 = st.columns(2)
    date_from = c1.date_input(ctx.t("rv.from"), value=last - dt.timedelta(days=DAYS - 1), key="rv_from")
    date_to = c2.date_input(ctx.t("rv.to"), value=last, key="rv_to")
    try:
        review = ctx.room.review(ctx.user, date_from.isoformat(), date_to.isoformat())
    except CORE_REFUSALS as exc:
        st.error(refusal_text(ctx, exc))
        return
    k = review["kpi"]
    m = st.columns(4)
    m[0].metric(ctx.t("rv.profit"), fmt_num(k["operations_profit"], 0))
    m[1].metric(ctx.t("rv.algorithm_share", share=round(k["algorithm_share"] * 100)), fmt_num(k["algorithm_profit"], 0))
    m[2].metric("ROI", fmt_num(k["roi"]))
    m[3].metric(ctx.t("rv.override_effect"), fmt_num(review["overrides"]["profit_effect"], 0))
    tables = review_tables(review, ctx.lang)
    for key in TABLES:
        title = ctx.t(f"rv.{key}")
        st.markdown(f"**{title}**")
        st.dataframe(tables[key], hide_index=True)
    counts = review["overrides"]["counts"]
    st.caption(ctx.t("rv.override_counts", **counts))
    st.altair_chart(review_charts(review, ctx.lang))
    if ctx.may(Action.EXPORT):
        d1, d2 = st.columns(2)
        name = f"bidlens-review-{review['period']['from']}-{review['period']['to']}-{ctx.user.username}"
        d1.download_button(ctx.t("rv.download_html"),
                           lambda: ctx.room.export_review(ctx.user, review, "html", ctx.lang),
                           file_name=f"{name}.{ctx.lang}.html", mime="text/html", key="rv_dl_html")
        d2.download_button(ctx.t("rv.download_json"), lambda: ctx.room.export_review(ctx.user, review, "json", ctx.lang),
                           file_name=f"{name}.json", mime="application/json", key="rv_dl_json")
