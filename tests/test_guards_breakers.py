"""The plan's sibling breakers: competitor price drop -> pull the item, safety stock -> replenishment alert.

Their signals on the shared machine (pure), their feeds (validated and quarantined like decisions), the
worker reading them from the store exactly as the in-process evaluator does, their alerts and ledger.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from app.ingest import Kind, ingest_frame
from control.clock import ManualClock
from control.domain import Campaign, GuardAction, GuardMode, GuardState, most_restrictive
from control.policy import KillSwitch, resolve_policy
from guards.alert_bridge import alert_for, enqueue_guard_alert
from guards.alerts import list_alerts
from guards.alerts.config import load_config
from guards.alerts.events import AlertKind, Severity
from guards.alerts.templates import Style, render
from guards.config import parse_guard_settings
from guards.evaluator import GuardEvaluator
from guards.feeds import days_of_stock, sales_per_day, worst_competitor
from guards.machine import MachineState
from guards.observe import OBSERVATION_COLUMNS
from guards.registry import evaluate
from guards.worker import GuardWorker
from store import schema as s
from tests.guards_helpers import T0, feed_minute, make_store, minute_frames, obs
from tests.helpers import add_users

SETTINGS = parse_guard_settings()
COMPETITOR = SETTINGS.defaults["competitor"]
LOW_STOCK = SETTINGS.defaults["low_stock"]


def run(guard: str, config, readings: list[dict], state: MachineState | None = None, start: int = 0):
    """Evaluate `guard` minute by minute over observations with the given fields; (state, events per minute)."""
    state = state or MachineState(since_ts=T0)
    out = []
    for i, fields in enumerate(readings, start=start):
        now = T0 + 60 * i
        state, events = evaluate(guard, state, replace(obs(bucket=now - 60), **fields), config, now)
        out.append(events)
    return state, out


# --- the competitor price guard (pure) --------------------------------------------------------------

def test_a_competitor_price_drop_beyond_the_limit_pulls_the_item_and_the_gap_closing_brings_it_back():
    fresh = {"competitor_age_s": 60}
    state, events = run("competitor", COMPETITOR, [{"competitor_price_index": 0.82, **fresh}] * 2)
    trip = events[-1][0]
    assert (state.mode, state.action, trip.cause) == (GuardMode.TRIPPED, GuardAction.PAUSE, "competitor_price")
    assert dict(trip.figures)["competitor_price_drop"] == pytest.approx(0.18)
    # Waiting: past the cooldown the item stays off while the competitor is still 18% below, with no failure.
    wait = COMPETITOR.machine.cooldown_s // 60 + 30
    state, events = run("competitor", COMPETITOR, [{"competitor_price_index": 0.82, **fresh}] * wait, state, 2)
    assert state.mode is GuardMode.PROBATION and [e.kind for es in events for e in es] == ["probation_started"]
    # Between the limit and limit - hysteresis (12%): not back yet; at 9% for three readings: back on sale.
    state, events = run("competitor", COMPETITOR, [{"competitor_price_index": 0.88, **fresh}] * 5, state, 2 + wait)
    assert state.mode is GuardMode.PROBATION
    state, events = run("competitor", COMPETITOR, [{"competitor_price_index": 0.91, **fresh}] * 3, state, 7 + wait)
    assert state.mode is GuardMode.MODEL and events[-1][0].kind == "restored"


def test_the_price_feed_trips_it_too_and_an_8_percent_drop_does_not():
    fresh = {"competitor_age_s": 60}
    state, _ = run("competitor", COMPETITOR, [{"competitor_price_index": 0.92, **fresh}] * 10)
    assert state.mode is GuardMode.MODEL
    feed = {"competitor_price_drop": 0.25, "competitor_price": 75.0, "competitor_reference_price": 100.0, **fresh}
    state, events = run("competitor", COMPETITOR, [feed] * 2)
    figures = dict(events[-1][0].figures)
    assert state.mode is GuardMode.TRIPPED and figures["competitor_price"] == 75.0
    assert figures["competitor_reference_price"] == 100.0


def test_a_pulled_item_is_paused_in_the_effective_policy():
    plan = pd.DataFrame({"campaign_id": ["c1", "c1"], "audience_package": ["pets", "beauty"], "bucket_ts": T0,
                         "bid": [1.0, 2.0], "audience_on": [True, True], "budget_share": [0.5, 0.5]})
    paused = {"c1": GuardState("c1", GuardMode.PROBATION, 0.0, event_id=3, action=GuardAction.PAUSE)}
    policy = resolve_policy(plan, [], paused, KillSwitch(), {}, T0)
    assert not policy["audience_on"].any() and set(policy["decided_by"]) == {"guard"}


def test_stale_outcomes_do_not_hold_a_paused_item_its_prices_are_what_it_reads():
    """A paused campaign's outcome feed stops: judged on the outcome age it could never come back."""
    state, _ = run("competitor", COMPETITOR, [{"competitor_price_index": 0.8, "competitor_age_s": 60}] * 2)
    later = COMPETITOR.machine.cooldown_s // 60 + 10
    readings = [{"competitor_price_index": 1.0, "competitor_age_s": 60, "data_age_s": 3600}] * later
    state, _ = run("competitor", COMPETITOR, readings, state, 2)
    assert state.mode is GuardMode.MODEL


