"""Alerts (告警): where a WeCom message's link lands (`/alerts?alert=ID`).

The linked alert as the robot said it, with acknowledge and a way to its
explanation; every open alert with acknowledge (also the live board's feed);
dead alerts with their error and a resend.
"""

from __future__ import annotations

import streamlit as st

from control.domain import InvalidValue
from panel.ui import Ctx, attempt, fmt_ts, goto

FOCUS_KEY = "focus_alert"  # the `alert` query parameter, kept across the login page


def render(ctx: Ctx) -> None:
    st.header(ctx.t("page.alerts"))
    focus = st.query_params.get("alert") or st.session_state.get(FOCUS_KEY)
    if focus:
        _focused(ctx, str(focus))
    st.subheader(ctx.t("al.open"))
    alert_feed(ctx, key="alerts_page")
    _dead(ctx)


def title(ctx: Ctx, kind: str) -> str:
    return ctx.room.alert_title(kind, ctx.lang)


def severity_name(ctx: Ctx, severity: str) -> str:
    key = f"severity.{severity}"
    return ctx.t(key) if ctx.has(key) else severity


def alert_feed(ctx: Ctx, *, key: str) -> None:
    """Open alerts (firing, not acknowledged, not resolved), newest first, one per condition with its
    channels, each with acknowledge."""
    for n in ctx.room.notices(ctx.user).itertuples():  # addressed to this person: their overrides' fate
        st.info(ctx.t("board.notice_line", title=title(ctx, n.kind), ts=fmt_ts(n.occurred_ts),
                      text=ctx.room.notice_text(n.payload, ctx.lang)))
    alerts = ctx.room.open_alerts(ctx.user, limit=20)
    if alerts.empty:
        st.caption(ctx.t("board.no_alerts"))
        return
    for a in alerts.itertuples():
        c1, c2 = st.columns([5, 1])
        c1.markdown(ctx.t("board.alert_line", severity=severity_name(ctx, a.severity), title=title(ctx, a.kind),
                          campaign=a.campaigns or "—", ts=fmt_ts(a.occurred_ts),
                          status=ctx.t(f"gd.outbox_{a.status}")))
        if c2.button(ctx.t("board.ack"), key=f"{key}_ack_{a.alert_id}"):
            attempt(ctx, lambda aid=int(a.alert_id): ctx.room.acknowledge_alert(ctx.user, aid),
                    ctx.t("board.acked", id=a.alert_id))


def _focused(ctx: Ctx, raw_id: str) -> None:
    try:
        alert = ctx.room.alert(ctx.user, int(raw_id))
    except (ValueError, InvalidValue):
        st.warning(ctx.t("al.not_found", id=raw_id))
        return
    with st.container(border=True, key="focused_alert"):
        st.markdown(ctx.t("al.focus", id=alert.alert_id))
        st.text(ctx.room.alert_text(alert, ctx.lang))
        st.caption(ctx.t("al.lifecycle", fired=fmt_ts(alert.occurred_ts), status=ctx.t(f"gd.outbox_{alert.status}"),
                         delivered=fmt_ts(alert.delivered_ts), acked=fmt_ts(alert.acked_ts),
                         by=alert.acked_by or "—", resolved=fmt_ts(alert.resolved_ts)))
        c1, c2 = st.columns(2)
        if alert.acked_ts is None and c1.button(ctx.t("board.ack"), key="focus_ack", type="primary"):
            attempt(ctx, lambda: ctx.room.acknowledge_alert(ctx.user, alert.alert_id),
                    ctx.t("board.acked", id=alert.alert_id))
        if alert.campaign_id and c2.button(ctx.t("al.explain", campaign=alert.campaign_id), key="focus_explain"):
            goto("explorer", explore_campaign=alert.campaign_id, explore_bucket=alert.occurred_ts)


def _dead(ctx: Ctx) -> None:
    dead = ctx.room.dead_alerts(ctx.user)
    if not dead:
        return
    st.subheader(ctx.t("al.dead", n=len(dead)))
    for a in dead:
        st.error(ctx.t("al.dead_line", id=a.alert_id, title=title(ctx, a.kind), channel=a.channel,
                       campaign=a.campaign_id or "—", error=a.last_error))
    if st.button(ctx.t("al.resend"), key="resend_dead"):
        attempt(ctx, lambda: ctx.room.resend_dead_alerts(ctx.user, [a.alert_id for a in dead]),
                ctx.t("al.resent", n=len(dead)))
