"""The ROI guard's model-wide calibration check: pooled evidence in, signal out (pure)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from control.clock import ManualClock
from control.domain import GuardMode, InvalidValue
from guards.alert_bridge import CAUSES, enqueue_guard_alert
from guards.alerts import list_alerts
from guards.alerts.templates import Style, render
from guards.config import parse_guard_settings
from guards.evaluator import GuardEvaluator
from guards.machine import MachineState
from guards.observe import FEATURE_COLUMNS, lag_share, lookback_s, observations, observe
from guards.roi import calibration_upper, roi_signal, sequential_for, transition
from guards.worker import GuardWorker
from store import repo
from store import schema as s
from tests.guards_helpers import T0, make_store, minute_frames, obs

SETTINGS = parse_guard_settings()
OBSERVE = SETTINGS.observe
ROI = SETTINGS.defaults["roi"]
LOOKBACK = lookback_s(OBSERVE, ROI.machine.stale_after_s)
RULE = "model_calibration"


def pooled(pred: dict[str, float], realised: dict[str, float], now_minute: int, *, spend: float = 200.0,
           aov: dict[str, float] | None = None):
    """Observations at T0 + now_minute: every campaign spends `spend` a minute from minute 0 with the
    model's predicted ROI `pred[c]`; its GMV (true ROI `realised[c]`) is known as the lag curve says."""
    now = T0 + 60 * now_minute
    aov = aov or {c: 100.0 for c in pred}
    buckets = T0 + 60 * np.arange(now_minute)
    share = lag_share(now - buckets, OBSERVE)
    decisions, outcomes = [], []
    for c, p in pred.items():
        for b, f in zip(buckets.tolist(), share.tolist(), strict=True):
            decisions.append((c, b, 1.0, p, 0.0, 0.0))
            gmv = realised[c] * spend * f
            outcomes.append((c, b, spend, gmv / aov[c], gmv, p * spend, now))  # predicted GMV: clicks x value
    frames = (pd.DataFrame(decisions, columns=["campaign_id", "bucket_ts", "w", "roi_w", "pool_w", "pool_n"]),
              pd.DataFrame(outcomes, columns=["campaign_id", "bucket_ts", "spend", "orders", "gmv", "pred_gmv",
                                              "last_known_ts"]),
              pd.DataFrame(columns=["campaign_id", *FEATURE_COLUMNS]),
              pd.DataFrame({"campaign_id": list(pred), "avg_order_value": [aov[c] for c in pred]}))
    sequential = sequential_for(SETTINGS, list(pred))
    return now, {o.campaign_id: o for o in observations(observe(*frames, now, OBSERVE, LOOKBACK, sequential))}


def run(pred, realised, minutes: int):
    """Each campaign's guard over `minutes` ticks; (states, first trip cause by campaign)."""
    states = {c: MachineState(since_ts=T0) for c in pred}
    causes = {}
    for m in range(1, minutes + 1):
        now, observed = pooled(pred, realised, m)
        for c, o in observed.items():
            states[c], events = transition(states[c], o, ROI, now)
            for e in events:
                if e.kind == "tripped":
                    causes.setdefault(c, e.cause)
    return states, causes


def campaigns(n: int, value: float) -> dict[str, float]:
    return {f"c{i:02d}": value for i in range(n)}


def test_the_pooled_calibration_is_realised_over_predicted_gmv_and_counts_effective_orders():
    pred = {"a": 2.5, "b": 3.0}
    _, o = pooled(pred, {"a": 1.25, "b": 1.5}, 10)
    assert o["a"].model_calibration == pytest.approx(0.5) and o["b"].model_calibration == pytest.approx(0.5)
    # Same baskets: the effective order count is the order count (GMV known / basket).
    gmv_known = sum(r * 200.0 * lag_share(60 * np.arange(1, 11), OBSERVE).sum() for r in (1.25, 1.5))
    orders = o["a"].model_calibration_orders
    assert orders == pytest.approx(gmv_known / 100.0)
    # Campaign a sells 10-yuan orders (ten times as many), b 1000-yuan ones that carry half the GMV:
    # more orders, yet far fewer effective ones behind the same ratio.
    _, o2 = pooled(pred, {"a": 1.25, "b": 1.5}, 10, aov={"a": 10.0, "b": 1000.0})
    assert o2["a"].model_calibration == pytest.approx(0.5)
    assert o2["a"].model_calibration_orders < orders / 5
    # Only buckets the lag curve says are partly known (age >= 0 by default) count; with none, no figure.
    _, empty = pooled(pred, {"a": 1.25, "b": 1.5}, 0)
    assert math.isnan(empty["a"].model_calibration) and empty["a"].model_calibration_orders == 0