# --- the safety-stock guard (pure) ------------------------------------------------------------------

def test_days_of_stock_and_the_sales_rate():
    assert days_of_stock(0.0, math.nan) == 0.0 and days_of_stock(70.0, 10.0) == 7.0
    assert days_of_stock(5.0, 0.0) == math.inf and math.isnan(days_of_stock(math.nan, 3.0))
    assert math.isnan(days_of_stock(5.0, math.nan))
    orders = np.array([12.0, 0.0])
    assert np.isnan(sales_per_day(orders, T0, T0 + 1799, 21600)).all()   # under half an hour of feed
    assert sales_per_day(orders, T0, T0 + 3600, 21600).tolist() == [288.0, 0.0]  # the hour it ran
    assert sales_per_day(orders, T0, T0 + 86400, 21600).tolist() == [48.0, 0.0]  # the window


def test_low_stock_alerts_without_touching_the_traffic_and_resolves_when_stock_is_back():
    low = {"stock_units": 60.0, "sales_per_day": 10.0, "stock_age_s": 60}   # 6 days < 7
    state, events = run("low_stock", LOW_STOCK, [low] * 2)
    trip = events[-1][0]
    assert (state.mode, state.action, trip.cause) == (GuardMode.TRIPPED, GuardAction.ALERT, "days_of_stock")
    assert dict(trip.figures)["days_of_stock"] == 6.0
    guard = GuardState("c1", state.mode, action=state.action)
    assert guard.effective_action is None  # the model keeps the traffic
    roi_on_pool = GuardState("c1", GuardMode.PROBATION, 0.1, action=GuardAction.POOL)
    assert most_restrictive([guard, roi_on_pool])["c1"] is roi_on_pool  # an alert never hides a guard that acts
    # 7.5 days: above the threshold but inside the hysteresis: still open; 8 days: resolved at once.
    state, events = run("low_stock", LOW_STOCK, [{**low, "stock_units": 75.0}] * 5, state, 2)
    assert state.mode is GuardMode.PROBATION and not any(e.kind == "probation_failed" for es in events for e in es)
    state, events = run("low_stock", LOW_STOCK, [{**low, "stock_units": 80.0}], state, 7)
    assert state.mode is GuardMode.MODEL and events[-1][0].kind == "restored"


def test_a_day_without_stock_is_announced_again_once_a_day():
    empty = {"stock_units": 0.0, "sales_per_day": math.nan, "stock_age_s": 60}
    state, events = run("low_stock", LOW_STOCK, [empty] * 2)
    day = 24 * 60
    fired = []
    for i in range(2, 3 * day, 30):   # every half hour, three days
        state, e = run("low_stock", LOW_STOCK, [empty], state, i)
        fired += [x for x in e[0] if x.kind == "probation_failed"]
    assert len(fired) == 2 and fired[0].ts - T0 >= 86400 and fired[1].ts - fired[0].ts >= 86400


# --- alerts ------------------------------------------------------------------------------------------

