"""Overrides (人工干预): propose from what is served now, approval queue, overrides in force, one's own.

Everything goes through app.service.Control, which enforces roles, the
four-eyes rule, bounds and versions. The form checks what is typed as the core
will (control.overrides.check_proposal) and says what is wrong in the user's
language before it can be submitted; nothing typed is replaced by anything
else. The chosen tab stays chosen after an action.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from control.domain import OverrideField, OverrideStatus
from control.permissions import Action
from panel.ui import Ctx, attempt, decided_by_label, fmt_left, fmt_num, fmt_ts, invalid_text, page_start

ALL_PACKAGES = "*"
TABS = ("propose", "queue", "active", "mine")
DIGITS = {OverrideField.BID: 2, OverrideField.BUDGET: 0, OverrideField.AUDIENCE_ON: 0}


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
    queue = ctx.room.overrides(ctx.user, [OverrideStatus.PROPOSED])
    queue += _load(ctx, _stale("q", queue))
    shown = [t for t in TABS if t != "propose" or ctx.may(Action.PROPOSE_OVERRIDE)]
    # Keyed, with labels that do not change with the data: the tab a person acted in is still open after
    # the action's rerun (a count in the label would name another tab once it changed).
    tabs = dict(zip(shown, st.tabs([ctx.t(f"ov.tab_{t}") for t in shown], key="ov_tab", on_change="rerun"),
                    strict=True))
    if "propose" in tabs:
        with tabs["propose"]:
            _propose(ctx, newest)
    with tabs["queue"]:
        _queue(ctx, queue, newest)
    with tabs["active"]:
        _active(ctx)
    with tabs["mine"]:
        _mine(ctx)


def _load(ctx: Ctx, ids: list[int]) -> list:
    return [ctx.room.override(ctx.user, i) for i in ids]


def package_name(ctx: Ctx, code: str | None) -> str:
    if code is None:
        return ctx.t("ov.all_packages")
    names = ctx.room.packages(ctx.user).get(code)
    return code if names is None else names[0 if ctx.lang == "zh" else 1]


def _amount(ctx: Ctx, field: OverrideField, value: float) -> str:
    if field is OverrideField.AUDIENCE_ON:
        return ctx.t("ov.on") if value == 1.0 else ctx.t("ov.off")
    return ctx.t(f"ov.amount_{field.value}", value=fmt_num(value, DIGITS[field]))


def _served_text(ctx: Ctx, form) -> str:
    now = form.now
    return ctx.t("ov.served_now", value=_amount(ctx, now.field, now.value), who=decided_by_label(ctx, now.decided_by),
                 on=now.packages_on, n=now.packages)


def _effect(ctx: Ctx, form, effect) -> None:
    """Served → proposed with the model's predicted ROI of each; a warning when the proposal falls below
    the campaign's ROI floor."""
    field = form.now.field
    text = ctx.t("ov.effect_line", old=_amount(ctx, field, effect.served), new=_amount(ctx, field, effect.proposed))
    if field is OverrideField.BID:
        text += ctx.t("ov.effect_roi", old=fmt_num(effect.pred_roi_served), new=fmt_num(effect.pred_roi_proposed))
    elif field is OverrideField.BUDGET:
        text += ctx.t("ov.effect_change", pct=fmt_num(effect.change * 100, 0, signed=True))
    else:
        text += ctx.t("ov.effect_packages", n=form.now.packages, roi=fmt_num(effect.pred_roi_served))
    st.markdown(ctx.t("ov.effect") + " " + text)
    if field is OverrideField.BID and effect.pred_roi_proposed < form.floor:
        st.warning(ctx.t("ov.below_floor", roi=fmt_num(effect.pred_roi_proposed), floor=fmt_num(form.floor)))


def value_key(field: OverrideField, campaign_id: str, package: str | None) -> str:
    """Each scope and field keeps what was typed for it (and a CSS class a browser test can find)."""
    return f"ov_value_{field.value}_{campaign_id}_{package or 'all'}"


