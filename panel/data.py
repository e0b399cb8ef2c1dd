"""Cached reads for the pages. Caches are shared by all sessions and keyed on the
store and its newest bucket, so a new bucket (or a new store) invalidates them."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from control import board
from control.domain import Campaign
from control.service import Control
from store import repo


def store_key(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


@st.cache_resource(show_spinner=False)
def _aggregates(key: str) -> board.LiveAggregates:
    return board.LiveAggregates()


@st.cache_data(max_entries=8, show_spinner=False)
def _slots(key: str, bucket: int, _engine: Engine) -> pd.DataFrame:
    with _engine.connect() as conn:
        return board.bucket_slots(conn, bucket)


@st.cache_data(max_entries=8, show_spinner=False)
def _campaigns(key: str, bucket: int | None, _engine: Engine) -> dict[str, Campaign]:
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


def campaigns(control: Control, bucket: int | None = None) -> dict[str, Campaign]:
    return _campaigns(store_key(control.engine), bucket, control.engine)


def packages(control: Control) -> dict[str, tuple[str, str]]:
    return _packages(store_key(control.engine), control.engine)


def board_view(control: Control, window_s: int) -> board.BoardView | None:
    engine = control.engine
    key = store_key(engine)
    with engine.connect() as conn:
        newest = board.latest_bucket(conn)
        if newest is None:
            return None
        return board.build_board(conn, _aggregates(key), campaigns(control, newest), slots(control, newest),
                                 newest, control.clock(), window_s)
