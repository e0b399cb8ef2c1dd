"""Sibling guards on the same machine: budget pacing and inventory.

Each is only a signal function: what counts as a breach and what counts as
healthy, read from the observation. guards.registry lists them.
"""

from __future__ import annotations

from guards.config import InventoryConfig, PacingConfig
from guards.machine import Check, Signal
from guards.observe import Observation


def pacing_signal(obs: Observation, config: PacingConfig) -> Signal:
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


def inventory_signal(obs: Observation, config: InventoryConfig) -> Signal:
    """Stock below `min_level` of the opening stock: the pool's bids cut the volume."""
    level = obs.inventory_level
    breached = None if level != level else level < config.min_level
    healthy = None if level != level else level >= config.min_level + config.hysteresis
    return Signal(obs.latest_bucket_ts, (Check("inventory_level", breached, config.machine.consecutive),),
                  healthy, obs.data_age_s, {"inventory_level": level, "min_level": config.min_level})