def _propose(ctx: Ctx, newest: int) -> None:
    campaigns = ctx.room.campaigns(ctx.user)
    packages = ctx.room.packages(ctx.user)
    left, right = st.columns([3, 2])
    with left:
        ids = sorted(campaigns)
        campaign_id = st.selectbox(ctx.t("ov.campaign"), ids, key="ov_campaign",
                                   index=_index(ids, st.session_state.get("explore_campaign")),
                                   format_func=lambda c: f"{c} · {campaigns[c].name}")
        package = st.selectbox(ctx.t("ov.package"), [ALL_PACKAGES, *sorted(packages)], key="ov_package",
                               format_func=lambda p: package_name(ctx, None if p == ALL_PACKAGES else p))
        field = st.selectbox(ctx.t("ov.field"), list(OverrideField), key="ov_field",
                             format_func=lambda f: ctx.t(f"field.{f.value}"))
        scope_pkg = None if package == ALL_PACKAGES else package
        form = ctx.room.override_form(ctx.user, campaign_id, scope_pkg, field)
        st.markdown(_served_text(ctx, form))
        if field is OverrideField.BID:
            st.caption(ctx.t("ov.bounds_bid", lo=fmt_num(form.low), hi=fmt_num(form.high),
                             mult=f"{ctx.control.bounds.max_bid_multiple:g}", cap=fmt_num(ctx.control.bounds.max_bid_abs)))
        elif field is OverrideField.BUDGET:
            st.caption(ctx.t("ov.bounds_budget", cap=fmt_num(form.high, 0)))
        else:
            st.caption(ctx.t("ov.bounds_audience"))
        # The start is what is served now; each scope and field keeps what was typed for it.
        start = f"{form.default:.{DIGITS[field]}f}"
        value_text = st.text_input(ctx.t("ov.value"), value=start,
                                   key=value_key(field, campaign_id, scope_pkg))
        slots = {"value": st.empty()}
        hours_text = st.text_input(ctx.t("ov.hours"), value="4", key="ov_hours")
        slots["hours"] = st.empty()
        reason = st.text_input(ctx.t("ov.reason"), key="ov_reason")
        slots["reason"] = st.empty()
        check = ctx.room.check_proposal(ctx.user, form, campaign_id, field, value_text, hours_text, reason)
        for problem in check.problems:
            if problem.field == "reason" and not reason:  # not wrong yet, only not written
                slots["reason"].caption(ctx.t("ov.reason_needed"))
            else:
                slots[problem.field].error(invalid_text(ctx, problem))
        if check.value is not None:
            _effect(ctx, form, ctx.room.proposal_effect(ctx.user, form, campaign_id, scope_pkg, check.value))
        if st.button(ctx.t("ov.submit"), type="primary", key="ov_submit", disabled=not check.ok):
            attempt(ctx, lambda: ctx.control.propose_override(
                ctx.user, campaign_id=campaign_id, audience_package=scope_pkg, field=field, value=check.value,
                reason=reason, expires_ts=ctx.control.clock() + check.hours * 3600), ctx.t("ov.proposed"),
                forget=("ov_reason", value_key(field, campaign_id, scope_pkg)))
    with right:
        st.subheader(ctx.t("ov.model_side"))
        _model_side(ctx, campaign_id, scope_pkg, newest)


def _model_side(ctx: Ctx, campaign_id: str, package: str | None, newest: int) -> None:
    """The model's decision for the scope and the top reasons for it (its stored explanation)."""
    slots = ctx.room.slots(ctx.user, newest)
    scope = slots[slots["campaign_id"] == campaign_id]
    if package is not None:
        scope = scope[scope["audience_package"] == package]
    st.markdown(ctx.t("ov.model_now", bid=fmt_num(scope["model_bid"].mean()), roi=fmt_num(scope["pred_roi"].mean()),
                      on=int(scope["audience_on"].sum()), n=len(scope)))
    pick = package or (scope.sort_values("pred_roi")["audience_package"].iloc[0] if len(scope) else None)
    if pick is None:
        return
    said = ctx.room.decision_reasons(ctx.user, campaign_id, pick, newest, ctx.lang)  # in words for everyone
    if said is None:
        st.caption(ctx.t("ex.no_explanation"))
        return
    st.caption(ctx.t("ov.why", package=package_name(ctx, pick)))
    for line in said.reasons:
        st.markdown(f"- {line}")