def test_the_breakers_alerts_carry_their_kind_their_evidence_and_the_replenishment_route(tmp_path):
    state, events = run("competitor", COMPETITOR, [{"competitor_price_drop": 0.2, "competitor_price": 80.0,
                                                    "competitor_reference_price": 100.0, "competitor_age_s": 60,
                                                    "realised_roi": 2.4}] * 2)
    pull = alert_for(events[-1][0], 7, [])
    assert (pull.kind, pull.severity) == (AlertKind.PULL_ITEM, Severity.CRITICAL)
    assert "realised_roi" not in pull.payload and pull.payload["competitor_price"] == 80.0
    _, events = run("low_stock", LOW_STOCK, [{"stock_units": 30.0, "sales_per_day": 10.0, "stock_age_s": 60}] * 2)
    low = alert_for(events[-1][0], 8, [])
    assert (low.kind, low.severity) == (AlertKind.LOW_STOCK, Severity.WARNING)
    config = load_config("", str(tmp_path))
    assert config.route(low) == ("replenishment",) and config.route(pull) == ("log",)
    assert config.channels["replenishment"].repeat_interval_s == 86400
    from guards.alerts.core import AlertRecord

    record = AlertRecord(1, "k", "replenishment", low.kind, "warning", "c1", "low_stock", low.condition_key,
                         low.payload, "pending", T0, T0, T0)
    zh = render([record], "m1", Style(language="zh", fmt="text"))
    en = render([record], "m1", Style(language="en", fmt="text"))
    assert "库存低于安全库存" in zh and "可售天数 3.0" in zh and "请补货" in zh
    assert "Days of stock 3.0 (safety stock (days) 7)" in en and "Stock 30, sales per day 10" in en


# --- feeds: validated like decisions, read by the worker as the evaluator reads them ---------------

def test_feed_rows_are_validated_and_refused_rows_quarantined(tmp_path):
    engine = make_store(tmp_path / "f.db")
    prices = pd.DataFrame({"campaign_id": ["c1", "c1", "nope", "c2"], "competitor": ["shop-a", "shop-b", "x", ""],
                           "observed_ts": [T0, T0, T0, T0], "price": [80.0, 95.0, 1.0, 1.0],
                           "reference_price": [100.0, 0.0, 1.0, 1.0]})
    accepted, refusals = ingest_frame(engine, Kind.COMPETITOR_PRICE, prices, now_ts=T0, source="test",
                                      quarantine_source="t", known_campaigns={"c1", "c2"})
    assert accepted == 1
    assert [(r.row_index, r.field) for r in refusals] == [(1, "reference_price"), (2, "campaign_id"),
                                                          (3, "competitor")]
    stock = pd.DataFrame({"campaign_id": ["c1", "c2"], "observed_ts": [T0, T0], "stock_units": [5, -1]})
    accepted, refusals = ingest_frame(engine, Kind.STOCK, stock, now_ts=T0, source="test", quarantine_source="t",
                                      known_campaigns={"c1", "c2"})
    assert accepted == 1 and refusals[0].field == "stock_units"
    with engine.connect() as conn:
        kinds = sorted(r.kind for r in conn.execute(select(s.quarantine)))
        assert kinds == ["competitor_price"] * 3 + ["stock"]
        assert conn.execute(select(s.stock_levels.c.stock_units)).scalars().all() == [5]


