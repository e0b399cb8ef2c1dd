"""Cached reads for the pages. Caches are shared by all sessions and keyed on the
store and its newest bucket, so a new bucket (or a new store) invalidates them."""

from __future__ import annotations

import threading

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from control import board
from control.domain import Campaign
from control.service import Control
from guards.alert_bridge import enqueue_guard_alert
from guards.config import GuardSettings, load_guard_settings
from guards.rule_pool import PoolBounds
from guards.service import GuardService
from guards.threshold_store import ThresholdReader
from store import repo


def store_key(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


@st.cache_resource(show_spinner=False)
def _aggregates(key: str) -> board.LiveAggregates:
    return board.LiveAggregates()


@st.cache_resource(show_spinner=False)
def _warm(key: str, _engine: Engine) -> threading.Thread:
    """Sum the day once in the background as soon as the panel serves its first page (the login),
    so the first live board does not wait for it (~20 s for a full day of 1,000 campaigns)."""
    aggregates = _aggregates(key)

    def run() -> None:
        with _engine.connect() as conn:
            aggregates.refresh(conn)

    thread = threading.Thread(target=run, daemon=True, name="bidlens-board-warm")
    thread.start()
    return thread


def warm(control: Control) -> None:
    _warm(store_key(control.engine), control.engine)


@st.cache_data(max_entries=8, show_spinner=False)
def _slots(key: str, bucket: int, _engine: Engine) -> pd.DataFrame:
    with _engine.connect() as conn:
        return board.bucket_slots(conn, bucket)


@st.cache_data(ttl=60, max_entries=8, show_spinner=False)
def _campaigns(key: str, _engine: Engine) -> dict[str, Campaign]:
    """Campaigns change rarely (a new one shows within a minute); reloading 1,000 on every bucket is not free."""
    with _engine.connect() as conn:
        return repo.load_campaigns(conn)


@st.cache_data(max_entries=8, show_spinner=False)
def _packages(key: str, _engine: Engine) -> dict[str, tuple[str, str]]:
    with _engine.connect() as conn:
        return {c: (p.name_zh, p.name_en) for c, p in repo.load_audience_packages(conn).items()}


def latest_bucket(control: Control) -> int | None:
    with control.engine.connect() as conn:
        return board.latest_bucket(conn)


def slots(control: Control, bucket: int) -> pd.DataFrame:
    return _slots(store_key(control.engine), bucket, control.engine)


def campaigns(control: Control) -> dict[str, Campaign]:
    return _campaigns(store_key(control.engine), control.engine)


def packages(control: Control) -> dict[str, tuple[str, str]]:
    return _packages(store_key(control.engine), control.engine)


@st.cache_resource(show_spinner=False)
def _guard_settings(path: str) -> GuardSettings:
    return load_guard_settings(path)


def file_guard_settings(control: Control) -> GuardSettings:
    """The guard config file's settings (without the managers' threshold edits)."""
    return _guard_settings(control.settings.guard_config)


@st.cache_resource(show_spinner=False)
def _threshold_reader(path: str, key: str) -> ThresholdReader:
    return ThresholdReader(_guard_settings(path))


def guard_settings(control: Control) -> GuardSettings:
    """The effective guard settings: the config file with the store's threshold edits on top (one flag read)."""
    reader = _threshold_reader(control.settings.guard_config, store_key(control.engine))
    with control.engine.connect() as conn:
        return reader.read(conn)


def pool_bounds(control: Control) -> PoolBounds:
    return PoolBounds(max_bid=control.settings.max_bid, max_multiplier=control.settings.max_bid_multiple)


def guard_service(control: Control) -> GuardService:
    """The guards' permission-checked operations (force, release, rule pool), alerts enqueued as the worker does."""
    return GuardService(control.engine, control.clock, file_guard_settings(control), pool_bounds(control),
                        alert_sink=enqueue_guard_alert)


def roi_floors(control: Control, campaign_ids) -> dict[str, float]:
    settings = guard_settings(control)
    return {c: settings.for_campaign("roi", c).floor for c in campaign_ids}


def default_floor(control: Control) -> float:
    return guard_settings(control).defaults["roi"].floor


def board_view(control: Control, window_s: int) -> board.BoardView | None:
    engine = control.engine
    key = store_key(engine)
    with engine.connect() as conn:
        newest = board.latest_bucket(conn)
        if newest is None:
            return None
        known = campaigns(control)
        return board.build_board(conn, _aggregates(key), known, slots(control, newest), newest, control.clock(),
                                 window_s, roi_floors(control, known))
