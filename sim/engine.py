"""The simulation loop: one bucket (one simulated minute) per `step()`.

Each step the bidder builds its features and plans every slot, the effective
policy (control.policy.resolve_policy: override -> rule pool -> model) decides
what is served, the world runs the auctions for what is served, and the outcome
increments that became known by the end of the bucket are returned (and fed
back to the bidder's observations). The policy inputs (overrides, guard states,
kill switch) are passed to each step, so the fast stress run and the live demo
(which reads them from the store each bucket) share this loop.

In guard PROBATION the slot's opportunities are split: `canary_share` of them
are bid by the model's plan, the rest by the pool's answer.

Every random draw is keyed by (seed, purpose, minute, slot) (sim.crn: common random
numbers), so two runs of the same seed differ only where their policies differ, and
through each campaign's own budget and stock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from control import rows
from control.domain import DecidedBy, GuardState, Override, RuleAnswer
from control.policy import KillSwitch, held_campaigns, pool_campaigns, resolve_policy
from guards.rule_pool import RulePool
from sim import crn
from sim.bidder import Plan
from sim.catalog import BUCKET_SECONDS, DAY_START_TS, MINUTES_PER_DAY
from sim.features import FEATURE_NAMES, BidderView, FeatureBuilder, History, Observer
from sim.scenario import Scenario
from sim.world import Truth, World, partial_mean

NO_KILL = KillSwitch()
REFERENCE_ROI = 2.0  # the operators' reference bid buys a click at half its historical value
_POLICY_USED = ("bid", "audience_on", "canary_share", "decided_by", "reason", "rule_id", "override_ids",
                "guard_event_id", "daily_budget")
# The served policy from outside for a plan frame: {column of _POLICY_USED: one value per slot}.
PolicyFor = Callable[[pd.DataFrame], Mapping[str, np.ndarray]]


def _empty_tuples(n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = [()] * n
    return out
_GMV_SHAPE = 4.0  # order values vary around the campaign's average (gamma, cv = 0.5)

# Columns of BucketResult.decisions, one row per slot: the decision row (control.rows; the features
# are BucketResult.features), how the policy decided, and what the served decision produced (truth,
# with orders/GMV as they will eventually be known).
DECISION_COLUMNS = tuple(f for f in rows.names(rows.DECISION_FIELDS) if f != "features") + (
    "rule_id", "override_ids", "guard_event_id", "canary_share",
    "auctions", "impressions", "clicks", "spend", "orders", "gmv",
)
OUTCOME_COLUMNS = rows.names(rows.OUTCOME_FIELDS)


@dataclass(frozen=True)
class Increments:
    """Outcome increments that became known at one time, slot-indexed arrays."""

    slot: np.ndarray
    bucket_minute: np.ndarray
    known_minute: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray
    spend: np.ndarray
    orders: np.ndarray
    gmv: np.ndarray

    @staticmethod
    def concat(parts: Sequence[Increments]) -> Increments:
        if not parts:
            e = np.zeros(0, dtype=np.int64)
            return Increments(e, e, e, e, e, np.zeros(0), e, np.zeros(0))
        return Increments(*(np.concatenate([getattr(p, f) for p in parts])
                            for f in Increments.__dataclass_fields__))

    def frame(self, campaign_ids: Sequence[str], package_codes: Sequence[str]) -> pd.DataFrame:
        """As rows for the store's outcomes table (OUTCOME_COLUMNS), given the catalog's ids."""
        P = len(package_codes)
        return self.rows(np.asarray(campaign_ids, dtype=object)[np.arange(len(campaign_ids) * P) // P],
                         np.tile(np.asarray(package_codes, dtype=object), len(campaign_ids)))

    def rows(self, slot_campaign: np.ndarray, slot_package: np.ndarray) -> pd.DataFrame:
        """As rows for the store's outcomes table, given each slot's campaign id and package code."""
        return pd.DataFrame({
            "campaign_id": slot_campaign[self.slot],
            "audience_package": slot_package[self.slot],
            "bucket_ts": DAY_START_TS + self.bucket_minute * BUCKET_SECONDS,
            "known_ts": DAY_START_TS + self.known_minute * BUCKET_SECONDS,
            "impressions": self.impressions, "clicks": self.clicks, "spend": np.round(self.spend, 2),
            "orders": self.orders, "gmv": np.round(self.gmv, 2),
        })


@dataclass(frozen=True)
class BucketResult:
    minute: int                 # minute of the promotion day, 0..1439
    bucket_ts: int              # epoch seconds the bucket starts at
    now_ts: int                 # end of the bucket: when `outcomes` became known
    variant: str                # the model variant serving this bucket
    model_version: str
    columns: Mapping[str, np.ndarray]  # DECISION_COLUMNS as arrays, one entry per slot, slot order
    features: np.ndarray        # (S, F) what the model saw, FEATURE_NAMES order, row-aligned
    outcomes: Increments        # increments known at now_ts (conversion lag, outages)
    campaign_spend: np.ndarray  # (C,) spend this bucket
    campaign_gmv: np.ndarray    # (C,) GMV of this bucket's clicks, however late it becomes known
    feature_names: tuple[str, ...] = FEATURE_NAMES
    # The world without its dice, for expected values (sim.oracle): the minute's truth, the expected
    # opportunities per slot and what each campaign could still spend of its day's budget.
    truth: Truth | None = None
    expected_opportunities: np.ndarray | None = None  # (S,)
    plan_on: np.ndarray | None = None                 # (S,) the model's own audience on/off
    pool_on: np.ndarray | None = None                 # (S,) the rule pool's (its bid is columns["pool_bid"])
    budget_left: np.ndarray | None = None             # (C,) yuan, before this bucket
    competitor_bid_spread: float = 0.0
    stock: np.ndarray | None = None  # (C,) units in stock at now_ts, as a stock feed reads them (0 while sold out)

    @cached_property
    def outcomes_frame(self) -> pd.DataFrame:
        """`outcomes` as rows (OUTCOME_COLUMNS), as the store's outcomes table holds them."""
        return self.outcomes.rows(self.columns["campaign_id"], self.columns["audience_package"])

    def stock_frame(self, campaign_ids: Sequence[str]) -> pd.DataFrame:
        """`stock` as stock feed rows (control.rows.STOCK_FIELDS), given the catalog's campaign ids."""
        return pd.DataFrame({"campaign_id": list(campaign_ids), "observed_ts": self.now_ts,
                             "stock_units": np.asarray(self.stock, dtype=np.int64)})

    @cached_property
    def decisions(self) -> pd.DataFrame:
        """DECISION_COLUMNS as a frame (built on first use: the fast runs need only the arrays)."""
        return pd.DataFrame({c: self.columns[c] for c in DECISION_COLUMNS})


