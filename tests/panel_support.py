"""Shared pieces of the panel tests: a seeded real SQLite store, clocks, an AppTest driver."""

from __future__ import annotations

import os

import pytest
from streamlit.testing.v1 import AppTest

from app.room import ControlRoom
from app.service import Control
from app.wiring import control_room
from bench.panel_seed import PASSWORD, PROMOTION_START, seed_store
from control.config import Settings
from store.engine import open_store

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


class Clock:
    """A clock tests move by hand (no sleeps)."""

    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> int:
        return int(self.t)

    def advance(self, seconds: float) -> None:
        self.t += seconds


def missing(reason: str):
    """Fail in CI, skip (printing why) elsewhere."""
    if IN_CI:
        pytest.fail(f"required for CI: {reason}")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def seeded_control(tmp_path, **sizes) -> tuple[Control, object, Clock]:
    """A Control on a fresh seeded SQLite store; its clock stands just after the newest bucket."""
    engine = open_store(f"sqlite:///{tmp_path / 'bidlens.db'}")
    n_buckets = sizes.get("n_buckets", 24)
    clock = Clock(PROMOTION_START + n_buckets * 300)
    control = Control(engine, clock, Settings(data_dir=str(tmp_path)))
    seeded = seed_store(control, **sizes)
    return control, seeded, clock


_ROOMS: dict[int, ControlRoom] = {}


def room_for(control: Control) -> ControlRoom:
    """One control room per store, shared by every session on it, as the panel's process shares one."""
    if id(control) not in _ROOMS:
        _ROOMS[id(control)] = control_room(control)
    return _ROOMS[id(control)]


def _script(room, session_clock):
    from panel.app import main

    main(room=room, session_clock=session_clock)


class Panel:
    """One browser session of the panel, driven through AppTest."""

    def __init__(self, control: Control, wall: Clock | None = None):
        self.control = control
        self.wall = wall or Clock(1_000_000.0)
        self.at = AppTest.from_function(_script, kwargs={"room": room_for(control), "session_clock": self.wall},
                                        default_timeout=30)

    started = False

    def run(self) -> Panel:
        self.started = True
        self.at.run()
        assert not self.at.exception, [e.value for e in self.at.exception]
        return self

    def login(self, username: str, password: str = PASSWORD) -> Panel:
        if not self.started:
            self.run()
        self.at.text_input(key="login_username").input(username)
        self.at.text_input(key="login_password").input(password)
        self.at.get("form_submit_button")[0].click()
        return self.run()

    def open(self, page: str) -> Panel:
        self.at.session_state["goto"] = page
        return self.run()

    def click(self, key: str) -> Panel:
        self.at.button(key=key).click()
        return self.run()

    def texts(self) -> str:
        """Everything written on the page, in one string (markdown, captions, alerts, metrics, headers)."""
        parts = []
        for kind in ("markdown", "caption", "error", "warning", "success", "info", "header", "subheader", "title"):
            parts += [str(e.value) for e in self.at.get(kind)]
        parts += [f"{m.label} {m.value}" for m in self.at.metric]
        return "\n".join(parts)

    def errors(self) -> list[str]:
        return [e.value for e in self.at.error]

    def logout(self) -> Panel:
        return self.click("logout")
