"""The guard for in-process runs (`bidlens stress`'s guarded arm, replays): no store, same guard.

`GuardDriver` keeps the feeds in memory instead of the store and runs exactly the
worker's code on them: guards.observe.observe for the observations and
guards.registry.evaluate (the shared state machine) for the transitions. Its
`guard_states()` is what the simulator's effective policy reads, so a trip puts
the campaign on the manual rule pool from the next bucket on.

Use, once per simulated bucket:
    driver.feed(decisions, outcomes, features)   # what the bidder decided / learnt this bucket
    events = driver.tick(now_ts)
    sim.step(guards=driver.guard_states(), ...)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from control.domain import Campaign, GuardState
from guards.config import GuardSettings
from guards.machine import GuardEvent, GuardTripped, MachineState
from guards.observe import FEATURE_COLUMNS, lookback_s, observations, observe
from guards.registry import GUARDS, enabled, evaluate
from store.repo import most_restrictive

_DECISION_SUMS = ("w", "roi_w", "pool_w", "pool_n")
_OUTCOME_SUMS = ("spend", "orders", "gmv")


def decision_sums(decisions: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per decision row, what guards.observe sums per campaign x bucket (the worker's SQL does the same):
    w = budget_share x audience_on, roi_w = w x pred_roi, pool_w / pool_n over rows with a pool score."""
    w = decisions["budget_share"].to_numpy(dtype=float) * decisions["audience_on"].to_numpy(dtype=bool)
    pool = (pd.to_numeric(decisions["pool_pred_roi"], errors="coerce").to_numpy(dtype=float)
            if "pool_pred_roi" in decisions else np.full(len(w), np.nan))
    scored = w * ~np.isnan(pool)
    return {"w": w, "roi_w": w * decisions["pred_roi"].to_numpy(dtype=float),
            "pool_w": scored * np.nan_to_num(pool), "pool_n": scored}


class GuardDriver:
    def __init__(self, campaigns: Sequence[Campaign], settings: GuardSettings,
                 guards: Iterable[str] = tuple(GUARDS)):
        self.settings = settings
        self.guards = tuple(guards)
        machines = [settings.defaults[g].machine for g in self.guards]
        self.lookback = lookback_s(settings.observe, max(m.stale_after_s for m in machines))
        self.campaigns = pd.DataFrame({"campaign_id": [c.campaign_id for c in campaigns],
                                       "avg_order_value": [c.avg_order_value for c in campaigns]})
        self._index = pd.Index(self.campaigns["campaign_id"].array)
        self.states: dict[tuple[str, str], MachineState] = {}
        self.events: list[GuardEvent] = []
        # bucket_ts -> (campaigns, sums) arrays: the feeds as the store's GROUP BY would return them.
        self._decisions: dict[int, np.ndarray] = {}
        self._outcomes: dict[int, np.ndarray] = {}
        self._features = pd.DataFrame(columns=["campaign_id", *FEATURE_COLUMNS])

    def _add(self, table: dict[int, np.ndarray], frame: pd.DataFrame, values: np.ndarray,
             last_known: np.ndarray | None = None) -> None:
        codes = self._index.get_indexer(frame["campaign_id"].array)
        buckets = frame["bucket_ts"].to_numpy(dtype=np.int64)
        n = len(self._index)
        width = values.shape[1] + (last_known is not None)
        for bucket in np.unique(buckets).tolist():
            rows = (buckets == bucket) & (codes >= 0)
            acc = table.setdefault(bucket, np.zeros((n, width)))
            np.add.at(acc[:, :values.shape[1]], codes[rows], values[rows])
            if last_known is not None:
                np.maximum.at(acc[:, -1], codes[rows], last_known[rows])

    def feed(self, decisions: pd.DataFrame | None = None, outcomes: pd.DataFrame | None = None,
             features: pd.DataFrame | None = None) -> None:
        """One bucket's decision rows, outcome increments (campaign_id, bucket_ts, known_ts, spend,
        orders, gmv) and per-campaign features (campaign_id, spend_pace, inventory_level)."""
        if decisions is not None and len(decisions):
            sums = decision_sums(decisions)
            ones = np.ones(len(decisions))  # the row count says the campaign had decisions, even all off
            self._add(self._decisions, decisions, np.column_stack([*(sums[c] for c in _DECISION_SUMS), ones]))
        if outcomes is not None and len(outcomes):
            values = np.column_stack([outcomes[c].to_numpy(dtype=float) for c in _OUTCOME_SUMS])
            self._add(self._outcomes, outcomes, values, outcomes["known_ts"].to_numpy(dtype=float))
        if features is not None:
            self._features = features[["campaign_id", *FEATURE_COLUMNS]]

    def _frame(self, table: dict[int, np.ndarray], columns: tuple[str, ...], now_ts: int) -> pd.DataFrame:
        """The buckets within the lookback as a long frame; older ones are forgotten."""
        since = now_ts - self.lookback
        for bucket in [b for b in table if b < since]:
            del table[bucket]
        buckets = sorted(b for b in table if b <= now_ts)
        n = len(self._index)
        if not buckets:
            return pd.DataFrame(columns=["campaign_id", "bucket_ts", *columns])
        stacked = np.concatenate([table[b] for b in buckets])
        present = stacked[:, -1] > 0  # row count / last known_ts: no row in the store either
        frame = pd.DataFrame(stacked[present], columns=list(columns))
        frame.insert(0, "bucket_ts", np.repeat(np.asarray(buckets, dtype=np.int64), n)[present])
        frame.insert(0, "campaign_id", np.tile(self._index.to_numpy(dtype=object), len(buckets))[present])
        return frame

    def tick(self, now_ts: int) -> list[GuardEvent]:
        """Evaluate every guard of every campaign at now_ts; returns (and keeps) the events."""
        decisions = self._frame(self._decisions, (*_DECISION_SUMS, "rows"), now_ts)
        outcomes = self._frame(self._outcomes, (*_OUTCOME_SUMS, "last_known_ts"), now_ts)
        frame = observe(decisions, outcomes, self._features, self.campaigns, now_ts, self.settings.observe,
                        self.lookback)
        events: list[GuardEvent] = []
        observed = observations(frame)
        for guard in self.guards:
            for obs in observed:
                config = self.settings.for_campaign(guard, obs.campaign_id)
                if not enabled(config):
                    continue
                key = (guard, obs.campaign_id)
                state = self.states.get(key) or MachineState(since_ts=now_ts)
                self.states[key], new = evaluate(guard, state, obs, config, now_ts)
                events += new
        self.events += events
        return events

    def guard_states(self) -> dict[str, GuardState]:
        """What the effective policy reads: per campaign, the most restrictive of its guards."""
        return most_restrictive(GuardState(c, s.mode, s.canary_share) for (_, c), s in self.states.items())

    @property
    def trips(self) -> list[GuardTripped]:
        return [e for e in self.events if isinstance(e, GuardTripped)]
