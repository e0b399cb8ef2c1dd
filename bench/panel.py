"""Panel benchmarks: the live board's script run and the explorer's view of one decision, through
Streamlit's AppTest, each beside the same core queries without the page, measured in the same run.

Store: 1,000 campaigns x 12 audience packages, a promotion day of 5-minute buckets
(288 buckets: 3.46M decisions, 6.9M outcome increments with late conversions),
explanations stored for the newest hour. `quick`: 40 campaigns, 24 buckets.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from app import board, explorer
from app.room import ControlRoom
from app.service import Control
from app.wiring import control_room
from bench.panel_seed import PASSWORD, PROMOTION_START, _bucket_decisions, _outcomes, seed_store
from bench.registry import BenchContext, BenchResult, benchmark
from control.config import Settings
from explain.bid_units import steps_frame
from store import repo
from store import schema as s
from store.engine import open_store


class _Clock:
    def __init__(self, t: int):
        self.t = t

    def __call__(self) -> int:
        return self.t


def _script(room, session_clock):
    from panel.app import main

    main(room=room, session_clock=session_clock)


def _session(room: ControlRoom, username: str):
    """An AppTest session of the panel with `username` logged in; the board's first run not yet made."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_script, kwargs={"room": room, "session_clock": time.time},
                               default_timeout=600)
    at.run()
    at.text_input(key="login_username").input(username)
    at.text_input(key="login_password").input(PASSWORD)
    at.get("form_submit_button")[0].click()
    return at


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


_STORES: dict[str, tuple] = {}


def _store(ctx: BenchContext):
    """One seeded store per bench run, shared by the panel benchmarks (seeding is the slow part)."""
    if ctx.workdir not in _STORES:
        _STORES[ctx.workdir] = _seed(ctx)
    return _STORES[ctx.workdir]


def _seed(ctx: BenchContext):
    n_campaigns, n_buckets = (40, 24) if ctx.quick else (1000, 288)
    engine = open_store(f"sqlite:///{Path(ctx.workdir) / 'bench-panel.db'}")
    clock = _Clock(PROMOTION_START + n_buckets * 300)
    control = Control(engine, clock, Settings())
    start = time.perf_counter()
    seeded = seed_store(control, n_campaigns=n_campaigns, n_buckets=n_buckets, explain_buckets=12)
    return control, control_room(control), seeded, clock, time.perf_counter() - start


def _add_bucket(control: Control, seeded, clock: _Clock, rng: np.random.Generator) -> None:
    """The next bucket arrives (decisions and their first outcomes), as the simulator writes it."""
    bucket = board.latest_bucket(control.engine.connect()) + seeded.bucket_s
    frame, batch = _bucket_decisions(rng, seeded.campaigns, seeded.packages, bucket, seeded.tripped)
    repo.write_decisions(control.engine, frame, received_ts=bucket + 1, explanation=batch)
    repo.write_outcomes(control.engine, _outcomes(rng, frame, bucket))
    clock.t = bucket + seeded.bucket_s


# The baseline: the same sums from the raw rows, as the board made them before the rollups.
_RAW_DECISIONS = ("COUNT(*), SUM(CASE WHEN audience_on THEN 1 ELSE 0 END), SUM(pred_roi), COUNT(pool_pred_roi), "
                  "COALESCE(SUM(pool_pred_roi), 0), SUM(bid), SUM(CASE WHEN decided_by = 'override' THEN 1 ELSE 0 END), "
                  "SUM(CASE WHEN decided_by = 'rule_pool' THEN 1 ELSE 0 END)")
_RAW_OUTCOMES = "SUM(impressions), SUM(clicks), SUM(spend), SUM(orders), SUM(gmv)"


def _raw_sums(conn, key: str, newest: int, since: int) -> pd.DataFrame:
    where = "bucket_ts >= :since AND bucket_ts <= :newest"
    out = board.raw_rows(conn, f"SELECT {key}, {_RAW_OUTCOMES} FROM outcomes WHERE {where} GROUP BY {key}",
                          since=since, newest=newest)
    dec = board.raw_rows(conn, f"SELECT {key}, {_RAW_DECISIONS} FROM decisions WHERE {where} GROUP BY {key}",
                          since=since, newest=newest)
    outcomes = pd.DataFrame(out, columns=[key, *s.ROLLUP_OUTCOME_SUMS]).set_index(key)
    decisions = pd.DataFrame(dec, columns=[key, *s.ROLLUP_DECISION_SUMS]).set_index(key)
    return outcomes.join(decisions, how="outer").fillna(0.0).astype(np.float64).sort_index()


