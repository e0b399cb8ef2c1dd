"""The guard for in-process runs (`bidlens stress`'s guarded arm, replays): no store, same guard.

`GuardEvaluator` keeps the feeds in memory instead of the store and runs exactly the
worker's code on them: guards.observe.observe for the observations and
guards.registry.evaluate (the shared state machine) for the transitions. Its
`guard_states()` is what the simulator's effective policy reads, so a trip puts
the campaign on the manual rule pool from the next bucket on.

Use, once per simulated bucket:
    evaluator.feed(decisions, outcomes, features)   # what the bidder decided / learnt this bucket
    evaluator.feed_stock(...), feed_competitor_prices(...)  # the breakers' feeds, when there are readings
    events = evaluator.tick(now_ts)
    sim.step(guards=evaluator.guard_states(), ...)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from control.domain import Campaign, GuardState, most_restrictive
from guards.config import GuardSettings
from guards.feeds import breaker_frame, sales_per_day, worst_competitor
from guards.machine import GuardEvent, GuardTripped, MachineState
from guards.observe import (
    BREAKER_COLUMNS,
    FEATURE_COLUMNS,
    CalibrationPrior,
    Feeds,
    Observation,
    lookback_s,
    observations_from,
    observe_feeds,
)
from guards.registry import GUARDS, enabled, evaluate, feeds_stale_after_s
from guards.roi import sequential_for

_DECISION_SUMS = ("w", "roi_w", "pool_w", "pool_n")
_OUTCOME_SUMS = ("spend", "orders", "gmv", "pred_gmv")


def decision_sums(decisions) -> dict[str, np.ndarray]:
    """Per decision row, what guards.observe sums per campaign x bucket (the worker's SQL does the same):
    w = budget_share x audience_on, roi_w = w x pred_roi, pool_w / pool_n over rows with a pool score."""
    w = np.asarray(decisions["budget_share"], dtype=float) * np.asarray(decisions["audience_on"], dtype=bool)
    pool = (np.asarray(pd.to_numeric(pd.Series(decisions["pool_pred_roi"]), errors="coerce"), dtype=float)
            if "pool_pred_roi" in decisions else np.full(len(w), np.nan))
    scored = w * ~np.isnan(pool)
    pred = np.asarray(decisions["pred_roi"], dtype=float)
    return {"w": w, "roi_w": w * pred, "pool_w": scored * np.nan_to_num(pool), "pool_n": scored}


class GuardEvaluator:
    def __init__(self, campaigns: Sequence[Campaign], settings: GuardSettings,
                 guards: Iterable[str] = tuple(GUARDS), prior: CalibrationPrior | None = None):
        self.settings = settings
        self.guards = tuple(guards)
        self.lookback = lookback_s(settings.observe, feeds_stale_after_s(settings, self.guards),
                                   settings.defaults["roi"].cusum_window_s)
        self.campaign_ids = [c.campaign_id for c in campaigns]
        self._index = pd.Index(self.campaign_ids, dtype=object)
        self._aov = np.array([c.avg_order_value for c in campaigns], dtype=np.float64)
        self._margin = np.array([c.gross_margin for c in campaigns], dtype=np.float64)
        self._sequential = sequential_for(settings, self.campaign_ids)
        self.prior = prior  # the serving version's calibration from its launch gate (guards.observe)
        self.states: dict[tuple[str, str], MachineState] = {}
        self.events: list[GuardEvent] = []
        self.observed: list[Observation] = []  # the last tick's observations, one per campaign in campaign_ids order
        # bucket_ts -> (campaigns, sums + a presence column): the store's GROUP BY, kept in memory.
        self._decisions: dict[int, np.ndarray] = {}
        self._outcomes: dict[int, np.ndarray] = {}
        self._features: dict[str, np.ndarray] = {}
        # bucket_ts -> pred_value by (campaign_id, audience_package): what `feed` joins outcome rows to.
        self._values: dict[int, pd.Series] = {}
        # The breakers' feeds (guards.feeds): orders by the time they became known, the newest stock
        # reading and each competitor's newest price per campaign.
        self._known_orders: dict[int, np.ndarray] = {}
        self._known_total = np.zeros(len(self.campaign_ids))  # the sum of _known_orders (one add per tick)
        self._feed_start: int | None = None
        self._stock = np.full((len(self.campaign_ids), 2), np.nan)            # (observed_ts, units)
        self._prices: dict[tuple[int, str], tuple[int, float, float]] = {}    # -> (observed_ts, price, reference)

    def codes(self, campaign_ids) -> np.ndarray:
        """Campaign ids -> positions in the driver's campaign list (-1: unknown)."""
        return self._index.get_indexer(np.asarray(campaign_ids, dtype=object))

    @staticmethod
    def _add(table: dict[int, np.ndarray], n: int, codes: np.ndarray, buckets: np.ndarray, values: np.ndarray,
             presence: np.ndarray) -> None:
        """Sum `values` per campaign into their buckets; the last column keeps the max of `presence`."""
        for bucket in np.unique(buckets).tolist():
            rows = (buckets == bucket) & (codes >= 0)
            acc = table.setdefault(bucket, np.zeros((n, values.shape[1] + 1)))
            np.add.at(acc[:, :-1], codes[rows], values[rows])
            np.maximum.at(acc[:, -1], codes[rows], presence[rows])

    def feed_decisions(self, codes: np.ndarray, bucket_ts: np.ndarray, decisions) -> None:
        """Decision rows: campaign codes, buckets, and columns budget_share, audience_on, pred_roi,
        pool_pred_roi (a DataFrame or a mapping of arrays)."""
        sums = decision_sums(decisions)
        self._add(self._decisions, len(self._index), codes, np.asarray(bucket_ts, dtype=np.int64),
                  np.column_stack([sums[c] for c in _DECISION_SUMS]), np.ones(len(codes)))

    def feed_outcomes(self, codes: np.ndarray, bucket_ts: np.ndarray, known_ts: np.ndarray, spend: np.ndarray,
                      orders: np.ndarray, gmv: np.ndarray, pred_gmv: np.ndarray) -> None:
        """Outcome increments (conversion lag: each with the time it became known); pred_gmv is their
        clicks x the pred_value of their slot's decision."""
        values = np.column_stack([np.asarray(v, dtype=np.float64) for v in (spend, orders, gmv, pred_gmv)])
        known = np.asarray(known_ts, dtype=np.int64)
        self._add(self._outcomes, len(self._index), codes, np.asarray(bucket_ts, dtype=np.int64), values,
                  known.astype(np.float64))
        ok = codes >= 0
        for when in np.unique(known[ok]).tolist():
            rows = ok & (known == when)
            acc = self._known_orders.setdefault(when, np.zeros(len(self._index)))
            before = acc.copy()
            np.add.at(acc, codes[rows], values[rows, 1])
            self._known_total += acc - before
            self._feed_start = when if self._feed_start is None else min(self._feed_start, when)

    def feed_stock(self, codes: np.ndarray, observed_ts: np.ndarray, stock_units: np.ndarray) -> None:
        """Stock readings (control.rows.STOCK_FIELDS) per campaign code; the newest per campaign counts."""
        for code, ts, units in zip(np.asarray(codes).tolist(), np.asarray(observed_ts).tolist(),
                                   np.asarray(stock_units, dtype=np.float64).tolist(), strict=True):
            seen, had = self._stock[code] if code >= 0 else (np.nan, np.nan)
            if code >= 0 and (seen != seen or ts > seen or (ts == seen and units < had)):  # ties: the lower count
                self._stock[code] = (ts, units)

    def feed_competitor_prices(self, codes: np.ndarray, competitor, observed_ts: np.ndarray, price: np.ndarray,
                               reference_price: np.ndarray) -> None:
        """Competitor price readings (control.rows.COMPETITOR_PRICE_FIELDS); the newest per competitor counts."""
        for code, who, ts, p, r in zip(np.asarray(codes).tolist(), list(competitor), np.asarray(observed_ts).tolist(),
                                       np.asarray(price, dtype=np.float64).tolist(),
                                       np.asarray(reference_price, dtype=np.float64).tolist(), strict=True):
            old = self._prices.get((code, who))
            # The newest reading counts; two of one time: the lower price (the worker's query sees both).
            if code >= 0 and (old is None or ts > old[0] or (ts == old[0] and p * old[2] < old[1] * r)):
                self._prices[(code, who)] = (int(ts), p, r)

    def _breakers(self, now_ts: int) -> dict[str, np.ndarray]:
        """BREAKER_COLUMNS at now_ts from the fed readings, as guards.feeds.load_breaker_inputs reads the store."""
        config = self.settings.observe
        n = len(self._index)
        for when in [t for t in self._known_orders if t <= now_ts - config.sales_window_s]:
            self._known_total -= self._known_orders.pop(when)
        orders = self._known_total - sum((v for t, v in self._known_orders.items() if t > now_ts), np.zeros(n))
        first = min((t for t in self._known_orders if t <= now_ts), default=None)
        fresh = now_ts - config.feed_max_age_s
        live = (self._stock[:, 0] > fresh) & (self._stock[:, 0] <= now_ts)
        stock = (np.where(live, self._stock[:, 1], np.nan), np.where(live, self._stock[:, 0], np.nan))
        prices = [(code, ts, p, r) for (code, _), (ts, p, r) in self._prices.items() if fresh < ts <= now_ts]
        competitor = worst_competitor(np.array([x[0] for x in prices], dtype=np.int64),
                                      *(np.array([x[i] for x in prices], dtype=np.float64) for i in (1, 2, 3)), n)
        frame = breaker_frame(self.campaign_ids, competitor, stock,
                              sales_per_day(orders, first, now_ts, config.sales_window_s))
        return {c: frame[c].to_numpy() for c in BREAKER_COLUMNS}

    def feed_features(self, features: dict[str, np.ndarray]) -> None:
        """Per campaign (driver order) values of FEATURE_COLUMNS, from the newest bucket."""
        self._features = dict(features)

    def feed(self, decisions: pd.DataFrame | None = None, outcomes: pd.DataFrame | None = None,
             features: pd.DataFrame | None = None) -> None:
        """The same from frames with campaign_id columns (decision rows, outcome increments
        with known_ts, per-campaign features)."""
        if decisions is not None and len(decisions):
            self.feed_decisions(self.codes(decisions["campaign_id"]), decisions["bucket_ts"], decisions)
            for bucket, rows in decisions.groupby("bucket_ts"):
                values = rows.set_index(["campaign_id", "audience_package"])["pred_value"].astype(float)
                self._values[int(bucket)] = values.groupby(level=[0, 1]).max()
        if outcomes is not None and len(outcomes):
            self.feed_outcomes(self.codes(outcomes["campaign_id"]), outcomes["bucket_ts"], outcomes["known_ts"],
                               outcomes["spend"], outcomes["orders"], outcomes["gmv"], self._pred_gmv(outcomes))
        if features is not None:
            columns = [c for c in FEATURE_COLUMNS if c in features]
            by = features.groupby("campaign_id")[columns].max().reindex(self._index)
            self.feed_features({c: by[c].to_numpy(dtype=np.float64) for c in columns})

    def _pred_gmv(self, outcomes: pd.DataFrame) -> np.ndarray:
        """Per outcome row: clicks x the pred_value of its slot's decision (0 without one), as the
        worker's SQL joins them."""
        out = np.zeros(len(outcomes))
        buckets = outcomes["bucket_ts"].to_numpy(dtype=np.int64)
        clicks = outcomes["clicks"].to_numpy(dtype=np.float64)
        for bucket in np.unique(buckets).tolist():
            values = self._values.get(bucket)
            if values is None:
                continue
            rows = buckets == bucket
            slots = pd.MultiIndex.from_arrays([outcomes["campaign_id"].to_numpy()[rows],
                                               outcomes["audience_package"].to_numpy()[rows]])
            out[rows] = values.reindex(slots).fillna(0.0).to_numpy() * clicks[rows]
        return out

    def _window(self, table: dict[int, np.ndarray], now_ts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes, buckets, values) of the campaign x bucket entries within the lookback; older ones are
        forgotten. An entry exists where the store would have a row (presence column > 0)."""
        since = now_ts - self.lookback
        for bucket in [b for b in table if b < since]:
            del table[bucket]
        buckets = sorted(b for b in table if b <= now_ts)
        n = len(self._index)
        width = next(iter(table.values())).shape[1] if table else 1
        if not buckets:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, width))
        stacked = np.concatenate([table[b] for b in buckets])
        present = stacked[:, -1] > 0
        codes = np.tile(np.arange(n), len(buckets))[present]
        return codes, np.repeat(np.asarray(buckets, dtype=np.int64), n)[present], stacked[present]

    def tick(self, now_ts: int) -> list[GuardEvent]:
        """Evaluate every guard of every campaign at now_ts; returns (and keeps) the events."""
        for bucket in [b for b in self._values if b < now_ts - self.lookback]:
            del self._values[bucket]
        d_codes, d_bucket, d = self._window(self._decisions, now_ts)
        o_codes, o_bucket, o = self._window(self._outcomes, now_ts)
        d = d if len(d) else np.zeros((0, len(_DECISION_SUMS) + 1))
        o = o if len(o) else np.zeros((0, len(_OUTCOME_SUMS) + 1))
        feeds = Feeds(d_codes, d_bucket, d[:, 0], d[:, 1], d[:, 2], d[:, 3],
                      o_codes, o_bucket, o[:, 0], o[:, 1], o[:, 2], o[:, 3], o[:, 4], self._features,
                      self._breakers(now_ts))
        columns = observe_feeds(feeds, self._aov, now_ts, self.settings.observe, self.lookback, self._margin,
                                self._sequential, self.prior)
        observed = observations_from(self.campaign_ids, columns)
        self.observed = observed
        events: list[GuardEvent] = []
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
        return most_restrictive(GuardState(c, s.mode, s.canary_share, action=s.action, bid_factor=s.bid_factor)
                                for (_, c), s in self.states.items())

    @property
    def trips(self) -> list[GuardTripped]:
        return [e for e in self.events if isinstance(e, GuardTripped)]
