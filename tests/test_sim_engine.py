from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chisquare
from sim_support import kit_for, small_scenario

from control.domain import (
    GuardAction,
    GuardMode,
    GuardState,
    Override,
    OverrideField,
    OverrideScope,
    OverrideStatus,
)
from control.policy import KillSwitch, resolve_policy
from sim.catalog import DAY_START_TS
from sim.engine import Simulation
from sim.scenario import BidderParams, Event


def simulation(scenario=None, seed=3):
    scenario = scenario or small_scenario()
    kit = kit_for(scenario.world.campaigns)
    return Simulation(scenario, seed, kit.bidders, kit.history, pool=kit.pool), kit


def test_the_model_only_path_equals_resolve_policy_when_nothing_else_can_decide():
    sim, _ = simulation()
    result = sim.step()
    d = result.decisions
    plan = d[["campaign_id", "audience_package", "bucket_ts", "model_bid", "audience_on", "budget_share"]]
    resolved = resolve_policy(plan.rename(columns={"model_bid": "bid"}), [], {}, KillSwitch(), {}, result.bucket_ts)
    for column in ("bid", "audience_on", "decided_by", "rule_id", "guard_event_id", "canary_share"):
        assert list(resolved[column]) == list(d[column if column != "reason" else "decided_reason"]), column
    assert list(resolved["reason"]) == list(d["decided_reason"])
    assert list(resolved["override_ids"]) == list(d["override_ids"])


def test_budgets_hold_and_orders_never_exceed_clicks_even_for_an_overbidding_model():
    # The gmv variant with a very thin target and heavy traffic runs into every budget.
    scenario = replace(small_scenario(traffic_scale=10.0), bidder=BidderParams(variant="gmv", gmv_target_roi=0.6))
    sim, _ = simulation(scenario)
    budget = np.array([c.daily_budget for c in sim.catalog.campaigns])
    spent = np.zeros(sim.C)
    for _ in range(600):
        r = sim.step()
        c = r.columns
        assert (c["orders"] <= c["clicks"]).all() and (c["clicks"] <= c["impressions"]).all()
        assert (c["impressions"] <= c["auctions"]).all()
        spent += r.campaign_spend
        assert (spent <= budget + 1e-6).all()
    assert (spent > 0.99 * budget).any(), "the test should reach a budget"


def test_orders_arrive_with_the_scenarios_conversion_lag_curve():
    sim, _ = simulation(small_scenario(traffic_scale=5.0), seed=5)  # enough orders for a tight check
    total_orders = 0
    released = []
    for _ in range(240):
        r = sim.step()
        total_orders += int(r.columns["orders"].sum())
        o = r.outcomes
        released.append(pd.DataFrame({"lag": o.known_minute - o.bucket_minute - 1, "orders": o.orders}))
    late = sim.drain()
    released.append(pd.DataFrame({"lag": late.known_minute - late.bucket_minute - 1, "orders": late.orders}))
    by_lag = pd.concat(released).groupby("lag")["orders"].sum()
    assert int(by_lag.sum()) == total_orders  # nothing lost, nothing invented
    lags, shares = sim.scenario.world.lag_minutes, sim.scenario.world.lag_shares
    observed = by_lag.reindex(lags, fill_value=0).to_numpy() / total_orders
    assert set(by_lag.index) <= set(lags)
    np.testing.assert_allclose(observed, shares, atol=0.02)
    # and statistically: the counts are a multinomial draw from the curve
    counts = by_lag.reindex(lags, fill_value=0).to_numpy()
    assert total_orders > 10_000
    assert chisquare(counts, np.asarray(shares) * total_orders).pvalue > 0.001


def test_an_outage_holds_outcomes_until_it_ends_then_delivers_the_backlog():
    scenario = replace(small_scenario(), events=(Event("outcome_outage", 30, 60),))
    sim, _ = simulation(scenario)
    known_during = 0
    for _ in range(60):
        r = sim.step()
        if 30 <= r.minute + 1 < 60:
            known_during += len(r.outcomes.slot)
        if r.minute + 1 == 60:
            backlog = r.outcomes
    assert known_during == 0
    assert (backlog.bucket_minute < 59).sum() > 0 and (backlog.known_minute == 60).all()


def test_a_stockout_stops_orders_but_not_spend():
    scenario = replace(small_scenario(), events=(Event("stockout", 10, campaigns=("c02",)),))
    sim, _ = simulation(scenario)
    for _ in range(40):
        r = sim.step()
        if r.minute >= 10:
            assert r.campaign_gmv[1] == 0
    assert r.campaign_spend[1] > 0


def test_the_kill_switch_puts_every_slot_on_the_rule_pool_and_serves_its_bids():
    sim, _ = simulation()
    r = sim.step(kill_switch=KillSwitch(global_on=True))
    d = r.decisions
    assert set(d["decided_by"]) == {"rule_pool"}
    np.testing.assert_allclose(d["bid"], d["pool_bid"])
    assert set(d["decided_reason"]) == {"kill_switch"}


