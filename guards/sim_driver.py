"""`bidlens stress`'s guarded arm: the simulator's guard-driver hook (sim.kit.GUARD_DRIVER_MODULE).

sim.stress calls `guard_states(now_ts, last)` before every bucket with the previous
bucket's result; this feeds that result to a GuardDriver (the worker's observation
and state machine, no store) and answers the guard states the bucket's effective
policy reads. The ROI floor is the scenario's (bidder.floor_roi); everything else
comes from the same guard configuration as the worker (BIDLENS_GUARD_CONFIG).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import pandas as pd

from control.config import load_settings
from control.domain import GuardState
from guards.config import GuardSettings, load_guard_settings
from guards.driver import GuardDriver
from guards.observe import FEATURE_COLUMNS


class SimGuardDriver:
    def __init__(self, catalog, settings: GuardSettings):
        self.catalog = catalog
        self.driver = GuardDriver(catalog.campaigns, settings)
        self._feature_names = {"spend_pace": settings.defaults["pacing"].feature,
                               "inventory_level": settings.defaults["inventory"].feature}

    def _features(self, last) -> pd.DataFrame:
        """Per campaign, the bucket's features the sibling guards read (max over its slots)."""
        names = list(last.feature_names)
        campaign = np.asarray(last.columns["campaign_id"], dtype=object)
        frame = pd.DataFrame({"campaign_id": campaign})
        for column in FEATURE_COLUMNS:
            name = self._feature_names[column]
            frame[column] = last.features[:, names.index(name)] if name in names else np.nan
        return frame.groupby("campaign_id", as_index=False, sort=False).max()

    def guard_states(self, now_ts: int, last) -> Mapping[str, GuardState]:
        if last is not None:
            outcomes = last.outcomes.frame(self.catalog.campaign_ids, self.catalog.package_codes)
            self.driver.feed(last.decisions, outcomes, self._features(last))
        self.driver.tick(now_ts)
        return self.driver.guard_states()


def make_guard_driver(scenario, catalog) -> SimGuardDriver:
    settings = load_guard_settings(load_settings().guard_config)
    floor = scenario.bidder.floor_roi
    roi = settings.defaults["roi"]
    defaults = {**settings.defaults, "roi": replace(roi, floor=floor)}
    per_campaign = {**settings.per_campaign,
                    "roi": {c: replace(cfg, floor=floor) for c, cfg in settings.per_campaign.get("roi", {}).items()}}
    return SimGuardDriver(catalog, GuardSettings(settings.observe, defaults, per_campaign))