def test_an_over_promising_model_trips_the_campaigns_its_calibrated_prediction_puts_below_the_floor():
    pred = {**campaigns(39, 2.5), "rich": 6.0}
    realised = {c: p * 0.5 for c, p in pred.items()}
    states, causes = run(pred, realised, 8)
    assert {c for c, s in states.items() if s.mode is GuardMode.TRIPPED} == set(campaigns(39, 0))
    assert set(causes.values()) == {RULE}
    # 6.0 x 0.5 is still above the floor: the model over-promises there too, but not below it.
    assert states["rich"].mode is GuardMode.MODEL


def test_a_well_calibrated_model_with_one_bad_campaign_does_not_trip_the_others():
    pred = campaigns(40, 2.3)
    realised = {**pred, "c00": 1.0}
    states, causes = run(pred, realised, 25)  # 200 yuan a minute of 100-yuan orders: c00 trips at 21-25
    assert {c for c, s in states.items() if s.mode is GuardMode.TRIPPED} == {"c00"}
    assert causes == {"c00": "cusum"}  # its own evidence, not the model-wide check


def test_too_little_pooled_evidence_is_no_breach():
    pred = campaigns(3, 2.5)
    realised = {c: 1.0 for c in pred}
    _, observed = pooled(pred, realised, 2, spend=20.0)
    o = observed["c00"]
    assert o.model_calibration_orders < ROI.calibration_min_orders
    assert math.isnan(calibration_upper(o, ROI))
    check = next(c for c in roi_signal(o, ROI, MachineState()).checks if c.rule == RULE)
    assert check.breached is None


@pytest.mark.parametrize("k,orders,pred,mode,expected", [
    (0.5, 400.0, 2.5, GuardMode.MODEL, True),
    (0.5, 400.0, 5.0, GuardMode.MODEL, False),        # 5.0 x k_upper is still above the floor
    (0.95, 10_000.0, 2.02, GuardMode.MODEL, True),    # significant, small over-promise near the floor
    (1.0, 10_000.0, 1.9, GuardMode.MODEL, False),     # no over-promise: the pred_roi rule's business
    (0.5, 400.0, 2.5, GuardMode.PROBATION, "absent"),  # only while the model serves
    (0.5, 50.0, 2.5, GuardMode.MODEL, None),          # too little evidence
])
def test_the_check_on_given_figures(k, orders, pred, mode, expected):
    o = obs(pred, model_calibration=k, model_calibration_orders=orders)
    signal = roi_signal(o, ROI, MachineState(mode=mode))
    assert not signal.figures["model_calibration_upper"] > 1.0  # at most 1 (NaN without evidence)
    if expected == "absent":
        assert RULE not in {c.rule for c in signal.checks}
        return
    check = next(c for c in signal.checks if c.rule == RULE)
    assert check.breached is expected and check.needed == ROI.calibration_consecutive
    low_spend = roi_signal(replace(o, pred_spend=ROI.min_pred_spend / 2), ROI, MachineState(mode=mode))
    assert next(c for c in low_spend.checks if c.rule == RULE).breached is None


def test_the_check_can_be_switched_off_and_its_keys_are_validated():
    off = replace(ROI, calibration_enabled=False)
    signal = roi_signal(obs(2.5, model_calibration=0.5, model_calibration_orders=400.0), off, MachineState())
    assert RULE not in {c.rule for c in signal.checks}
    assert parse_guard_settings("[roi]\ncalibration_consecutive = 3").defaults["roi"].calibration_consecutive == 3
    for text, key in (("[roi]\ncalibration_consecutive = 0", "roi.calibration_consecutive"),
                      ("[roi]\ncalibration_confidence = 1.5", "roi.calibration_confidence"),
                      ("[roi]\ncalibration_min_orders = 0.0", "roi.calibration_min_orders"),
                      ("[roi]\ncalibration_enabled = 1", "roi.calibration_enabled"),
                      ("[observe]\ncalibration_maturity_cdf = 0.0", "observe.calibration_maturity_cdf")):
        with pytest.raises(InvalidValue, match=key.replace(".", r"\.")):
            parse_guard_settings(text)