class Simulation:
    """One promotion day for a scenario and a seed, stepped one bucket at a time.

    `bidders` maps a model variant ("roi", "gmv") to a bidder with `decide(...) -> Plan`
    and `version`; the scenario says which variant serves when. `pool` answers for
    the rule pool; `reference_bid` (S,) is the slot's reference bid its multipliers scale
    (default: the slot's historical value per click / REFERENCE_ROI, whatever the model targets).
    """

    def __init__(self, scenario: Scenario, seed: int, bidders: Mapping[str, object], history: History,
                 pool: RulePool | None = None, reference_bid: np.ndarray | None = None,
                 world: World | None = None):
        self.scenario = scenario
        self.seed = seed
        self.draws = crn.KeyedDraws(seed)  # every draw keyed by (seed, purpose, minute, slot)
        self.world = world or World(scenario, seed)
        self.catalog = self.world.catalog
        self.bidders = bidders
        self.pool = pool
        w = self.world
        self.C, self.P, self.S = w.C, w.P, w.S
        self.campaign_of = w.campaign_of
        self.features = FeatureBuilder(self.catalog, history)
        self.observer = Observer(self.S)
        self.reference_bid = (history.value_per_click / REFERENCE_ROI
                              if reference_bid is None else reference_bid)
        self.stock = w.opening_stock.copy()
        self.spent = np.zeros(self.C)
        self.budget = np.array([c.daily_budget for c in self.catalog.campaigns])
        self.aov = np.array([c.avg_order_value for c in self.catalog.campaigns])
        self.minute = 0
        self._pending: dict[int, list[Increments]] = {}
        self._pool_cache: dict[int, tuple] = {}
        cum = np.cumsum(w.curves.traffic)
        self._elapsed = np.concatenate([[0.0], cum[:-1]]) / cum[-1]
        # Each slot's campaign id and audience package code, in slot order.
        self.slot_campaign = np.asarray(self.catalog.campaign_ids, dtype=object)[self.campaign_of]
        self.slot_package = np.tile(np.asarray(self.catalog.package_codes, dtype=object), self.C)
        self._lags = np.asarray(scenario.world.lag_minutes)
        self._lag_shares = np.asarray(scenario.world.lag_shares)

    @property
    def done(self) -> bool:
        return self.minute >= MINUTES_PER_DAY

    # --- the rule pool, per hour (its answers depend on the hour only) -------------------------

    def _pool_answers(self, hour: int):
        cached = self._pool_cache.get(hour)
        if cached is not None:
            return cached
        bid = np.full(self.S, np.nan)
        on = np.ones(self.S, dtype=bool)
        cap = np.full(self.S, np.nan)
        answers: dict[tuple[str, str], RuleAnswer] = {}
        if self.pool is not None:
            for s in range(self.S):
                key = (self.slot_campaign[s], self.slot_package[s])
                answer = self.pool.answer(key[0], key[1], hour, float(self.reference_bid[s]))
                if answer is None:
                    continue
                answers[key] = answer
                bid[s], on[s] = answer.bid, answer.audience_on
                if answer.budget_cap is not None:
                    cap[s] = answer.budget_cap
        self._pool_cache[hour] = (bid, on, cap, answers)
        return self._pool_cache[hour]

    # --- one bucket -----------------------------------------------------------------------------

    def _view(self, minute: int, truth, in_stock: np.ndarray) -> BidderView:
        left = np.clip(1 - self.spent / self.budget, 0.0, 1.0)
        pace = (self.spent / self.budget) / max(self._elapsed[minute], 1e-3)
        level = np.where(in_stock, self.stock / np.maximum(self.world.opening_stock, 1), 0.0)
        return BidderView(minute, self.scenario.world.promo_intensity, float(self.world.curves.traffic[minute]),
                          truth.price, truth.discount, self.aov, level, truth.competitor_price_index, left, pace)

    def _pacing(self, minute: int) -> np.ndarray:
        """(S,) slow down campaigns that spend ahead of the day's traffic; never speed up."""
        left = np.clip(1 - self.spent / self.budget, 0.0, 1.0)
        remaining_traffic = max(1 - self._elapsed[minute], 1e-3)
        return np.clip(np.sqrt(left / remaining_traffic), 0.3, 1.0)[self.campaign_of]

    def _auction(self, n: np.ndarray, bid: np.ndarray, truth, auction: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(wins, clicks, price paid per click) of `n` opportunities at `bid`; `auction` names the
        draws' purposes ("main" or "canary": the canary's auction has its own uniforms)."""
        win, paid = partial_mean(bid, truth.median_bid, self.world.sigma)
        m, S = self.minute, self.S
        wins = crn.binomial(self.draws.uniform(f"{auction}_wins", m, S), n, win)
        clicks = crn.binomial(self.draws.uniform(f"{auction}_clicks", m, S), wins, truth.ctr)
        return wins, clicks, paid

    def step(self, *, overrides: Sequence[Override] = (), guards: Mapping[str, GuardState] | None = None,
             kill_switch: KillSwitch = NO_KILL, policy_for: PolicyFor | None = None) -> BucketResult:
        """One simulated minute. The served policy comes from `overrides`, `guards` and
        `kill_switch` resolved here, or, with `policy_for`, from outside: it gets the
        model's plan (campaign_id, audience_package, bucket_ts, bid, audience_on,
        budget_share) and answers the served policy per slot (_POLICY_USED arrays), as
        a bidder that reads the policy from the BidLens API does (sim.live)."""
        if self.done:
            raise RuntimeError("the promotion day is over")
        m = self.minute
        w, C = self.world, self.C
        bucket_ts = DAY_START_TS + m * BUCKET_SECONDS
        guards = guards or {}
        in_stock = (self.stock > 0) & ~w.stockout_mask(m)
        truth = w.truth(m, self.draws, in_stock)
        X = self.features.build(self._view(m, truth, in_stock), self.observer)
        variant = self.scenario.variant_at(m)
        bidder = self.bidders[variant]
        col = FEATURE_NAMES.index
        plan: Plan = bidder.decide(
            X, params=self.scenario.bidder, pacing=self._pacing(m), paid_ratio=self.features.paid_ratio(self.observer),
            campaign_of=self.campaign_of, recent_ctr=X[:, col("recent_ctr")],
            recent_reach=self.observer.auctions + 1.0, avg_order_value=X[:, col("avg_order_value")])

        pool_bid, pool_on, pool_cap, answers = self._pool_answers(m // 60)
        pool_needed = bool(pool_campaigns(self.catalog.campaign_ids, guards, kill_switch))
        held = pool_needed or bool(held_campaigns(self.catalog.campaign_ids, guards, kill_switch))
        plan_frame = pd.DataFrame({
            "campaign_id": self.slot_campaign, "audience_package": self.slot_package,
            "bucket_ts": bucket_ts, "bid": plan.bid, "audience_on": plan.audience_on,
            "budget_share": plan.budget_share,
        }) if policy_for is not None or held or overrides else None
        if policy_for is not None:
            policy = policy_for(plan_frame)
        elif held or overrides:
            frame = resolve_policy(plan_frame, overrides, guards, kill_switch, answers if pool_needed else {},
                                   bucket_ts)
            policy = {c: frame[c].to_numpy() for c in _POLICY_USED}
        else:
            policy = self._model_policy(plan)

        served_bid = policy["bid"].astype(np.float64)
        served_on = policy["audience_on"].astype(bool)
        canary = policy["canary_share"].astype(np.float64)
        by_pool = policy["decided_by"] == DecidedBy.RULE_POOL.value

        # The day's budget each campaign may spend: an override's, capped by the pool's when it serves.
        budget = self.budget.copy()
        override_budget = policy["daily_budget"].astype(np.float64)
        has_override = ~np.isnan(override_budget)
        if has_override.any():
            set_to = pd.Series(override_budget[has_override]).groupby(self.campaign_of[has_override]).max()
            budget[set_to.index.to_numpy()] = set_to.to_numpy()
        capped = by_pool & ~np.isnan(pool_cap)
        if capped.any():
            caps = pd.Series(pool_cap[capped]).groupby(self.campaign_of[capped]).min()
            idx = caps.index.to_numpy()
            budget[idx] = np.minimum(budget[idx], caps.to_numpy())
        remaining = np.maximum(budget - self.spent, 0.0)

        n = truth.opportunities
        n_canary = np.where(plan.audience_on, np.rint(n * canary), 0).astype(np.int64)
        n_main = np.where(served_on, n - np.rint(n * canary).astype(np.int64), 0)
        wins, clicks, paid = self._auction(n_main, served_bid, truth, "main")
        if n_canary.any():
            wins_c, clicks_c, paid_c = self._auction(n_canary, plan.bid, truth, "canary")
        else:
            wins_c = clicks_c = np.zeros(self.S, dtype=np.int64)
            paid_c = np.zeros(self.S)
        spend = clicks * paid + clicks_c * paid_c

        # Budgets are hard: a campaign about to overspend serves each slot up to its budget share.
        campaign_spend = np.bincount(self.campaign_of, weights=spend, minlength=C)
        over = campaign_spend > remaining
        if over.any():
            slot_over = over[self.campaign_of]
            weight = np.where(spend > 0, np.maximum(plan.budget_share, 1e-9), 0.0)
            total = np.bincount(self.campaign_of, weights=weight, minlength=C)[self.campaign_of]
            allowed = remaining[self.campaign_of] * weight / np.where(total > 0, total, 1.0)
            keep = np.where(slot_over & (spend > 0), np.minimum(1.0, allowed / np.maximum(spend, 1e-12)), 1.0)
            wins, clicks = np.floor(wins * keep).astype(np.int64), np.floor(clicks * keep).astype(np.int64)
            wins_c, clicks_c = np.floor(wins_c * keep).astype(np.int64), np.floor(clicks_c * keep).astype(np.int64)
            spend = clicks * paid + clicks_c * paid_c
            campaign_spend = np.bincount(self.campaign_of, weights=spend, minlength=C)
        self.spent += campaign_spend

        impressions = wins + wins_c
        all_clicks = clicks + clicks_c
        orders = crn.binomial(self.draws.uniform("orders", m, self.S), all_clicks, truth.cvr)
        campaign_orders = np.bincount(self.campaign_of, weights=orders, minlength=C)
        short = campaign_orders > self.stock
        if short.any():  # sell what is left, no more
            ratio = np.where(short, self.stock / np.maximum(campaign_orders, 1), 1.0)
            orders = np.floor(orders * ratio[self.campaign_of]).astype(np.int64)
            campaign_orders = np.bincount(self.campaign_of, weights=orders, minlength=C)
        self.stock -= campaign_orders.astype(np.int64)
        gmv = truth.order_value * crn.gamma(self.draws.uniform("gmv", m, self.S), orders * _GMV_SHAPE,
                                            1.0 / _GMV_SHAPE)

        outcomes = self._queue_and_release(m, impressions, all_clicks, spend, orders, gmv)
        self.observer.observe(n, outcomes.slot, outcomes.impressions, outcomes.clicks, outcomes.spend,
                              served_bid, outcomes.orders, outcomes.gmv)

        pool_pred_roi = plan.pred_value / np.maximum(pool_bid * self.features.paid_ratio(self.observer), 1e-6)
        columns = {
            "campaign_id": self.slot_campaign, "audience_package": self.slot_package, "bucket_ts": bucket_ts,
            "model_version": plan.model_version, "model_bid": plan.bid, "bid": served_bid,
            "budget_share": plan.budget_share, "audience_on": served_on, "pred_ctr": plan.pred_ctr,
            "pred_cvr": plan.pred_cvr, "pred_value": plan.pred_value, "pred_roi": plan.pred_roi,
            "pacing": plan.pacing, "pool_bid": pool_bid, "pool_pred_roi": np.where(np.isnan(pool_bid), np.nan, pool_pred_roi),
            "decided_by": policy["decided_by"], "decided_reason": policy["reason"],
            "rule_id": policy["rule_id"], "override_ids": policy["override_ids"],
            "guard_event_id": policy["guard_event_id"], "canary_share": canary,
            "auctions": n, "impressions": impressions, "clicks": all_clicks, "spend": spend,
            "orders": orders, "gmv": gmv,
        }
        self.minute += 1
        return BucketResult(m, bucket_ts, bucket_ts + BUCKET_SECONDS, variant, plan.model_version, columns, X,
                            outcomes, campaign_spend, np.bincount(self.campaign_of, weights=gmv, minlength=C),
                            truth=truth, expected_opportunities=w.expected_opportunities(m), plan_on=plan.audience_on,
                            pool_on=pool_on, budget_left=remaining,
                            competitor_bid_spread=w.sigma,
                            stock=np.where(w.stockout_mask(m), 0, self.stock))

    def _model_policy(self, plan: Plan) -> dict[str, np.ndarray]:
        """What resolve_policy answers when nothing but the model can decide (no override in the
        step, no guard on the pool, no kill switch): every slot as the model planned it. The
        stress run's model arm takes this path every bucket; tests check it equals resolve_policy."""
        S = self.S
        return {"bid": plan.bid, "audience_on": plan.audience_on, "canary_share": np.zeros(S),
                "decided_by": np.full(S, DecidedBy.MODEL.value, dtype=object),
                "reason": np.full(S, "model", dtype=object), "rule_id": np.full(S, None, dtype=object),
                "override_ids": _empty_tuples(S),
                "guard_event_id": np.full(S, None, dtype=object), "daily_budget": np.full(S, np.nan)}

    def _queue_and_release(self, m: int, impressions, clicks, spend, orders, gmv) -> Increments:
        """Split orders over the conversion lag, hold what an outage covers, release what is due now."""
        u = self.draws.uniform("lag", m, (self.S, len(self._lag_shares)))  # one uniform per slot and lag bin
        bins = crn.multinomial_split(u, orders, self._lag_shares)  # (S, L)
        share = np.where(orders[:, None] > 0, bins / np.maximum(orders, 1)[:, None], 0.0)
        gmv_bins = gmv[:, None] * share
        for k, lag in enumerate(self._lags):
            first = k == 0
            active = (bins[:, k] > 0) | ((impressions > 0) if first else False)
            slots = np.flatnonzero(active)
            if not len(slots):
                continue
            known = m + 1 + int(lag)
            release = known
            if known < MINUTES_PER_DAY:
                until = self.world.outage_until(known)
                release = until if until is not None else known
            zeros = np.zeros(len(slots), dtype=np.int64)
            self._pending.setdefault(release, []).append(Increments(
                slots, np.full(len(slots), m), np.full(len(slots), release),
                impressions[slots] if first else zeros, clicks[slots] if first else zeros,
                spend[slots] if first else np.zeros(len(slots)), bins[slots, k], gmv_bins[slots, k]))
        return Increments.concat(self._pending.pop(m + 1, []))

    def drain(self) -> Increments:
        """After the day: every increment still pending (known after the day's end)."""
        parts = [p for key in sorted(self._pending) for p in self._pending[key]]
        self._pending.clear()
        return Increments.concat(parts)
