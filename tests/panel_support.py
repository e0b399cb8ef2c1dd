"""Shared pieces of the panel tests: a seeded real SQLite store, clocks, an AppTest driver."""

from __future__ import annotations

import os
import re

import pytest
from streamlit.testing.v1 import AppTest

from app.room import ControlRoom
from app.service import Control
from app.wiring import control_room
from bench.panel_seed import PASSWORD, PROMOTION_START, seed_store
from control.config import Settings
from guards.pool_store import active_version
from store import repo
from store.engine import open_store

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Words that are the same in both languages: names of things, abbreviations people use as such.
WORDS = {"ROI", "GMV", "SHAP", "CSV", "TOML", "WeCom", "LightGBM", "XGBoost", "scikit-learn", "P90", "R²", "BidLens",
         "English"}  # the language switch names each language in itself
# Never shown to a person: None, NaN, a bare boolean or null, a JSON document, a code such as "guard:tripped".
NEVER = re.compile(r"\bNone\b|\bnan\b|\bNaN\b|^(?:null|True|False)$|\{\"|\{'|[a-z]+:[a-z_]+:?")
ASCII_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")
CJK = re.compile(r"[\u4e00-\u9fff]")



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

    def rendered(self) -> list[str]:
        """Every string a person reads on the page: text elements, labels, options, placeholders and
        tooltips of widgets, metrics, table headers and cells, chart titles, axis titles and legend
        entries (from the Vega-Lite spec and its data)."""
        out: list[str] = []
        for element in _walk(self.at._tree):
            proto = getattr(element, "proto", None)
            kind = element.type
            if kind in ("markdown", "caption", "error", "warning", "success", "info", "header", "subheader",
                        "title", "text", "toast", "exception"):
                out.append(str(element.value))
            elif kind == "metric":
                out += [proto.label, proto.body, proto.help]
            elif kind in ("arrow_data_frame", "dataframe", "table"):
                frame = element.value
                out += [str(c) for c in frame.columns]
                out += [str(v) for v in frame.astype(str).to_numpy().ravel()]
            elif kind == "vega_lite_chart":
                out += _chart_texts(proto)
            elif proto is not None:
                for name in ("label", "placeholder", "help"):
                    if hasattr(proto, name):
                        out.append(getattr(proto, name))
                out += [str(o) for o in getattr(element, "options", None) or []]
        return [t for t in out if t]

    def logout(self) -> Panel:
        return self.click("logout")


def _walk(node):
    for child in getattr(node, "children", {}).values():
        yield child
        yield from _walk(child)


def _chart_texts(proto) -> list[str]:
    import json

    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    spec = json.loads(proto.spec)
    out, colours = [], set()

    def visit(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "title" and isinstance(value, str):
                    out.append(value)
                elif key == "title" and isinstance(value, dict) and isinstance(value.get("text"), str):
                    out.append(value["text"])
                elif key == "color" and isinstance(value, dict) and "field" in value:
                    colours.add(value["field"])
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(spec)
    for dataset in proto.datasets:  # legend entries are the colour field's values
        frame = convert_arrow_bytes_to_pandas_df(dataset.data.data)
        for field in colours & set(frame.columns):
            out += [str(v) for v in frame[field].unique()]
    return out


# --- what reads in the person's language, and what does not -------------------------------------

def data_words(control) -> set[str]:
    """Words that are data, shown as they are in either language."""
    with control.engine.connect() as conn:
        campaigns = repo.load_campaigns(conn)
        pool = active_version(conn)
        versions = [r[0] for r in conn.exec_driver_sql("SELECT model_version FROM models")]
        channels = [r[0] for r in conn.exec_driver_sql("SELECT DISTINCT channel FROM alerts")]
        errors = [r[0] for r in conn.exec_driver_sql("SELECT DISTINCT last_error FROM alerts")]
        launch_texts = [t for r in conn.exec_driver_sql("SELECT reason, review_comment FROM model_launches")
                        for t in r if t]
    # Names and what people and robots wrote, whole (a Chinese campaign name on an English page is data) ...
    texts = {"简体中文", *(u.display_name for u in control.users()), *(c.name for c in campaigns.values()),
             *(t for o in control.overrides() for t in (o.reason, o.review_comment) if t), *(e for e in errors if e),
             *launch_texts}
    # ... and their ASCII words, with ids and versions.
    words = set(WORDS) | set(versions) | set(channels) | {u.username for u in control.users()} | set(campaigns)
    for text in texts:
        words |= set(ASCII_WORD.findall(text))
    words |= set(re.findall(r'rule_id = "([^"]+)"', pool.source)) if pool else set()
    return words | texts


def untranslated(texts: list[str], lang: str, data: set[str]) -> list[str]:
    bad = []
    for text in texts:
        if NEVER.search(text):
            bad.append(text)
            continue
        words = [w for w in ASCII_WORD.findall(text) if w not in data and not re.fullmatch(r"[0-9a-f]{16,}", w)]
        if lang == "zh":
            # A Chinese page may hold numbers, units and data; a lower-case ASCII word is an untranslated one.
            if any(w != w.upper() and not re.fullmatch(r"v\d+|c\d+|[a-z]\d*|\d+[a-z]*", w) for w in words):
                bad.append(text)
        elif any("_" in w for w in words) or CJK.search(_without(text, data)):
            bad.append(text)
    return bad


def _without(text: str, data: set[str]) -> str:
    for word in sorted(data, key=len, reverse=True):
        text = text.replace(word, "")
    return text