def test_worker_and_stress_evaluator_trip_an_over_promising_model_and_ledger_its_calibrated_roi(store_url):
    """Through the store (the worker's SQL) and in memory (bidlens stress): the same trips, cause
    model_calibration, and the ledger's ROI before is the calibrated prediction."""
    # Every bucket's GMV known at once (the synthetic feed), and no per-campaign sequential evidence:
    # only the model-wide check can see that realised ROI is half the prediction.
    settings = parse_guard_settings("[observe]\nlag_minutes = [0]\nlag_cdf = [1.0]\n"
                                    "[roi]\ncusum_enabled = false\n")
    engine = make_store(store_url, campaigns=("c1", "c2", "c3"))
    clock = ManualClock(T0)
    w = GuardWorker(engine, clock, settings, alert_sink=enqueue_guard_alert)
    with engine.connect() as conn:
        evaluator = GuardEvaluator(list(repo.load_campaigns(conn).values()), settings, ("roi",))
    pred = {"c1": 2.5, "c2": 2.5, "c3": 6.0}
    worker_events, evaluator_events = [], []
    for m in range(8):
        decisions, _ = minute_frames(m, pred, spend=1000.0)
        _, outcomes = minute_frames(m, {c: p / 2 for c, p in pred.items()}, spend=1000.0)
        repo.write_decisions(engine, decisions, received_ts=T0 + 60 * m + 60)
        repo.write_outcomes(engine, outcomes)
        evaluator.feed(decisions, outcomes)
        clock.now_ts = T0 + 60 * m + 61
        worker_events += [e for e in w.tick().events if e.guard == "roi"]
        evaluator_events += evaluator.tick(clock.now_ts)
    assert [(e.campaign_id, e.kind, e.ts) for e in evaluator_events] == \
        [(e.campaign_id, e.kind, e.ts) for e in worker_events]
    assert [(e.campaign_id, e.cause) for e in worker_events] == [("c1", RULE), ("c2", RULE)]
    with engine.connect() as conn:
        trips = conn.execute(select(s.guard_trips)).all()
        alerts = list_alerts(conn)
    assert [t.roi_before for t in trips] == [pytest.approx(1.25, rel=0.02)] * 2
    assert alerts[0].payload["detail"] == CAUSES[RULE]
    # The alert says what the campaign really makes: its prediction (2.5) and young outcomes do not.
    assert alerts[0].payload["calibrated_roi"] == pytest.approx(1.25, rel=0.02)
    message = render([alerts[0]], "m1", Style("both"))
    assert "校准后 ROI 1.2" in message and "Calibrated ROI 1.2" in message


def test_a_launch_gates_calibration_is_a_prior_that_live_evidence_outweighs():
    from guards.observe import CalibrationPrior, model_calibration

    prior = CalibrationPrior(k=0.6, orders=150.0)
    # No live outcome yet: the prior alone, with its bounded weight.
    k, n, share = model_calibration(np.zeros(3), np.zeros(3), np.zeros(3), prior)
    assert (k, n, share) == (pytest.approx(0.6), 150.0, 1.0)
    # 1,350 live orders at k = 1 (same baskets): the prior is a tenth of the evidence.
    gmv, orders, predicted = np.full(3, 45_000.0), np.full(3, 450.0), np.full(3, 45_000.0)
    k, n, share = model_calibration(gmv, orders, predicted, prior)
    assert n == pytest.approx(1500.0) and share == pytest.approx(0.1)
    assert k == pytest.approx(150_000 / (135_000 + 15_000 / 0.6))  # 1,500 orders of GMV over their value
    # The pooled rule reads it from the first minute: a model whose gate says it over-promises by 40% is
    # caught before any outcome is mature.
    o = obs(2.5, model_calibration=0.6, model_calibration_orders=150.0)
    check = next(c for c in roi_signal(o, ROI, MachineState()).checks if c.rule == RULE)
    assert check.breached is True


@pytest.mark.parametrize("pooled_k, orders, restores", [
    (math.nan, 0.0, True),      # no pooled evidence: the campaign's own calibration decides
    (1.0, 5_000.0, True),       # a well-calibrated model: the same
    (0.6, 5_000.0, False),      # the model over-promises model-wide by 40%: 3.0 x 0.6 < 2.2
])
def test_a_canary_is_not_restored_while_the_model_wide_calibration_would_trip_it_again(pooled_k, orders, restores):
    # The campaign's own calibration looks fine (k 1.0 on 400 orders, mostly the pool's clicks); the
    # model's plan predicts 3.0 for its canary.
    o = obs(3.0, value_calibration=1.0, realised_roi=3.0, realised_spend=40_000.0, realised_orders=400.0,
            model_calibration=pooled_k, model_calibration_orders=orders)
    probation = MachineState(mode=GuardMode.PROBATION, since_ts=T0 - 600)
    signal = roi_signal(o, ROI, probation)
    assert signal.healthy is restores
    assert not any(c.breached for c in signal.checks)  # not a failure either: the canary goes on