def test_an_approved_override_changes_what_is_served_in_its_scope_only():
    sim, _ = simulation()
    override = Override(7, OverrideScope("c01", "pets"), OverrideField.BID, 0.01, "too hot", "op", 0,
                        DAY_START_TS + 3600, status=OverrideStatus.APPROVED, reviewed_by="mgr",
                        reviewed_ts=1)
    r = sim.step(overrides=[override])
    d = r.decisions.set_index(["campaign_id", "audience_package"])
    assert d.loc[("c01", "pets"), "bid"] == 0.01 and d.loc[("c01", "pets"), "decided_by"] == "override"
    assert (d.drop(index=("c01", "pets"))["decided_by"] == "model").all()
    assert d.loc[("c01", "pets"), "impressions"] == 0  # nobody sells a click for one fen


def test_probation_sends_the_canary_share_back_to_the_model():
    sim, _ = simulation()
    guards = {"c01": GuardState("c01", GuardMode.PROBATION, canary_share=0.25, event_id=3)}
    r = sim.step(guards=guards)
    d = r.decisions
    c01 = d[d["campaign_id"] == "c01"]
    assert set(c01["decided_by"]) == {"rule_pool"} and set(c01["canary_share"]) == {0.25}
    assert set(c01["guard_event_id"]) == {3}
    assert set(d[d["campaign_id"] != "c01"]["decided_by"]) == {"model"}


def test_a_guards_bid_cut_serves_the_models_bid_cut_and_a_pause_buys_nothing():
    sim, _ = simulation(small_scenario(traffic_scale=5.0))
    guards = {"c01": GuardState("c01", GuardMode.TRIPPED, action=GuardAction.BID_CUT, bid_factor=0.5, event_id=1),
              "c02": GuardState("c02", GuardMode.TRIPPED, action=GuardAction.PAUSE, event_id=2)}
    spent = np.zeros(3)
    for _ in range(20):
        d = sim.step(guards=guards).decisions
        cut, paused = d[d["campaign_id"] == "c01"], d[d["campaign_id"] == "c02"]
        np.testing.assert_allclose(cut["bid"], cut["model_bid"] * 0.5)
        assert set(cut["decided_by"]) == set(paused["decided_by"]) == {"guard"}
        assert not paused["audience_on"].any() and paused["impressions"].sum() == 0
        spent += [d[d["campaign_id"] == c]["spend"].sum() for c in ("c01", "c02", "c03")]
    assert spent[1] == 0 and spent[0] > 0 and spent[2] > 0


def test_the_feature_matrix_is_what_the_model_saw():
    sim, kit = simulation()
    r = sim.step()
    bidder = kit.bidders[r.variant]
    assert r.features.shape == (sim.S, len(bidder.artifact.feature_names))
    assert list(r.feature_names) == bidder.artifact.feature_names
    np.testing.assert_allclose(bidder.predict_value(r.features), r.decisions["pred_value"])


def test_the_same_seed_replays_the_same_day_and_another_seed_does_not():
    a, _ = simulation(seed=11)
    b, _ = simulation(seed=11)
    c, _ = simulation(seed=12)
    ra = [a.step().campaign_spend for _ in range(30)]
    rb = [b.step().campaign_spend for _ in range(30)]
    rc = [c.step().campaign_spend for _ in range(30)]
    assert np.array_equal(np.array(ra), np.array(rb))
    assert not np.array_equal(np.array(ra), np.array(rc))


def test_stepping_past_the_end_of_the_day_is_refused():
    sim, _ = simulation()
    sim.minute = 1440
    with pytest.raises(RuntimeError):
        sim.step()


def test_under_drift_true_value_falls_a_third_while_predictions_barely_move():
    drifted = ("parenting", "gifting", "beauty", "high_value_repeat")
    scenario = replace(small_scenario(traffic_scale=3.0),
                       events=(Event("cvr_shift", 120, audience_packages=drifted, factor=0.667),))
    sim, _ = simulation(scenario)
    sums = {"before": np.zeros(3), "after": np.zeros(3)}
    for _ in range(240):
        c = sim.step().columns
        rows = np.isin(c["audience_package"], drifted)
        clicks = c["clicks"][rows]
        window = "before" if sim.minute <= 120 else "after"
        sums[window] += [(c["pred_value"][rows] * clicks).sum(), c["gmv"][rows].sum(), clicks.sum()]
    (pred_b, true_b, _), (pred_a, true_a, _) = (sums["before"] / sums["before"][2], sums["after"] / sums["after"][2])
    assert true_a / true_b < 0.8          # the truth moved (by about a third, with noise and the clock)
    assert pred_a / pred_b > 0.9          # the model did not follow


def test_outcome_rows_become_known_at_the_end_of_the_bucket_that_reports_them():
    sim, _ = simulation()
    for _ in range(20):
        r = sim.step()
        rows = r.outcomes_frame
        assert (rows["known_ts"] == r.now_ts).all() and (rows["bucket_ts"] <= r.bucket_ts).all()
        assert set(rows["campaign_id"]) <= set(r.decisions["campaign_id"])
    assert (rows["bucket_ts"] < r.bucket_ts).any()  # lagged orders of earlier buckets arrive too


def test_increments_as_rows_from_catalog_ids_or_from_slot_names_agree():
    sim, _ = simulation()
    for _ in range(5):
        r = sim.step()
    by_catalog = r.outcomes.frame(sim.catalog.campaign_ids, sim.catalog.package_codes)
    pd.testing.assert_frame_equal(by_catalog, r.outcomes_frame)
