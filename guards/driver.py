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

import pandas as pd

from control.domain import Campaign, GuardState
from guards.config import GuardSettings
from guards.machine import GuardEvent, GuardTripped, MachineState
from guards.observe import FEATURE_COLUMNS, lookback_s, observations, observe
from guards.registry import GUARDS, enabled, evaluate
from store.repo import most_restrictive

_DECISION_SUMS = ["w", "roi_w", "pool_w", "pool_n"]
_OUTCOME_SUMS = ["spend", "orders", "gmv"]


def aggregate_decisions(decisions: pd.DataFrame) -> pd.DataFrame:
    """Decision rows (campaign_id, bucket_ts, budget_share, audience_on, pred_roi, pool_pred_roi)
    summed per campaign x bucket, as guards.observe.observe takes them (the worker's SQL does the same)."""
    on = decisions["audience_on"].to_numpy(dtype=bool)
    w = decisions["budget_share"].to_numpy(dtype=float) * on
    pool = pd.to_numeric(decisions["pool_pred_roi"], errors="coerce").to_numpy(dtype=float) \
        if "pool_pred_roi" in decisions else None
    has_pool = (pool == pool) if pool is not None else None
    frame = pd.DataFrame({
        "campaign_id": decisions["campaign_id"].to_numpy(dtype=object),
        "bucket_ts": decisions["bucket_ts"].to_numpy(dtype="int64"),
        "w": w, "roi_w": w * decisions["pred_roi"].to_numpy(dtype=float),
        "pool_w": 0.0 if pool is None else w * has_pool * pd.Series(pool).fillna(0.0).to_numpy(),
        "pool_n": 0.0 if pool is None else w * has_pool,
    })
    return frame.groupby(["campaign_id", "bucket_ts"], as_index=False, sort=False)[_DECISION_SUMS].sum()


class GuardDriver:
    def __init__(self, campaigns: Sequence[Campaign], settings: GuardSettings,
                 guards: Iterable[str] = tuple(GUARDS)):
        self.settings = settings
        self.guards = tuple(guards)
        machines = [settings.defaults[g].machine for g in self.guards]
        self.lookback = lookback_s(settings.observe, max(m.stale_after_s for m in machines))
        self.campaigns = pd.DataFrame({"campaign_id": [c.campaign_id for c in campaigns],
                                       "avg_order_value": [c.avg_order_value for c in campaigns]})
        self.states: dict[tuple[str, str], MachineState] = {}
        self.events: list[GuardEvent] = []
        self._decisions: list[pd.DataFrame] = []
        self._outcomes: list[pd.DataFrame] = []
        self._features = pd.DataFrame(columns=["campaign_id", *FEATURE_COLUMNS])

    def feed(self, decisions: pd.DataFrame | None = None, outcomes: pd.DataFrame | None = None,
             features: pd.DataFrame | None = None) -> None:
        """One bucket's decision rows, outcome increments (campaign_id, bucket_ts, known_ts, spend,
        orders, gmv) and per-campaign features (campaign_id, spend_pace, inventory_level)."""
        if decisions is not None and len(decisions):
            self._decisions.append(aggregate_decisions(decisions))
        if outcomes is not None and len(outcomes):
            grouped = outcomes.groupby(["campaign_id", "bucket_ts"], as_index=False, sort=False).agg(
                spend=("spend", "sum"), orders=("orders", "sum"), gmv=("gmv", "sum"),
                last_known_ts=("known_ts", "max"))
            self._outcomes.append(grouped)
        if features is not None:
            self._features = features[["campaign_id", *FEATURE_COLUMNS]]

    def _window(self, parts: list[pd.DataFrame], columns: list[str], sums: list[str], now_ts: int,
                extra: dict | None = None) -> pd.DataFrame:
        since = now_ts - self.lookback
        kept = [p for p in parts if len(p) and int(p["bucket_ts"].max()) >= since]
        parts[:] = kept  # forget what the lookback no longer needs
        if not kept:
            return pd.DataFrame(columns=columns)
        frame = pd.concat(kept, ignore_index=True)
        frame = frame[frame["bucket_ts"] >= since]
        agg = {c: "sum" for c in sums} | (extra or {})
        return frame.groupby(["campaign_id", "bucket_ts"], as_index=False, sort=False).agg(agg)[columns]

    def tick(self, now_ts: int) -> list[GuardEvent]:
        """Evaluate every guard of every campaign at now_ts; returns (and keeps) the events."""
        decisions = self._window(self._decisions, ["campaign_id", "bucket_ts", *_DECISION_SUMS], _DECISION_SUMS,
                                 now_ts)
        outcomes = self._window(self._outcomes, ["campaign_id", "bucket_ts", *_OUTCOME_SUMS, "last_known_ts"],
                                _OUTCOME_SUMS, now_ts, {"last_known_ts": "max"})
        frame = observe(decisions, outcomes, self._features, self.campaigns, now_ts, self.settings.observe,
                        self.lookback)
        events: list[GuardEvent] = []
        for guard in self.guards:
            for obs in observations(frame):
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
