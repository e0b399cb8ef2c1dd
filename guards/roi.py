"""The ROI guard: trips a campaign to the manual rule pool when the model's ROI falls below the floor.

Three trip rules (docs/GUARDS.md explains the method):

- `pred_roi`: the predicted ROI of the model's current plan is below the floor for
  `consecutive` new evaluations in a row, each with at least `min_pred_spend` yuan
  of predicted spend in the window (a campaign spending nothing risks nothing);
- `realised_roi`: the realised ROI over mature, lag-corrected outcomes is
  significantly below the floor: the upper end of a one-sided `confidence` bound
  is below it, for `realised_consecutive` evaluations in a row, once the mature
  spend is at least `realised_min_spend` and that spend would buy at least
  `realised_min_orders` orders at the floor (enough power to tell);
- `model_calibration` (in MODEL only): the model over-promises everywhere. Pooled over
  every campaign the model serves (guards.observe), k = GMV / the value the model
  predicted for the clicks; its upper `calibration_confidence` bound k_up (Poisson on
  the pooled effective orders, at least `calibration_min_orders` of them) scales the
  predicted ROI of the clicks the campaign bought; below the floor, with
  `min_pred_spend`, for `calibration_consecutive` evaluations in a row. A campaign's
  own evidence takes tens of minutes; the pool's, ~40 times larger, a few.

GMV is treated as compound Poisson: a Poisson number of orders whose values spread
(`order_value_cv`), so n orders weigh as n / (1 + cv^2) Poisson events; the upper
bound uses the Wilson-Hilferty approximation of the exact chi-square bound. The
realised rule's `confidence` is 99.9%: it is tested every minute on every campaign.
Probation passes when the model's predicted ROI -- scaled by how far its value
predictions for the campaign are off (`calibration`) -- is at least floor +
hysteresis and the realised rule does not breach; the scaled prediction below the
floor fails it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from statistics import NormalDist

from control.domain import GuardMode
from guards.config import RoiConfig
from guards.machine import Check, MachineState, Signal, step
from guards.observe import Observation

GUARD = "roi"


@functools.lru_cache(maxsize=8)
def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(confidence)  # the tick asks per campaign: computed once per level


def poisson_upper(n: float, confidence: float) -> float:
    """One-sided upper confidence bound of a Poisson mean, having seen n events."""
    z = _z(confidence)
    k = n + 1.0
    return k * (1.0 - 1.0 / (9.0 * k) + z / (3.0 * math.sqrt(k))) ** 3


def effective_orders(n: float, order_value_cv: float) -> float:
    """Orders as Poisson events: GMV is a sum of a Poisson number of orders of varying value
    (compound Poisson), whose variance is that of n / (1 + cv^2) orders of one value."""
    return n / (1.0 + order_value_cv * order_value_cv)


def realised_upper(obs: Observation, config: RoiConfig) -> float:
    """Upper confidence bound of the realised ROI (NaN without mature spend)."""
    if not obs.realised_spend > 0:
        return math.nan
    n = effective_orders(obs.realised_orders, config.order_value_cv)
    if n > 0:
        return obs.realised_roi * poisson_upper(n, config.confidence) / n
    return poisson_upper(0.0, config.confidence) * obs.avg_order_value / obs.realised_spend


def calibration_upper(obs: Observation, config: RoiConfig) -> float:
    """Upper confidence bound of the model-wide calibration k, at most 1 (NaN: too little evidence)."""
    n = obs.model_calibration_orders
    if not (n >= config.calibration_min_orders and math.isfinite(obs.model_calibration)):
        return math.nan
    n = effective_orders(n, config.order_value_cv)
    return min(1.0, obs.model_calibration * poisson_upper(n, config.calibration_confidence) / n)


def calibration(state: MachineState, obs: Observation, config: RoiConfig) -> float:
    """How far the model's predictions are off (realised / predicted, at most 1), outside MODEL.

    While the pool serves, realised outcomes are mostly the pool's, so the canary is
    judged on the model's predicted ROI scaled by this factor. It is measured live: the
    campaign's value calibration (GMV known / the value the model predicted for its
    clicks, mature buckets), which holds whoever set the bids, so an over-promising model
    shows even while the pool serves. Without enough mature spend, the factor measured
    at the trip (realised / predicted ROI, or the pooled k of a model_calibration trip).
    In MODEL the prediction is taken as it is (1.0).
    """
    if state.mode is GuardMode.MODEL:
        return 1.0
    if obs.realised_spend >= config.realised_min_spend and obs.value_calibration == obs.value_calibration:
        return min(1.0, obs.value_calibration)
    at_trip = dict(state.figures_at_trip)
    if state.cause == "model_calibration":
        k = at_trip.get("model_calibration")
        return min(1.0, k) if k is not None and k == k else 1.0
    pred, realised = at_trip.get("pred_roi"), at_trip.get("realised_roi")
    if state.cause != "realised_roi" or not pred or realised is None:
        return 1.0
    return min(1.0, realised / pred)


def calibrated_bought_roi(figures: Mapping[str, float]) -> float | None:
    """From a signal's figures: the predicted ROI of the clicks bought, calibrated by the pooled k
    (its point estimate) -- what a model_calibration trip says the campaign really makes."""
    bought, k = figures.get("bought_pred_roi"), figures.get("model_calibration")
    if bought is None or k is None or bought != bought or k != k:
        return None
    return bought * min(1.0, k)


def roi_signal(obs: Observation, config: RoiConfig, state: MachineState) -> Signal:
    floor = config.floor
    pred_roi = obs.pred_roi * calibration(state, obs, config)
    pred_breach = None
    if pred_roi == pred_roi and obs.pred_spend >= config.min_pred_spend:
        pred_breach = pred_roi < floor
    checks = [Check("pred_roi", pred_breach, config.machine.consecutive)]
    upper = realised_upper(obs, config)
    realised_breach = None
    if config.realised_enabled:
        powered = (obs.realised_spend >= config.realised_min_spend and obs.avg_order_value > 0
                   and floor * obs.realised_spend / obs.avg_order_value >= config.realised_min_orders)
        if powered and upper == upper:
            realised_breach = upper < floor
        checks.append(Check("realised_roi", realised_breach, config.realised_consecutive))
    k_upper = calibration_upper(obs, config)
    if config.calibration_enabled:
        calibrated_breach = None
        if state.mode is GuardMode.MODEL and k_upper == k_upper and obs.bought_pred_roi == obs.bought_pred_roi \
                and obs.pred_spend >= config.min_pred_spend:
            # k_upper = 1: no significant over-promise; the pred_roi rule judges the prediction itself.
            calibrated_breach = k_upper < 1.0 and obs.bought_pred_roi * k_upper < floor
        checks.append(Check("model_calibration", calibrated_breach, config.calibration_consecutive))
    healthy = None
    if pred_roi == pred_roi:
        healthy = pred_roi >= floor + config.hysteresis and not realised_breach
    figures = {"floor": floor, "pred_roi": obs.pred_roi, "calibrated_pred_roi": pred_roi, "pred_spend": obs.pred_spend,
               "spend_per_hour": obs.spend_per_hour, "realised_roi": obs.realised_roi,
               "realised_upper": upper, "realised_spend": obs.realised_spend,
               "pool_pred_roi": obs.pool_pred_roi, "value_calibration": obs.value_calibration,
               "bought_pred_roi": obs.bought_pred_roi,
               "model_calibration": obs.model_calibration, "model_calibration_upper": k_upper}
    return Signal(obs.latest_bucket_ts, tuple(checks), healthy, obs.data_age_s, figures)


def transition(state: MachineState, observation: Observation, config: RoiConfig,
               now_ts: int) -> tuple[MachineState, list]:
    """The ROI guard's pure transition: (state, observation, config, now) -> (state, events)."""
    return step(state, roi_signal(observation, config, state), config.machine, now_ts,
                guard=GUARD, campaign_id=observation.campaign_id)
