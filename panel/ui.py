"""What every page shares: the request context, messages, refusals shown plainly, time formats."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import streamlit as st

from app.room import ControlRoom
from app.service import Control
from control.clock import PROMOTION_TZ
from control.domain import ConflictError, InvalidValue, NotFound, User
from control.overrides import FourEyesViolation, OverrideStateError
from control.permissions import Action, PermissionDenied, allowed
from panel.i18n import CATALOGUE, fill, translate

# What the core refuses with; the page shows why instead of failing.
CORE_REFUSALS = (PermissionDenied, FourEyesViolation, OverrideStateError, ConflictError, InvalidValue, NotFound)


@dataclass(frozen=True)
class Ctx:
    room: ControlRoom
    user: User
    lang: str

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

    `forget`: session keys that described the state before a successful action.
    """
    try:
        action()
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
