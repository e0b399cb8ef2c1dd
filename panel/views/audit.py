"""Audit (审计): the hash-chained log, filterable, with its chain status and a CSV export (EXPORT; audited)."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from control.permissions import Action
from panel.ui import Ctx, fmt_ts


def render(ctx: Ctx) -> None:
    st.header(ctx.t("page.audit"))
    report, entries = ctx.room.audit_trail(ctx.user)
    if report.ok:
        st.success(ctx.t("au.chain_ok", n=report.entries))
    else:
        st.error(ctx.t("au.chain_broken", id=report.first_broken_id, problem=report.problem))
    frame = pd.DataFrame([{"entry_id": e.entry_id, "ts": e.ts, "time": fmt_ts(e.ts), "actor": e.actor,
                           "action": e.action, "entity": e.entity, "entity_id": e.entity_id,
                           "before": json.dumps(e.before, ensure_ascii=False) if e.before is not None else "",
                           "after": json.dumps(e.after, ensure_ascii=False) if e.after is not None else "",
                           "hash": e.hash} for e in entries],
                         columns=["entry_id", "ts", "time", "actor", "action", "entity", "entity_id", "before",
                                  "after", "hash"])
    c1, c2, c3 = st.columns(3)
    actors = c1.multiselect(ctx.t("au.actor"), sorted(frame["actor"].unique()), key="au_actor")
    actions = c2.multiselect(ctx.t("au.action"), sorted(frame["action"].unique()), key="au_action")
    text = c3.text_input(ctx.t("au.search"), key="au_search")
    if actors:
        frame = frame[frame["actor"].isin(actors)]
    if actions:
        frame = frame[frame["action"].isin(actions)]
    if text:
        hay = frame["entity_id"] + " " + frame["before"] + " " + frame["after"]
        frame = frame[hay.str.contains(text, case=False, regex=False)]
    frame = frame.sort_values("entry_id", ascending=False)
    st.caption(ctx.t("au.count", n=len(frame)))
    st.dataframe(frame.drop(columns=["ts"]), hide_index=True, height=480)
    if ctx.may(Action.EXPORT):
        # Made when clicked: the core checks EXPORT, stamps the file with who and when, and audits it.
        filters = {"actors": actors, "actions": actions, "search": text}
        st.download_button(ctx.t("au.csv"), lambda: ctx.room.export_audit_csv(ctx.user, frame, ctx.lang, filters),
                           file_name=f"bidlens-audit-{ctx.user.username}.csv", mime="text/csv", key="au_csv")