def _feeds(minute: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    ts = T0 + 60 * minute + 60
    prices = pd.DataFrame({"campaign_id": ["c1", "c1", "c2"], "competitor": ["shop-a", "shop-b", "shop-a"],
                           "observed_ts": ts, "price": [70.0 if minute >= 3 else 99.0, 95.0, 100.0],
                           "reference_price": [100.0, 100.0, 100.0]})
    stock = pd.DataFrame({"campaign_id": ["c1", "c2"], "observed_ts": ts,
                          "stock_units": [100_000, 0 if minute >= 40 else 100_000]})
    return prices, stock


def test_the_worker_and_the_evaluator_see_the_same_breaker_figures_and_events(tmp_path):
    engine = make_store(tmp_path / "w.db")
    clock = ManualClock(T0)
    worker = GuardWorker(engine, clock, SETTINGS, alert_sink=enqueue_guard_alert)
    evaluator = GuardEvaluator([Campaign(c, c, "pets", 10_000.0, 20_000.0, 100.0, 0.3) for c in ("c1", "c2")],
                               SETTINGS)
    worker_events, evaluator_events = [], []
    for m in range(60):
        feed_minute(engine, m, {"c1": 2.5, "c2": 2.5})
        decisions, outcomes = minute_frames(m, {"c1": 2.5, "c2": 2.5})
        prices, stock = _feeds(m)
        for kind, frame in ((Kind.COMPETITOR_PRICE, prices), (Kind.STOCK, stock)):
            ingest_frame(engine, kind, frame, now_ts=T0 + 60 * m + 60, source="test", quarantine_source="t",
                         known_campaigns=None)
        evaluator.feed(decisions, outcomes, pd.DataFrame([{"campaign_id": c, **f} for c, f in
                                                          zip(decisions["campaign_id"],
                                                              decisions["features"])]))
        codes = evaluator.codes(prices["campaign_id"])
        evaluator.feed_competitor_prices(codes, prices["competitor"], prices["observed_ts"], prices["price"],
                                         prices["reference_price"])
        evaluator.feed_stock(evaluator.codes(stock["campaign_id"]), stock["observed_ts"], stock["stock_units"])
        clock.now_ts = T0 + 60 * m + 61
        worker_events += [(e.guard, e.campaign_id, e.kind, e.ts) for e in worker.tick().events]
        evaluator_events += [(e.guard, e.campaign_id, e.kind, e.ts) for e in evaluator.tick(clock.now_ts)]
    assert worker_events == evaluator_events
    trips = {(g, c) for g, c, k, _ in worker_events if k == "tripped"}
    assert trips == {("competitor", "c1"), ("low_stock", "c2")}
    with engine.connect() as conn:
        ledger = {(r.guard, r.campaign_id): r for r in conn.execute(select(s.guard_trips))}
        alerts = list_alerts(conn)
    assert ledger[("competitor", "c1")].details["action"] == "pause"
    assert ledger[("low_stock", "c2")].details["action"] == "alert"
    assert {(a.kind, a.channel) for a in alerts} >= {("pull_item", "log"), ("low_stock", "replenishment")}
    pulled = next(a for a in alerts if a.kind == "pull_item")
    assert pulled.payload["competitor_price_drop"] == pytest.approx(0.3)
    assert pulled.payload["competitor_price"] == 70.0


def test_observation_columns_are_appended_after_the_roi_figures():
    assert OBSERVATION_COLUMNS.index("model_calibration_orders") < OBSERVATION_COLUMNS.index("competitor_price_index")


def test_worst_competitor_takes_the_largest_drop_and_the_newest_time():
    drop, price, ref, newest = worst_competitor(np.array([0, 0, 1, -1]), np.array([10.0, 20.0, 5.0, 9.0]),
                                                np.array([90.0, 60.0, 100.0, 1.0]),
                                                np.array([100.0, 100.0, 100.0, 1.0]), 3)
    assert drop[0] == pytest.approx(0.4) and price[0] == 60.0 and newest[0] == 20.0
    assert drop[1] == 0.0 and np.isnan(drop[2])


def test_a_person_puts_one_pulled_item_back_without_touching_its_other_guards(tmp_path):
    from control.domain import InvalidValue, Role, User
    from guards.rule_pool import PoolBounds
    from guards.service import GuardService

    engine = make_store(tmp_path / "p.db")
    service = GuardService(engine, ManualClock(T0), SETTINGS, PoolBounds(), alert_sink=enqueue_guard_alert)
    manager = User("mia", "Mia", Role.MANAGER)
    add_users(engine, manager)
    changed = service.force(manager, "c1", "model", "the competitor's sale is a misprint", guard="competitor")
    assert changed == [{"guard": "competitor", "mode_before": "model", "mode_after": "forced_model"}]
    with pytest.raises(InvalidValue, match="guard"):
        service.force(manager, "c1", "model", "x", guard="nope")