def _index(options: list, value) -> int:
    return options.index(value) if value in options else 0


def _describe(ctx: Ctx, o) -> str:
    campaign = ctx.room.campaigns(ctx.user).get(o.scope.campaign_id)
    return ctx.t("ov.line", id=o.override_id, campaign=o.scope.campaign_id, name=campaign.name if campaign else "",
                 package=package_name(ctx, o.scope.audience_package), field=ctx.t(f"field.{o.field.value}"),
                 value=_amount(ctx, o.field, o.value), who=o.proposed_by, reason=o.reason)


def _seen_version(ctx: Ctx, o, section: str) -> int:
    """The version this user was shown; acting on it makes a change by someone else a conflict."""
    key = f"ov_seen_{section}_{o.override_id}"
    seen = st.session_state.setdefault(key, o.version)
    if seen != o.version:
        st.warning(ctx.t("ov.changed", id=o.override_id, status=ctx.t(f"status.{o.status.value}"),
                         who=o.reviewed_by or o.proposed_by))
        if st.button(ctx.t("ov.reload"), key=f"ov_reload_{o.override_id}"):
            del st.session_state[key]
            st.rerun()
    return seen


def _queue(ctx: Ctx, queue: list, newest: int) -> None:
    if not queue:
        st.caption(ctx.t("ov.queue_empty"))
        return
    st.caption(ctx.t("ov.queue_count", n=len(queue)))
    now = ctx.control.clock()
    approver = ctx.may(Action.APPROVE_OVERRIDE)
    for o in queue:
        with st.container(border=True):
            st.markdown(_describe(ctx, o))
            seen = _seen_version(ctx, o, "q")
            left, right = st.columns([3, 2])
            with left:
                if o.status is OverrideStatus.PROPOSED:
                    form = ctx.room.override_form(ctx.user, o.scope.campaign_id, o.scope.audience_package, o.field)
                    st.caption(_served_text(ctx, form))
                    _effect(ctx, form, ctx.room.proposal_effect(ctx.user, form, o.scope.campaign_id,
                                                                 o.scope.audience_package, o.value))
                    st.caption(ctx.t("ov.decides", who=o.proposed_by, left=fmt_left(ctx, o.expires_ts - now),
                                     until=fmt_ts(o.expires_ts)))
                comment = st.text_input(ctx.t("ov.comment"), key=f"ov_comment_{o.override_id}")
                b1, b2, b3 = st.columns(3)
                if approver and b1.button(ctx.t("ov.approve"), key=f"ov_approve_{o.override_id}", type="primary"):
                    attempt(ctx, lambda o=o, c=comment, v=seen: ctx.control.approve_override(ctx.user, o.override_id, v, c),
                            ctx.t("ov.approved", id=o.override_id), forget=_seen_keys(o))
                if approver and b2.button(ctx.t("ov.reject"), key=f"ov_reject_{o.override_id}"):
                    attempt(ctx, lambda o=o, c=comment, v=seen: ctx.control.reject_override(ctx.user, o.override_id, v, c),
                            ctx.t("ov.rejected", id=o.override_id), forget=_seen_keys(o))
                if (o.proposed_by == ctx.user.username or ctx.may(Action.REVOKE_OVERRIDE)) and \
                        b3.button(ctx.t("ov.withdraw"), key=f"ov_withdraw_{o.override_id}"):
                    attempt(ctx, lambda o=o, c=comment, v=seen: ctx.control.revoke_override(ctx.user, o.override_id, v, c),
                            ctx.t("ov.revoked", id=o.override_id), forget=_seen_keys(o))
            with right:
                _model_side(ctx, o.scope.campaign_id, o.scope.audience_package, newest)


