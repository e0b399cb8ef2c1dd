"""BidLens panel: `streamlit run panel/app.py`.

`main()` is the router: login (against the store's users; lockout is the
core's), session timeout, language, the sidebar, and the pages the user's role
may see. Every read and action on a page goes through the control room
(app.room), which checks permissions in the core; the pages only show what it says.

Tests call `main(room=..., session_clock=...)` with a store and clocks of their own.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import streamlit as st

if __package__ in (None, ""):  # `streamlit run panel/app.py` puts panel/ on the path, not the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.room import ControlRoom  # noqa: E402
from app.service import Control, LoginFailed  # noqa: E402
from app.wiring import control_room, open_control  # noqa: E402
from control.permissions import Action  # noqa: E402
from panel.i18n import LANGUAGES, translate  # noqa: E402
from panel.ui import Ctx, Session, check_session, end_session, fmt_ts, show_flash  # noqa: E402
from panel.views import alerts, audit, explorer, guards, launch, live, overrides, review, stress  # noqa: E402
from panel.views.live import DEFAULT_REFRESH_S  # noqa: E402

# page key -> (module, the action a role needs to see it)
PAGES = {
    "board": (live, Action.VIEW),
    "explorer": (explorer, Action.VIEW),
    "overrides": (overrides, None),  # proposers and approvers
    "guards": (guards, Action.VIEW),
    "alerts": (alerts, Action.VIEW),
    "audit": (audit, Action.VIEW_AUDIT),
    "stress": (stress, Action.RUN_STRESS_TEST),
    "review": (review, Action.VIEW),
    "launch": (launch, Action.VIEW),  # everyone sees the versions; actions by role (hidden, and the core refuses)
}
ICONS = {"board": ":material/monitoring:", "explorer": ":material/query_stats:",
         "overrides": ":material/pan_tool:", "guards": ":material/shield:",
         "alerts": ":material/notifications:", "audit": ":material/history:",
         "stress": ":material/science:", "review": ":material/event_note:",
         "launch": ":material/rocket_launch:"}


def _visible(ctx: Ctx, key: str) -> bool:
    if key == "overrides":
        return ctx.may(Action.PROPOSE_OVERRIDE) or ctx.may(Action.APPROVE_OVERRIDE)
    return ctx.may(PAGES[key][1])


def _lang() -> str:
    return st.session_state.get("lang", "zh")


def _language_switch() -> None:
    # The choice lives in its own session key: widget state does not survive a page switch.
    codes = list(LANGUAGES)
    st.sidebar.radio(translate(_lang(), "app.language"), codes, index=codes.index(_lang()), key="lang_choice",
                     format_func=lambda code: LANGUAGES[code], horizontal=True,
                     on_change=lambda: st.session_state.update(lang=st.session_state["lang_choice"]))


def _login(control: Control, session_clock: Callable[[], float]) -> None:
    lang = _lang()
    st.title(translate(lang, "app.title"))
    st.caption(translate(lang, "app.tagline"))
    if "login_error" in st.session_state:
        st.error(st.session_state.pop("login_error"))
    with st.form("login"):
        username = st.text_input(translate(lang, "login.username"), key="login_username")
        password = st.text_input(translate(lang, "login.password"), type="password", key="login_password")
        submitted = st.form_submit_button(translate(lang, "login.submit"), type="primary")
    if submitted:
        try:
            user = control.login(username.strip(), password, source=f"panel:{st.context.ip_address or '-'}")
        except LoginFailed as exc:
            st.session_state["login_error"] = translate(
                lang, "login.throttled" if exc.reason == LoginFailed.THROTTLED else "login.refused")
        else:
            st.session_state["user"] = user
            st.session_state["last_seen"] = session_clock()
        st.rerun()


def _sidebar(ctx: Ctx) -> None:
    sb = st.sidebar
    sb.markdown(f"**{ctx.user.display_name}** · `{ctx.user.username}`")
    sb.caption(ctx.t("app.role", role=ctx.t(f"role.{ctx.user.role.value}")))
    with sb:
        _clock(ctx)
    kill = ctx.room.kill_switch(ctx.user)
    if kill.global_on:
        sb.error(ctx.t("app.kill_on"))
    else:
        sb.success(ctx.t("app.kill_off"))
    if kill.campaigns:
        sb.warning(ctx.t("app.kill_campaigns", campaigns=", ".join(sorted(kill.campaigns))))
    if sb.button(ctx.t("app.logout"), key="logout"):
        end_session()


def _clock(ctx: Ctx) -> None:
    """The promotion clock, refreshed as often as the live board (its own fragment), so it never lags it."""
    paused = st.session_state.get("refresh_paused", False)

    @st.fragment(run_every=None if paused else int(st.session_state.get("refresh_s", DEFAULT_REFRESH_S)))
    def clock() -> None:
        newest = ctx.room.latest_bucket(ctx.user)
        st.metric(ctx.t("app.clock"), fmt_ts(newest) if newest is not None else ctx.t("app.no_data"))

    clock()


def main(room: ControlRoom | None = None, session_clock: Callable[[], float] = time.time) -> None:
    st.set_page_config(page_title="BidLens", page_icon=":material/visibility:", layout="wide")
    if room is None:
        room = _default_room()
    control = room.control
    _language_switch()
    if "alert" in st.query_params:  # a WeCom message's link: open that alert once logged in
        st.session_state[alerts.FOCUS_KEY] = st.query_params["alert"]
        st.session_state["focus_redirect"] = True
    user = st.session_state.get("user")
    if user is None:
        # Every page's address shows the login (not "page not found"), so a link into the panel,
        # such as a WeCom alert's, opens that page once the person has logged in.
        title = translate(_lang(), "login.title")
        st.navigation([st.Page(lambda: _login(control, session_clock), title=title, url_path=path,
                               default=(path == "login")) for path in ("login", *PAGES)],
                      position="hidden").run()
        return
    session = Session(session_clock, control.settings.session_timeout_min * 60)
    user = check_session(room, user, session, touch=True)
    ctx = Ctx(room, user, _lang(), session)
    _sidebar(ctx)
    # Every page's address is registered: one the role may not see is hidden from the menu and says so
    # (a link to /audit followed by an engineer, say), instead of landing silently elsewhere.
    pages = {key: st.Page(_page_runner(PAGES[key][0], ctx) if _visible(ctx, key) else _not_allowed(ctx, key),
                          title=ctx.t(f"page.{key}"), icon=ICONS[key], url_path=key, default=(key == "board"),
                          visibility="visible" if _visible(ctx, key) else "hidden")
             for key in PAGES}
    nav = st.navigation(list(pages.values()))
    target = st.session_state.pop("goto", None)
    if st.session_state.pop("focus_redirect", False) and target is None and nav.url_path != "alerts":
        target = "alerts"
    if target in pages:
        st.switch_page(pages[target])
    nav.run()


def _not_allowed(ctx: Ctx, key: str) -> Callable[[], None]:
    def run() -> None:
        st.header(ctx.t(f"page.{key}"))
        st.warning(ctx.t("app.not_allowed", page=ctx.t(f"page.{key}"), role=ctx.t(f"role.{ctx.user.role.value}")))
        if st.button(ctx.t("app.to_board"), key="not_allowed_board"):
            st.session_state["goto"] = "board"
            st.rerun()
    run.__name__ = f"{key}_not_allowed"
    return run


def _page_runner(module, ctx: Ctx) -> Callable[[], None]:
    def run() -> None:
        show_flash()
        overrides.notices(ctx)
        module.render(ctx)
    run.__name__ = module.__name__.rsplit(".", 1)[-1]
    return run


@st.cache_resource(show_spinner=False)
def _default_room() -> ControlRoom:
    return control_room(open_control())


if __name__ == "__main__":
    main()
