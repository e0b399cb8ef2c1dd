"""The ROI guard: trips a campaign to the manual rule pool when the model's ROI falls below the floor.

Two trip rules (docs/GUARDS.md explains the method):

- `pred_roi`: the predicted ROI of the model's current plan is below the floor for
  `consecutive` new evaluations in a row, each with at least `min_pred_spend` yuan
  of predicted spend in the window (a campaign spending nothing risks nothing);
- `realised_roi`: the realised ROI over mature, lag-corrected outcomes is
  significantly below the floor: the upper end of a one-sided `confidence` bound
  is below it, for `realised_consecutive` evaluations in a row, once the mature
  spend is at least `realised_min_spend` and that spend would buy at least
  `realised_min_orders` orders at the floor (enough power to tell).

The order count is treated as Poisson (GMV = orders x basket value); its upper
bound uses the Wilson-Hilferty approximation of the exact chi-square bound.
Probation passes when the model's predicted ROI is at least floor + hysteresis
and the realised rule does not breach.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from guards.config import RoiConfig
from guards.machine import Check, MachineState, Signal, step
from guards.observe import Observation

GUARD = "roi"


def poisson_upper(n: float, confidence: float) -> float:
    """One-sided upper confidence bound of a Poisson mean, having seen n events."""
    z = NormalDist().inv_cdf(confidence)
    k = n + 1.0
    return k * (1.0 - 1.0 / (9.0 * k) + z / (3.0 * math.sqrt(k))) ** 3


def realised_upper(obs: Observation, confidence: float) -> float:
    """Upper confidence bound of the realised ROI (NaN without mature spend)."""
    if not obs.realised_spend > 0:
        return math.nan
    n = obs.realised_orders
    basket = obs.realised_roi * obs.realised_spend / n if n > 0 else obs.avg_order_value
    return poisson_upper(n, confidence) * basket / obs.realised_spend


def roi_signal(obs: Observation, config: RoiConfig) -> Signal:
    floor = config.floor
    pred_breach = None
    if obs.pred_roi == obs.pred_roi and obs.pred_spend >= config.min_pred_spend:
        pred_breach = obs.pred_roi < floor
    checks = [Check("pred_roi", pred_breach, config.machine.consecutive)]
    upper = realised_upper(obs, config.confidence)
    realised_breach = None
    if config.realised_enabled:
        powered = (obs.realised_spend >= config.realised_min_spend and obs.avg_order_value > 0
                   and floor * obs.realised_spend / obs.avg_order_value >= config.realised_min_orders)
        if powered and upper == upper:
            realised_breach = upper < floor
        checks.append(Check("realised_roi", realised_breach, config.realised_consecutive))
    healthy = None
    if obs.pred_roi == obs.pred_roi:
        healthy = obs.pred_roi >= floor + config.hysteresis and not realised_breach
    figures = {"floor": floor, "pred_roi": obs.pred_roi, "pred_spend": obs.pred_spend,
               "spend_per_hour": obs.spend_per_hour, "realised_roi": obs.realised_roi,
               "realised_upper": upper, "realised_spend": obs.realised_spend,
               "pool_pred_roi": obs.pool_pred_roi}
    return Signal(obs.latest_bucket_ts, tuple(checks), healthy, obs.data_age_s, figures)


def transition(state: MachineState, observation: Observation, config: RoiConfig,
               now_ts: int) -> tuple[MachineState, list]:
    """The ROI guard's pure transition: (state, observation, config, now) -> (state, events)."""
    return step(state, roi_signal(observation, config), config.machine, now_ts,
                guard=GUARD, campaign_id=observation.campaign_id)