def _board_queries(control: Control, campaigns: dict, raw: bool = False) -> board.BoardView:
    """What the live fragment asks of the core, without Streamlit; the campaign list is loaded once,
    as the page caches it. `raw`: the day's sums from the raw rows instead of the rollups."""
    sums = {"totals": lambda c, n, since: _raw_sums(c, "campaign_id", n, since),
            "series": lambda c, n, since: _raw_sums(c, "bucket_ts", n, since)} if raw else {}
    with control.engine.connect() as conn:
        newest = board.latest_bucket(conn)
        return board.build_board(conn, campaigns, board.bucket_slots(conn, newest), newest, control.clock(), 3600,
                                 **sums)


def _login_page_only():
    """The baseline of the login page: a bare Streamlit page with the same form."""
    import streamlit as st

    st.set_page_config(page_title="BidLens", layout="wide")
    st.title("BidLens")
    with st.form("login"):
        st.text_input("username")
        st.text_input("password", type="password")
        st.form_submit_button("log in")


@benchmark("panel.live_board")
def bench_live_board(ctx: BenchContext) -> list[BenchResult]:
    from streamlit.testing.v1 import AppTest

    control, room, seeded, clock, seed_s = _store(ctx)
    rng = np.random.default_rng(11)
    repeat = 3 if ctx.quick else 5
    # The login page of a panel that has served before (a new browser session), beside a bare page.
    login = AppTest.from_function(_script, kwargs={"room": room, "session_clock": time.time}, default_timeout=600)
    login.run()  # the process's first page: imports
    login_ms = _median_ms(lambda: AppTest.from_function(
        _script, kwargs={"room": room, "session_clock": time.time}, default_timeout=600).run(), repeat)
    bare_ms = _median_ms(lambda: AppTest.from_function(_login_page_only, default_timeout=600).run(), repeat)

    at = _session(room, "operator")
    start = time.perf_counter()
    at.run()  # the first board of a new session
    first_ms = (time.perf_counter() - start) * 1000
    assert not at.exception, at.exception
    same_ms = _median_ms(at.run, repeat)

    def new_bucket_then(fn):
        def step():
            _add_bucket(control, seeded, clock, rng)
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        return statistics.median(step() for _ in range(repeat)) * 1000

    page_new_ms = new_bucket_then(at.run)
    with control.engine.connect() as conn:
        campaigns = repo.load_campaigns(conn)
    raw_ms = _median_ms(lambda: _board_queries(control, campaigns, raw=True), 1 if not ctx.quick else repeat)
    core_same_ms = _median_ms(lambda: _board_queries(control, campaigns), repeat)
    core_new_ms = new_bucket_then(lambda: _board_queries(control, campaigns))
    size = (f"{len(seeded.campaigns):,} campaigns x {len(seeded.packages)} packages x "
            f"{(seeded.last_bucket - seeded.first_bucket) // seeded.bucket_s + 1} buckets of 5 min")
    notes = (f"AppTest script run of the whole app on the live board (sidebar, both fragments); {size}; "
             f"store seeded in {seed_s:.0f} s")
    return [
        BenchResult("panel.live_board.first_render", round(first_ms, 1), "ms",
                    "the board's core queries summing the day's raw rows (no rollups)", round(raw_ms, 1), False,
                    "first board of a new session: " + notes, {"target_ms": 2000}),
        BenchResult("panel.live_board.refresh_new_bucket", round(page_new_ms, 1), "ms",
                    "same core queries without the page", round(core_new_ms, 1), False, notes,
                    {"target_ms": 300}),
        BenchResult("panel.live_board.refresh_same_bucket", round(same_ms, 1), "ms",
                    "same core queries without the page", round(core_same_ms, 1), False, notes),
        BenchResult("panel.login_page", round(login_ms, 1), "ms", "a bare Streamlit page with the same form",
                    round(bare_ms, 1), False, "a new session's first page in a panel process that has served "
                    "before (AppTest)", {"target_ms": 2000}),
    ]


@benchmark("panel.explorer")
def bench_explorer(ctx: BenchContext) -> list[BenchResult]:
    control, room, seeded, _, _ = _store(ctx)
    at = _session(room, "engineer")
    at.run()
    at.session_state["explore_campaign"] = seeded.tripped[0]
    at.session_state["goto"] = "explorer"
    at.run()
    assert not at.exception, at.exception
    repeat = 3 if ctx.quick else 7
    page_ms = _median_ms(at.run, repeat)

    def core():
        with control.engine.connect() as conn:
            decision_id = explorer.find_decision_id(conn, seeded.tripped[0], seeded.packages[0], seeded.last_bucket)
        steps_frame(room.explainer.explain(decision_id, "zh").steps)

    core_ms = _median_ms(core, repeat)
    return [BenchResult("panel.explorer.one_decision", round(page_ms, 1), "ms",
                        "app.explanations.DecisionExplainer.explain without the page", round(core_ms, 1), False,
                        "AppTest script run of the explorer page on one decision, warm",
                        {"target_ms": 200})]
