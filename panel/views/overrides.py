"""Overrides (人工干预): propose with bounds and the model's view beside, approval queue, active ones.

Everything goes through app.service.Control, which enforces roles, the
four-eyes rule, bounds and versions; the page shows its refusals in words.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import board
from control.domain import OverrideField, OverrideStatus
from panel.ui import Ctx, attempt, fmt_left, fmt_num, fmt_ts, page_start

ALL_PACKAGES = "*"


def _seen_keys(o) -> tuple[str, ...]:
    return (f"ov_seen_q_{o.override_id}", f"ov_seen_a_{o.override_id}")


def _stale(section: str, current: list) -> list:
    """Overrides this user was shown in `section` that have left it since (changed by someone else):
    kept on screen, with the change named, until the user reloads."""
    prefix = f"ov_seen_{section}_"
    shown = {o.override_id for o in current}
    ids = [int(k[len(prefix):]) for k in st.session_state if str(k).startswith(prefix)]
    return [i for i in sorted(ids) if i not in shown]


def render(ctx: Ctx) -> None:
    newest = ctx.room.latest_bucket(ctx.user)
    if not page_start(ctx, "overrides", newest):
        return
    slots = ctx.room.slots(ctx.user, newest)
    queue = ctx.room.overrides(ctx.user, [OverrideStatus.PROPOSED])
    queue += _load(ctx, _stale("q", queue))
    tabs = st.tabs([ctx.t("ov.tab_propose"), ctx.t("ov.tab_queue", n=len(queue)), ctx.t("ov.tab_active")])
    with tabs[0]:
        _propose(ctx, slots, newest)
    with tabs[1]:
        _queue(ctx, queue, slots, newest)
    with tabs[2]:
        _active(ctx)


def _scope_slots(slots: pd.DataFrame, campaign_id: str, package: str | None) -> pd.DataFrame:
    scope = slots[slots["campaign_id"] == campaign_id]
    return scope if package is None else scope[scope["audience_package"] == package]


def _model_side(ctx: Ctx, scope: pd.DataFrame, campaign_id: str, package: str | None, newest: int) -> None:
    """The model's decision for the scope and the top reasons for it (its stored explanation)."""
    st.markdown(ctx.t("ov.model_now", bid=fmt_num(scope["model_bid"].mean(), 3),
                      roi=fmt_num(scope["pred_roi"].mean()), on=int(scope["audience_on"].sum()),
                      n=len(scope)))
    pick = package or (scope.sort_values("pred_roi")["audience_package"].iloc[0] if len(scope) else None)
    if pick is None:
        return
    why = ctx.room.decision_reasons(ctx.user, campaign_id, pick, newest, ctx.lang)
    if why is None:
        st.caption(ctx.t("ex.no_explanation"))
        return
    st.caption(ctx.t("ov.why", package=pick))
    for line in why.reasons:
        st.markdown(f"- {line}")


def _load(ctx: Ctx, ids: list[int]) -> list:
    return [ctx.room.override(ctx.user, i) for i in ids]


def _propose(ctx: Ctx, slots: pd.DataFrame, newest: int) -> None:
    campaigns = ctx.room.campaigns(ctx.user)
    packages = ctx.room.packages(ctx.user)
    left, right = st.columns([3, 2])
    with left:
        campaign_id = st.selectbox(ctx.t("ov.campaign"), sorted(campaigns), key="ov_campaign",
                                   index=_index(sorted(campaigns), st.session_state.get("explore_campaign")),
                                   format_func=lambda c: f"{c} · {campaigns[c].name}")
        package = st.selectbox(ctx.t("ov.package"), [ALL_PACKAGES, *sorted(packages)], key="ov_package",
                               format_func=lambda p: ctx.t("ov.all_packages") if p == ALL_PACKAGES
                               else packages[p][0 if ctx.lang == "zh" else 1])
        field = st.selectbox(ctx.t("ov.field"), list(OverrideField), key="ov_field",
                             format_func=lambda f: ctx.t(f"field.{f.value}"))
        scope_pkg = None if package == ALL_PACKAGES else package
        scope = _scope_slots(slots, campaign_id, scope_pkg)
        campaign = campaigns[campaign_id]
        bounds = ctx.room.control.bounds
        form = ctx.room.override_form(ctx.user, campaign_id, scope_pkg, field)
        if field is OverrideField.BID:
            st.caption(ctx.t("ov.bounds_bid", lo=form.low, hi=fmt_num(form.high, 3),
                             mult=bounds.max_bid_multiple, cap=bounds.max_bid_abs))
        elif field is OverrideField.BUDGET:
            st.caption(ctx.t("ov.bounds_budget", cap=fmt_num(form.high, 0)))
        else:
            st.caption(ctx.t("ov.bounds_audience"))
        value = st.number_input(ctx.t("ov.value"), value=float(form.default), step=0.01, format="%.3f",
                                key=f"ov_value_{field.value}")
        hours = st.number_input(ctx.t("ov.hours"), min_value=1, max_value=24 * 30, value=4, key="ov_hours")
        reason = st.text_input(ctx.t("ov.reason"), key="ov_reason")
        effect = board.predicted_effect(field, value, slots[slots["campaign_id"] == campaign_id], scope_pkg,
                                        campaign.daily_budget)
        st.caption(ctx.t("ov.effect") + " " + _effect_text(ctx, field, effect))
        if st.button(ctx.t("ov.submit"), type="primary", key="ov_submit"):
            attempt(ctx, lambda: ctx.control.propose_override(
                ctx.user, campaign_id=campaign_id, audience_package=scope_pkg, field=field, value=float(value),
                reason=reason, expires_ts=ctx.control.clock() + int(hours) * 3600), ctx.t("ov.proposed"))
    with right:
        st.subheader(ctx.t("ov.model_side"))
        _model_side(ctx, scope, campaign_id, scope_pkg, newest)


