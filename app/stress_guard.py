"""`bidlens stress`'s guarded arm: the simulator's guard hook (sim.stress.GuardHook).

sim.stress calls `guard_states(now_ts, last)` before every bucket with the previous
bucket's result; this feeds that result to a GuardEvaluator (the worker's observation
and state machine, no store) and answers the guard states the bucket's effective
policy reads. The ROI floor is the scenario's (bidder.floor_roi); everything else
comes from the same guard configuration as the worker (BIDLENS_GUARD_CONFIG). The
stress arm runs the ROI guard (the report measures it); the sibling guards are the
worker's too and can be passed in `guards`. A launched version's gate calibration arms the guard as
a prior (`prior`), as it does the worker's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from control.config import load_settings
from control.domain import GuardState
from guards.config import GuardSettings, load_guard_settings
from guards.evaluator import GuardEvaluator
from guards.observe import FEATURE_COLUMNS, CalibrationPrior
from sim.catalog import BUCKET_SECONDS, DAY_START_TS


class SimGuardHook:
    """sim.stress.GuardHook: reads each BucketResult's arrays straight into a GuardEvaluator."""

    def __init__(self, catalog, settings: GuardSettings, guards: tuple[str, ...] = ("roi",),
                 prior: CalibrationPrior | None = None):
        self.evaluator = GuardEvaluator(catalog.campaigns, settings, guards, prior=prior)
        self.packages = len(catalog.packages)
        self._feature_names = settings.feature_names()
        self._campaign_codes = self.evaluator.codes([c.campaign_id for c in catalog.campaigns])
        self._slot_codes: np.ndarray | None = None
        # minute -> each slot's pred_value: outcome increments (late ones too) meet their bucket's prediction
        self._values: dict[int, np.ndarray] = {}
        self._lookback_min = self.evaluator.lookback // BUCKET_SECONDS
        # each campaign's highest sequential evidence S of the day: how near a healthy one came to a trip
        self.peak_cusum = np.zeros(len(catalog.campaigns))

    def _feed(self, last) -> None:
        columns = last.columns
        if self._slot_codes is None:  # the slot order never changes within a run
            self._slot_codes = self.evaluator.codes(columns["campaign_id"])
        codes = self._slot_codes
        self.evaluator.feed_decisions(codes, columns["bucket_ts"], columns)
        self._values[last.minute] = np.asarray(columns["pred_value"], dtype=np.float64)
        self._values.pop(last.minute - self._lookback_min - 1, None)
        inc = last.outcomes
        pred_gmv = np.zeros(len(inc.slot))
        for minute in np.unique(inc.bucket_minute[inc.clicks > 0]).tolist():  # clicks come in a bucket's first increment
            rows = (inc.bucket_minute == minute) & (inc.clicks > 0)
            values = self._values.get(minute)
            if values is not None:
                pred_gmv[rows] = values[inc.slot[rows]] * inc.clicks[rows]
        self.evaluator.feed_outcomes(codes[inc.slot], DAY_START_TS + inc.bucket_minute * BUCKET_SECONDS,
                                  DAY_START_TS + inc.known_minute * BUCKET_SECONDS, inc.spend, inc.orders, inc.gmv,
                                  pred_gmv)
        names = list(last.feature_names)
        n = len(self.evaluator.campaign_ids)
        features = {}
        for column in FEATURE_COLUMNS:
            name = self._feature_names[column]
            values = np.full(n, np.nan)
            if name in names:
                np.fmax.at(values, codes, last.features[:, names.index(name)])
            features[column] = values
        self.evaluator.feed_features(features)
        if last.stock is not None:  # the stock feed the safety-stock breaker reads
            self.evaluator.feed_stock(self._campaign_codes, np.full(len(last.stock), last.now_ts), last.stock)

    def guard_states(self, now_ts: int, last) -> Mapping[str, GuardState]:
        if last is not None:
            self._feed(last)
        self.evaluator.tick(now_ts)
        np.fmax(self.peak_cusum, [o.cusum for o in self.evaluator.observed], out=self.peak_cusum)
        return self.evaluator.guard_states()

    @property
    def trips(self) -> list[tuple[str, int]]:
        """(campaign_id, minute of the day) of each trip proper (GuardTripped), without the returns to
        TRIPPED after a failed probation, which sim.stress also counts as trips."""
        return [(e.campaign_id, (e.ts - DAY_START_TS) // BUCKET_SECONDS) for e in self.evaluator.trips]


def make_guard_hook(scenario, catalog, prior: CalibrationPrior | None = None) -> SimGuardHook:
    """The guarded arm's hook; `prior`: the serving version's calibration from its launch gate, as the worker
    reads it from the store (guards.observe.load_calibration_prior), so the stress run starts armed too."""
    settings = load_guard_settings(load_settings().guard_config)
    floor = scenario.bidder.floor_roi
    roi = settings.defaults["roi"]
    defaults = {**settings.defaults, "roi": replace(roi, floor=floor)}
    per_campaign = {**settings.per_campaign,
                    "roi": {c: replace(cfg, floor=floor) for c, cfg in settings.per_campaign.get("roi", {}).items()}}
    return SimGuardHook(catalog, GuardSettings(settings.observe, defaults, per_campaign), prior=prior)
