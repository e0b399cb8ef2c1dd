"""What every page shares: the request context, messages, refusals shown plainly, time formats."""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import streamlit as st

from app.room import ControlRoom
from app.service import Control
from control.clock import PROMOTION_TZ
from control.domain import ConflictError, InvalidValue, NotFound, User
from control.launch import LaunchStateError
from control.overrides import FourEyesViolation, OverrideStateError
from control.permissions import Action, ActorRefused, PermissionDenied, allowed
from panel.i18n import CATALOGUE, fill, translate

# What the core refuses with; the page shows why instead of failing.
CORE_REFUSALS = (PermissionDenied, FourEyesViolation, OverrideStateError, LaunchStateError, ConflictError,
                 InvalidValue, NotFound, ActorRefused)
SESSION_KEYS = ("user", "last_seen", "goto")


@dataclass(frozen=True)
class Session:
    """A browser session's idle clock: `clock` gives seconds, the session ends after `timeout_s` idle."""

    clock: Callable[[], float]
    timeout_s: float


@dataclass(frozen=True)
class Ctx:
    room: ControlRoom
    user: User
    lang: str
    session: Session

    @property
    def control(self) -> Control:
        """The core's operations (propose, approve, kill switch ...), each checking its own permission."""
        return self.room.control

    def t(self, key: str, **values) -> str:
        return translate(self.lang, key, **values)

    def fill(self, key: str, values: Mapping[str, str]) -> str:
        return fill(self.lang, key, values)

    def has(self, key: str) -> bool:
        """Whether the catalogue says `key` (codes from outside, e.g. a new trip cause, may not be yet)."""
        return key in CATALOGUE[self.lang]

    def may(self, action: Action) -> bool:
        return allowed(self.user, action)


def refusal_text(ctx: Ctx, exc: Exception) -> str:
    if isinstance(exc, PermissionDenied):
        return ctx.t("err.permission", role=ctx.t(f"role.{exc.user.role.value}"),
                     action=ctx.t(f"action.{exc.action.value}"))
    if isinstance(exc, FourEyesViolation):
        return ctx.t("err.four_eyes", detail=str(exc))
    if isinstance(exc, ConflictError):
        return ctx.t("err.conflict", detail=str(exc))
    if isinstance(exc, InvalidValue):
        return ctx.t("err.refused_because", detail=invalid_text(ctx, exc))
    return ctx.t("err.refused", detail=str(exc))


def end_session(message_key: str | None = None) -> None:
    """Log the session out and show the login page (with why, in the session's language)."""
    for key in SESSION_KEYS:
        st.session_state.pop(key, None)
    if message_key:
        st.session_state["login_error"] = translate(st.session_state.get("lang", "zh"), message_key)
    st.rerun(scope="app")


def check_session(room: ControlRoom, user: User, session: Session, *, touch: bool) -> User:
    """The session's user as the store has them now, or the login page (this call does not return): idle
    longer than the timeout, or the user deactivated or given another role since the login.

    `touch`: this run is the person's doing (a page run, an action), so the idle clock starts again;
    a fragment refreshing by itself is not, so a live board left open still times out."""
    now = session.clock()
    if "user" not in st.session_state or now - st.session_state.get("last_seen", now) > session.timeout_s:
        end_session("login.timeout")
    try:
        user = room.session_user(user)
    except ActorRefused:
        end_session("login.changed")
    if touch:
        st.session_state["last_seen"] = now
    return user


def fragment(ctx: Ctx, run_every: float | None = None):
    """`st.fragment` whose every run checks the session first: a fragment's rerun skips the router's
    check, so without this a timed-out live board kept refreshing and acting."""
    def wrap(body: Callable[[], None]) -> Callable[[], None]:
        @st.fragment(run_every=run_every)
        @functools.wraps(body)
        def run() -> None:
            check_session(ctx.room, ctx.user, ctx.session, touch=False)
            body()
        return run
    return wrap


def invalid_text(ctx: Ctx, exc: InvalidValue) -> str:
    """A refused value in the user's language: the field by its name, what was given, and why (the core's
    reason code; its English reason only for a code the catalogue does not know yet)."""
    field = ctx.t(f"fieldname.{exc.field}") if ctx.has(f"fieldname.{exc.field}") else exc.field
    params = {k: (f"{v:g}" if v.is_integer() else fmt_num(v)) if isinstance(v, float) else v
              for k, v in exc.params.items()}
    reason = ctx.t(f"invalid.{exc.code}", **params) if ctx.has(f"invalid.{exc.code}") else exc.reason
    if exc.value is None or exc.value == "":
        return ctx.t("err.invalid_empty", field=field, reason=reason)
    value = fmt_ts(exc.value) if exc.field.endswith("_ts") and isinstance(exc.value, int) else exc.value
    return ctx.t("err.invalid", field=field, value=value, reason=reason)


def attempt(ctx: Ctx, action: Callable[[], object], success: str, forget: tuple[str, ...] = ()) -> None:
    """Run a core operation; remember its outcome for the next run and rerun so the page is current.

    `forget`: session keys that described the state before a successful action. The session is
    checked first (an action in a fragment does not pass the router); a person the core no longer
    knows as they logged in (deactivated, another role) is logged out.
    """
    check_session(ctx.room, ctx.user, ctx.session, touch=True)
    try:
        action()
    except ActorRefused:
        end_session("login.changed")
    except CORE_REFUSALS as exc:
        st.session_state["flash"] = ("error", refusal_text(ctx, exc))
        st.rerun()
    for key in forget:
        st.session_state.pop(key, None)
    st.session_state["flash"] = ("success", success)
    st.rerun()


def show_flash() -> None:
    kind, text = st.session_state.pop("flash", (None, None))
    if kind == "error":
        st.error(text)
    elif kind == "success":
        st.success(text)


def fmt_ts(ts: int | float | None, with_date: bool = True) -> str:
    if ts is None or (isinstance(ts, float) and math.isnan(ts)):
        return "—"
    t = dt.datetime.fromtimestamp(int(ts), PROMOTION_TZ)
    return t.strftime("%m-%d %H:%M" if with_date else "%H:%M")


def fmt_left(ctx: Ctx, seconds: int) -> str:
    if seconds <= 0:
        return ctx.t("time.expired")
    h, m = divmod(seconds // 60, 60)
    return ctx.t("time.left", h=h, m=m)


def fmt_num(x: float | None, digits: int = 2, signed: bool = False) -> str:
    """Thousands separators, `digits` decimals, "—" for nothing (never "None" or "nan")."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+,.{digits}f}" if signed else f"{x:,.{digits}f}"


def decided_by_label(ctx: Ctx, decided_by: str) -> str:
    return ctx.t(f"decided.{decided_by}")


def goto(page: str, **state) -> None:
    """Open another page (the app's router picks it up at the start of the next run)."""
    st.session_state.update(state)
    st.session_state["goto"] = page
    st.rerun(scope="app")


def page_start(ctx: Ctx, page: str, newest: int | None) -> bool:
    """The page's header; False (and says so) when the store has no decisions yet."""
    st.header(ctx.t(f"page.{page}"))
    if newest is None:
        st.info(ctx.t("app.no_data"))
        return False
    return True