def _active(ctx: Ctx) -> None:
    now = ctx.control.clock()
    live = [o for o in ctx.room.overrides(ctx.user, [OverrideStatus.APPROVED]) if o.in_force(now)]
    live += _load(ctx, _stale("a", live))
    if not live:
        st.caption(ctx.t("ov.none_active"))
        return
    for o in live:
        with st.container(border=True):
            st.markdown(_describe(ctx, o))
            seen = _seen_version(ctx, o, "a")
            st.caption(ctx.t("ov.approved_by", who=o.reviewed_by, ts=fmt_ts(o.reviewed_ts),
                             left=fmt_left(ctx, o.expires_ts - now), comment=o.review_comment or "—"))
            if not ctx.may(Action.REVOKE_OVERRIDE):
                continue
            comment = st.text_input(ctx.t("ov.comment"), key=f"ov_revoke_comment_{o.override_id}")
            if st.button(ctx.t("ov.revoke"), key=f"ov_revoke_{o.override_id}"):
                attempt(ctx, lambda o=o, c=comment, v=seen: ctx.control.revoke_override(ctx.user, o.override_id, v, c),
                        ctx.t("ov.revoked", id=o.override_id), forget=_seen_keys(o))


def outcome_text(ctx: Ctx, o) -> str:
    """What became of a proposal, for the person who made it."""
    if o.status is OverrideStatus.EXPIRED:
        key = "ov.outcome_ended" if o.reviewed_by else "ov.outcome_expired"
    else:
        key = f"ov.outcome_{o.status.value}"
    return ctx.t(key, id=o.override_id, campaign=o.scope.campaign_id, field=ctx.t(f"field.{o.field.value}"),
                 value=_amount(ctx, o.field, o.value), who=o.reviewed_by or "—",
                 ts=fmt_ts(o.reviewed_ts or o.expires_ts), comment=o.review_comment or "—")


def _mine(ctx: Ctx) -> None:
    mine = ctx.room.my_proposals(ctx.user)
    if not mine:
        st.caption(ctx.t("ov.mine_empty"))
        return
    st.dataframe(pd.DataFrame({
        "#": [o.override_id for o in mine],
        ctx.t("ov.campaign"): [o.scope.campaign_id for o in mine],
        ctx.t("ov.package"): [package_name(ctx, o.scope.audience_package) for o in mine],
        ctx.t("ov.field"): [ctx.t(f"field.{o.field.value}") for o in mine],
        ctx.t("ov.value"): [_amount(ctx, o.field, o.value) for o in mine],
        ctx.t("ov.status"): [ctx.t(f"status.{o.status.value}") for o in mine],
        ctx.t("ov.reviewed_by"): [o.reviewed_by or "—" for o in mine],
        ctx.t("ov.when"): [fmt_ts(o.reviewed_ts or o.proposed_ts) for o in mine],
        ctx.t("ov.comment"): [o.review_comment or "—" for o in mine],
    }), hide_index=True, key="ov_mine")


def notices(ctx: Ctx) -> None:
    """On every page, until dismissed: what became of this person's proposals (decided or expired) in the
    last day, so a proposer is told without watching the queue."""
    dismissed = st.session_state.setdefault("ov_dismissed", set())
    news = [o for o in ctx.room.proposal_outcomes(ctx.user) if o.override_id not in dismissed]
    if not news:
        return
    for o in news:
        (st.success if o.status is OverrideStatus.APPROVED else st.info)(outcome_text(ctx, o))
    if st.button(ctx.t("ov.dismiss"), key="ov_dismiss"):
        dismissed.update(o.override_id for o in news)
        st.rerun()
