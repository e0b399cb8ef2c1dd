"""Stress test (压力测试): replay a promotion against a model version before launch.

The runner is the simulator's stress runner (sim helper), not in this build yet:
the page says so instead of pretending.
"""

from __future__ import annotations

import streamlit as st

from panel.ui import Ctx


def render(ctx: Ctx) -> None:
    st.header(ctx.t("page.stress"))
    st.warning(ctx.t("st.not_wired"))
