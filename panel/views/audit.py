"""Audit (审计): the hash-chained log in words, filterable, with its chain status and a CSV export.

Each entry is said as what happened (the action by its name, what it changed in
a sentence); the CSV export keeps the documents as recorded, for machines (EXPORT;
audited, stamped with who and when).
"""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app.service import SYSTEM_ACTOR
from control.domain import AuditEntry
from control.permissions import Action
from panel.ui import Ctx, fmt_num, fmt_ts


def actor_name(ctx: Ctx, actor: str) -> str:
    return ctx.t("au.system") if actor == SYSTEM_ACTOR else actor


def action_name(ctx: Ctx, action: str) -> str:
    key = f"audit.{action}"
    return ctx.t(key) if ctx.has(key) else ctx.t("audit.other")


def _override(ctx: Ctx, e: AuditEntry) -> str:
    after = e.after or {}
    before = (e.before or {}).get("status")
    field = after.get("field", "")
    value = after.get("value")
    amount = (ctx.t("ov.on") if value == 1.0 else ctx.t("ov.off")) if field == "audience_on" else fmt_num(value)
    text = ctx.t("audit.d_override", id=e.entity_id, campaign=after.get("campaign_id", "—"),
                 field=ctx.t(f"field.{field}") if ctx.has(f"field.{field}") else "—", value=amount,
                 status=ctx.t(f"status.{after.get('status')}") if ctx.has(f"status.{after.get('status')}") else "—")
    if before and before != after.get("status"):
        text = ctx.t("audit.d_from", before=ctx.t(f"status.{before}"), text=text)
    comment = after.get("review_comment") or after.get("reason") or ""
    return text + (ctx.t("audit.d_reason", reason=comment) if comment else "")


def detail(ctx: Ctx, e: AuditEntry) -> str:
    """What an entry changed, in a sentence (never the raw document)."""
    after = e.after or {}
    if e.entity == "override":
        return _override(ctx, e)
    if e.entity == "kill_switch":
        scope = ctx.t("audit.d_global") if e.entity_id == "*" else e.entity_id
        on = after.get("global") if e.entity_id == "*" else e.entity_id in (after.get("campaigns") or [])
        return ctx.t("audit.d_kill", scope=scope, state=ctx.t("audit.d_on" if on else "audit.d_off"),
                     reason=after.get("reason", "—"))
    if e.entity == "user":
        role = after.get("role")
        if role:
            return ctx.t("audit.d_user", user=e.entity_id, role=ctx.t(f"role.{role}"))
        return ctx.t("audit.d_locked", user=e.entity_id, until=fmt_ts(after.get("locked_until_ts")))
    if e.entity == "promotion":
        return ctx.t("audit.d_day", rows=fmt_num((e.before or {}).get("rows_cleared"), 0), reason=after.get("reason", "—"))
    if e.entity == "guard":
        guard, _, campaign = e.entity_id.partition(":")
        key = f"gd.th_guard_{guard}"
        return ctx.t("audit.d_guard", guard=ctx.t(key) if ctx.has(key) else ctx.t("gd.guard"), campaign=campaign,
                     reason=after.get("reason") or "—")
    if e.entity == "alert":
        return ctx.t("audit.d_alert", id=e.entity_id)
    if e.entity == "rule_pool":
        return ctx.t("audit.d_pool", version=e.entity_id)
    if e.entity == "guard_thresholds":
        guard, _, campaign = e.entity_id.partition(":")
        key = f"gd.th_guard_{guard}"
        return ctx.t("audit.d_thresholds", guard=ctx.t(key) if ctx.has(key) else ctx.t("gd.guard"),
                     scope=ctx.t("gd.th_scope_all") if campaign in ("", "*") else campaign,
                     reason=after.get("reason") or "—")
    return "—"


def render(ctx: Ctx) -> None:
    st.header(ctx.t("page.audit"))
    report, entries = ctx.room.audit_trail(ctx.user)
    if report.ok:
        st.success(ctx.t("au.chain_ok", n=report.entries))
    else:
        st.error(ctx.t("au.chain_broken", id=report.first_broken_id, problem=ctx.t(f"au.problem_{report.code}")))
    frame = pd.DataFrame([{"entry_id": e.entry_id, "ts": e.ts, "actor": e.actor, "action": e.action,
                           "entity": e.entity, "entity_id": e.entity_id, "detail": detail(ctx, e),
                           "before": json.dumps(e.before, ensure_ascii=False) if e.before is not None else "",
                           "after": json.dumps(e.after, ensure_ascii=False) if e.after is not None else "",
                           "hash": e.hash} for e in entries],
                         columns=["entry_id", "ts", "actor", "action", "entity", "entity_id", "detail", "before",
                                  "after", "hash"])
    c1, c2, c3 = st.columns(3)
    actors = c1.multiselect(ctx.t("au.actor"), sorted(frame["actor"].unique()), key="au_actor",
                            placeholder=ctx.t("app.choose"), format_func=lambda a: actor_name(ctx, a))
    actions = c2.multiselect(ctx.t("au.action"), sorted(frame["action"].unique()), key="au_action",
                             placeholder=ctx.t("app.choose"), format_func=lambda a: action_name(ctx, a))
    text = c3.text_input(ctx.t("au.search"), key="au_search")
    if actors:
        frame = frame[frame["actor"].isin(actors)]
    if actions:
        frame = frame[frame["action"].isin(actions)]
    if text:
        hay = frame["entity_id"] + " " + frame["detail"] + " " + frame["before"] + " " + frame["after"]
        frame = frame[hay.str.contains(text, case=False, regex=False)]
    frame = frame.sort_values("entry_id", ascending=False)
    st.caption(ctx.t("au.count", n=len(frame)))
    st.dataframe(pd.DataFrame({
        "#": frame["entry_id"], ctx.t("au.time"): frame["ts"].map(fmt_ts),
        ctx.t("au.actor"): frame["actor"].map(lambda a: actor_name(ctx, a)),
        ctx.t("au.action"): frame["action"].map(lambda a: action_name(ctx, a)),
        ctx.t("au.detail"): frame["detail"], ctx.t("au.hash"): frame["hash"],
    }), hide_index=True, height=480, key="au_table",
        column_config={ctx.t("au.detail"): st.column_config.TextColumn(width="large"),
                       ctx.t("au.hash"): st.column_config.TextColumn(width="large")})
    st.caption(ctx.t("au.hash_help"))
    if ctx.may(Action.EXPORT):
        # Made when clicked: the core checks EXPORT, stamps the file with who and when, and audits it.
        filters = {"actors": actors, "actions": actions, "search": text}
        st.download_button(ctx.t("au.csv"), lambda: ctx.room.export_audit_csv(ctx.user, frame.drop(columns=["detail"]),
                                                                                ctx.lang, filters),
                           file_name=f"bidlens-audit-{ctx.user.username}.csv", mime="text/csv", key="au_csv")
