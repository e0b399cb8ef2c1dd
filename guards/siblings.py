"""Sibling guards on the same machine: budget pacing, inventory, competitor price, safety stock.

Each is only a signal function: what counts as a breach and what counts as
healthy, read from the observation. guards.registry lists them.

The competitor price and safety-stock breakers watch a fact outside the model (a
competitor's price, the warehouse): while they hold a campaign a canary would
learn nothing, so in PROBATION a reading still past the threshold is "not yet"
(no breach, no pass) rather than a failed probation; the campaign comes back at
the first `probation_evaluations` healthy readings in a row, and a probation that
has waited `probation_max_s` (a day by default) fails and announces it again.
"""

from __future__ import annotations

import math

from control.domain import GuardMode
from guards.config import CompetitorConfig, InventoryConfig, LowStockConfig, PacingConfig
from guards.feeds import days_of_stock
from guards.machine import Check, MachineState, Signal
from guards.observe import Observation


def pacing_signal(obs: Observation, config: PacingConfig, state: MachineState) -> Signal:
    """Spend running more than `max_ahead` ahead of the day's plan (spend_pace > 1 + max_ahead)."""
    pace = obs.spend_pace
    limit = 1.0 + config.max_ahead
    breached = None
    if pace == pace and obs.day_elapsed_s >= config.min_elapsed_s:
        breached = pace > limit
    healthy = None if pace != pace else pace <= limit - config.hysteresis
    return Signal(obs.latest_bucket_ts, (Check("spend_pace", breached, config.machine.consecutive),),
                  healthy, obs.data_age_s,
                  {"spend_pace": pace, "limit": limit})


def inventory_signal(obs: Observation, config: InventoryConfig, state: MachineState) -> Signal:
    """Stock below `min_level` of the opening stock: the pool's bids cut the volume."""
    level = obs.inventory_level
    breached = None if level != level else level < config.min_level
    healthy = None if level != level else level >= config.min_level + config.hysteresis
    return Signal(obs.latest_bucket_ts, (Check("inventory_level", breached, config.machine.consecutive),),
                  healthy, obs.data_age_s, {"inventory_level": level, "min_level": config.min_level})


def _waiting(breached: bool | None, state: MachineState) -> bool | None:
    """In PROBATION an outside condition still past its threshold is waited for, not failed."""
    return None if breached and state.mode is GuardMode.PROBATION else breached


def _money_figures(obs: Observation) -> dict:
    """What the ledger's loss estimate holds through a trip (guards.handlers)."""
    return {"pred_roi": obs.pred_roi, "realised_roi": obs.realised_roi, "spend_per_hour": obs.spend_per_hour}


def competitor_signal(obs: Observation, config: CompetitorConfig, state: MachineState) -> Signal:
    """A competitor more than `max_drop` below its reference price: pull the item (the configured pause).

    The drop is the larger of the decisions' competitor price index (1 - index: the
    competitors' prices against their usual ones) and the competitor price feed's worst reading."""
    drops = [d for d in (1.0 - obs.competitor_price_index, obs.competitor_price_drop) if d == d]
    drop = max(drops) if drops else math.nan
    breached = None if drop != drop else drop > config.max_drop
    healthy = None if drop != drop else drop <= config.max_drop - config.hysteresis
    return Signal(obs.latest_bucket_ts, (Check("competitor_price", _waiting(breached, state),
                                               config.machine.consecutive),),
                  healthy, obs.competitor_age_s,
                  {"competitor_price_drop": drop, "max_drop": config.max_drop,
                   "competitor_price_index": obs.competitor_price_index, "competitor_price": obs.competitor_price,
                   "competitor_reference_price": obs.competitor_reference_price, **_money_figures(obs)})


def low_stock_signal(obs: Observation, config: LowStockConfig, state: MachineState) -> Signal:
    """Fewer than `min_days` of sales left in stock at the current rate: a replenishment alert."""
    days = days_of_stock(obs.stock_units, obs.sales_per_day)
    breached = None if days != days else days < config.min_days
    healthy = None if days != days else days >= config.min_days + config.hysteresis
    figures = {"min_days": config.min_days, "stock_units": obs.stock_units, "sales_per_day": obs.sales_per_day,
               **_money_figures(obs)}
    if math.isfinite(days):  # no sales: the stock lasts for ever, which a figure cannot say
        figures["days_of_stock"] = days
    return Signal(obs.latest_bucket_ts, (Check("days_of_stock", _waiting(breached, state),
                                               config.machine.consecutive),),
                  healthy, obs.stock_age_s, figures)