def _effect_text(ctx: Ctx, field: OverrideField, effect: dict) -> str:
    if field is OverrideField.BID:
        return ctx.t("ov.effect_bid", old=fmt_num(effect["model_bid"], 3), new=fmt_num(effect["new_bid"], 3),
                     roi_old=fmt_num(effect["pred_roi_model"]), roi_new=fmt_num(effect["pred_roi_new"]))
    if field is OverrideField.BUDGET:
        return ctx.t("ov.effect_budget", old=fmt_num(effect["daily_budget"], 0),
                     new=fmt_num(effect["new_budget"], 0), pct=fmt_num(effect["change"] * 100, 0))
    return ctx.t("ov.effect_audience", n=int(effect["packages"]), roi=fmt_num(effect["pred_roi_model"]),
                 on=ctx.t("ov.on") if effect["audience_on"] else ctx.t("ov.off"))


def _index(options: list, value) -> int:
    return options.index(value) if value in options else 0


def _describe(ctx: Ctx, o, packages: dict) -> str:
    pkg = ctx.t("ov.all_packages") if o.scope.audience_package is None else o.scope.audience_package
    return ctx.t("ov.line", id=o.override_id, campaign=o.scope.campaign_id, package=pkg,
                 field=ctx.t(f"field.{o.field.value}"), value=fmt_num(o.value, 3), who=o.proposed_by,
                 until=fmt_ts(o.expires_ts), reason=o.reason)


def _seen_version(ctx: Ctx, o, section: str) -> int:
    """The version this user was shown; acting on it makes a change by someone else a conflict."""
    key = f"ov_seen_{section}_{o.override_id}"
    seen = st.session_state.setdefault(key, o.version)
    if seen != o.version:
        st.warning(ctx.t("ov.changed", id=o.override_id, status=o.status.value, who=o.reviewed_by or o.proposed_by))
        if st.button(ctx.t("ov.reload"), key=f"ov_reload_{o.override_id}"):
            del st.session_state[key]
            st.rerun()
    return seen


def _queue(ctx: Ctx, queue: list, slots: pd.DataFrame, newest: int) -> None:
    if not queue:
        st.caption(ctx.t("ov.queue_empty"))
        return
    campaigns = ctx.room.campaigns(ctx.user)
    packages = ctx.room.packages(ctx.user)
    for o in queue:
        with st.container(border=True):
            st.markdown(_describe(ctx, o, packages))
            seen = _seen_version(ctx, o, "q")
            left, right = st.columns([3, 2])
            with left:
                campaign = campaigns.get(o.scope.campaign_id)
                effect = board.predicted_effect(o.field, o.value, slots[slots["campaign_id"] == o.scope.campaign_id],
                                                o.scope.audience_package, campaign.daily_budget if campaign else 0.0)
                st.caption(ctx.t("ov.effect") + " " + _effect_text(ctx, o.field, effect))
                comment = st.text_input(ctx.t("ov.comment"), key=f"ov_comment_{o.override_id}")
                b1, b2, b3 = st.columns(3)
                if b1.button(ctx.t("ov.approve"), key=f"ov_approve_{o.override_id}", type="primary"):
                    attempt(ctx, lambda o=o, c=comment, v=seen: ctx.control.approve_override(ctx.user, o.override_id, v, c),
                            ctx.t("ov.approved", id=o.override_id), forget=_seen_keys(o))
                if b2.button(ctx.t("ov.reject"), key=f"ov_reject_{o.override_id}"):
                    attempt(ctx, lambda o=o, c=comment, v=seen: ctx.control.reject_override(ctx.user, o.override_id, v, c),
                            ctx.t("ov.rejected", id=o.override_id), forget=_seen_keys(o))
                if b3.button(ctx.t("ov.withdraw"), key=f"ov_withdraw_{o.override_id}"):
                    attempt(ctx, lambda o=o, c=comment, v=seen: ctx.control.revoke_override(ctx.user, o.override_id, v, c),
                            ctx.t("ov.revoked", id=o.override_id), forget=_seen_keys(o))
            with right:
                _model_side(ctx, _scope_slots(slots, o.scope.campaign_id, o.scope.audience_package),
                            o.scope.campaign_id, o.scope.audience_package, newest)


def _active(ctx: Ctx) -> None:
    now = ctx.control.clock()
    live = [o for o in ctx.room.overrides(ctx.user, [OverrideStatus.APPROVED]) if o.in_force(now)]
    live += _load(ctx, _stale("a", live))
    if not live:
        st.caption(ctx.t("ov.none_active"))
        return
    packages = ctx.room.packages(ctx.user)
    for o in live:
        with st.container(border=True):
            st.markdown(_describe(ctx, o, packages))
            seen = _seen_version(ctx, o, "a")
            st.caption(ctx.t("ov.approved_by", who=o.reviewed_by, ts=fmt_ts(o.reviewed_ts),
                             left=fmt_left(ctx, o.expires_ts - now), comment=o.review_comment or "—"))
            comment = st.text_input(ctx.t("ov.comment"), key=f"ov_revoke_comment_{o.override_id}")
            if st.button(ctx.t("ov.revoke"), key=f"ov_revoke_{o.override_id}"):
                attempt(ctx, lambda o=o, c=comment, v=seen: ctx.control.revoke_override(ctx.user, o.override_id, v, c),
                        ctx.t("ov.revoked", id=o.override_id), forget=_seen_keys(o))
