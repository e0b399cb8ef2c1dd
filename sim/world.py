"""The world of one promotion day: traffic, competitors, clicks, orders, stock, lag.

Everything is per slot (campaign x audience package), flattened campaign-major
into arrays of length S = C x P, and per bucket of one simulated minute. The
world knows the truth (true CTR, CVR, competitors' bids); the bidder sees only
what its outcome increments tell it, when they arrive.

Auction model, per slot and bucket: `n` opportunities (Poisson around the
traffic curve); each has a competitors' best bid per click drawn from a
lognormal whose median moves with the promotion. We win an opportunity when our
bid is at least that price and pay that price per click (second price). Won
opportunities are impressions; clicks and orders follow the true CTR and CVR.
Orders become known with a conversion lag (`lag_minutes`, `lag_shares`).

Randomness is keyed (sim.crn): the day's deviations by (seed, purpose), the opportunities by
(seed, "traffic", minute, slot), so one slot's draws never depend on another's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from sim import crn
from sim.catalog import CATEGORIES, MINUTES_PER_DAY, Catalog, build_catalog
from sim.scenario import Event, Scenario

_MIN = np.arange(MINUTES_PER_DAY, dtype=np.float64)


def _bump(center_h: float, width_h: float) -> np.ndarray:
    return np.exp(-0.5 * ((_MIN / 60.0 - center_h) / width_h) ** 2)


@dataclass(frozen=True)
class DayCurves:
    traffic: np.ndarray   # (1440,) opportunities multiplier, mean 1 on a full promotion day
    rush: np.ndarray      # (1440,) 0..1, how much of a promotion moment this minute is
    evening: np.ndarray   # (1440,) 0..1, evening shopping mood (a small CVR lift)


def day_curves(promo_intensity: float) -> DayCurves:
    """Ordinary diurnal shape plus the promotion's midnight rush and evening peak."""
    diurnal = 0.18 + 0.35 * _bump(10.5, 1.6) + 0.5 * _bump(14.0, 2.5) + 1.0 * _bump(21.0, 1.8)
    midnight_rush = np.exp(-_MIN / 45.0)          # the sale opens at 00:00
    evening_peak = _bump(21.0, 1.3)
    final_rush = _bump(23.6, 0.35)                # last chance before the day ends
    rush = np.clip(midnight_rush + evening_peak + final_rush, 0.0, 1.0)
    traffic = diurnal * (1 + promo_intensity * (3.0 * midnight_rush + 0.8 * evening_peak + 1.2 * final_rush))
    reference = 0.18 + 0.35 * _bump(10.5, 1.6) + 0.5 * _bump(14.0, 2.5) + 1.0 * _bump(21.0, 1.8)
    reference = reference * (1 + 3.0 * midnight_rush + 0.8 * evening_peak + 1.2 * final_rush)
    traffic = traffic / reference.mean()
    return DayCurves(traffic, rush, _bump(21.0, 2.5))


def partial_mean(bid: np.ndarray, median: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(win probability, mean price paid when winning) against lognormal competitor bids."""
    mu = np.log(median)
    z = (np.log(np.maximum(bid, 1e-9)) - mu) / sigma
    win = ndtr(z)
    # E[X; X <= b] for lognormal X = exp(mu + s^2/2) * Phi(z - s).
    paid_total = np.exp(mu + 0.5 * sigma * sigma) * ndtr(z - sigma)
    paid = np.where(win > 1e-12, paid_total / np.maximum(win, 1e-12), 0.0)
    return win, np.minimum(paid, bid)


@dataclass(frozen=True)
class Truth:
    """The world at one minute, per slot: what the bidder cannot see directly."""

    opportunities: np.ndarray  # (S,) int
    ctr: np.ndarray            # (S,)
    cvr: np.ndarray            # (S,) zero when out of stock
    median_bid: np.ndarray     # (S,) competitors' median bid per click, yuan
    order_value: np.ndarray    # (S,) GMV per order, yuan
    price: np.ndarray          # (C,) item price after discount, yuan
    discount: np.ndarray       # (C,)
    competitor_price_index: np.ndarray  # (C,) 1.0 = competitors at their usual prices


def _masks(catalog: Catalog, event: Event) -> tuple[np.ndarray, np.ndarray]:
    """(slot mask (S,), campaign mask (C,)) an event applies to."""
    ids = catalog.campaign_ids
    cats = [CATEGORIES[k].code for k in catalog.category_of]
    camp = np.array([(not event.campaigns or cid in event.campaigns)
                     and (not event.categories or cat in event.categories) for cid, cat in zip(ids, cats, strict=True)])
    pkg = np.array([not event.audience_packages or p in event.audience_packages for p in catalog.package_codes])
    return (camp[:, None] & pkg[None, :]).ravel(), camp


class World:
    """One promotion day's truth for a scenario and a seed; `truth(minute, draws, in_stock)` draws
    that minute.

    `seed` keys the day's deviations from the catalog's rates (purposes "ctr_day", "cvr_day",
    "cpi_base"); a numpy Generator (as older callers passed) gives a seed drawn from it."""

    def __init__(self, scenario: Scenario, seed: int | np.random.Generator, catalog: Catalog | None = None):
        if isinstance(seed, np.random.Generator):
            seed = int(seed.integers(2**63))
        draws = crn.KeyedDraws(seed)
        w = scenario.world
        self.scenario = scenario
        self.seed = seed
        self.catalog = catalog or build_catalog(w.campaigns, w.catalog_seed)
        cat = self.catalog
        C, P = len(cat.campaigns), len(cat.packages)
        self.C, self.P, self.S = C, P, C * P
        self.curves = day_curves(w.promo_intensity)
        self.sigma = w.competitor_bid_spread
        # The day's deviations from the catalog's long-run rates (what history cannot tell).
        self.ctr_day = (cat.base_ctr * np.exp(w.ctr_noise * crn.normal(draws.uniform("ctr_day", 0, (C, P))))).ravel()
        self.cvr_day = (cat.base_cvr * np.exp(w.cvr_noise * crn.normal(draws.uniform("cvr_day", 0, (C, P))))).ravel()
        self.cpi_base = np.exp(0.01 * crn.normal(draws.uniform("cpi_base", 0, len(CATEGORIES))))[
            list(cat.category_of)]
        self.campaign_of = np.repeat(np.arange(C), P)
        self.basket = cat.basket.ravel()
        # Long-run value per click at list price: the scale competitors bid against.
        self.ref_value = (cat.base_cvr * cat.list_price[:, None] * cat.basket).ravel()
        self.base_median = cat.market_ratio.ravel() * self.ref_value * w.competitor_bid_level
        self.traffic_base = self._traffic_base() * w.traffic_scale
        self.event_masks = [(e, *_masks(cat, e)) for e in scenario.events]
        expected_orders = self._expected_orders_per_campaign()
        self.opening_stock = np.ceil(expected_orders * w.stock_days).astype(np.int64)

    def _traffic_base(self) -> np.ndarray:
        """Opportunities per minute at traffic 1.0, sized so a bidder paying half the value per
        click would spend about 60% of each campaign's daily budget on a full promotion day."""
        cat = self.catalog
        budgets = np.array([c.daily_budget for c in cat.campaigns])
        value = self.ref_value
        win, paid = partial_mean(value / 2, cat.market_ratio.ravel() * value, 0.45)
        spend_per_opp = win * cat.base_ctr.ravel() * paid
        reach = cat.reach.ravel()
        weight = reach * spend_per_opp
        per_campaign = np.bincount(self.campaign_of, weights=weight, minlength=self.C)
        scale = 0.6 * budgets / (per_campaign * MINUTES_PER_DAY)
        return reach * scale[self.campaign_of]

    def _expected_orders_per_campaign(self) -> np.ndarray:
        win, _ = partial_mean(self.ref_value / 2, self.base_median, self.sigma)
        orders = self.traffic_base * MINUTES_PER_DAY * win * self.ctr_day * self.cvr_day
        return np.bincount(self.campaign_of, weights=orders, minlength=self.C)

    def discount(self, minute: int) -> np.ndarray:
        w = self.scenario.world
        return np.clip(self.catalog.base_discount * w.promo_intensity * (0.7 + 0.6 * self.curves.rush[minute]),
                       0.0, 0.6)

    def truth(self, minute: int, draws: crn.KeyedDraws, in_stock: np.ndarray) -> Truth:
        """The minute's truth; its opportunities drawn from `draws` (purpose "traffic")."""
        c = self.curves
        discount = self.discount(minute)
        price = self.catalog.list_price * (1 - discount)
        cpi = self.cpi_base.copy()
        ctr = self.ctr_day * (0.9 + 0.2 * c.rush[minute])
        cvr = self.cvr_day * (1 + 1.5 * discount[self.campaign_of]) * (0.92 + 0.16 * c.evening[minute])
        pressure = 1 + self.scenario.world.competitor_pressure * (c.traffic[minute] - 1)
        median = self.base_median * max(pressure, 0.3)
        order_value = price[self.campaign_of] * self.basket
        for event, slots, camps in self.event_masks:
            if not event.active(minute):
                continue
            factor = event.factor_at(minute)
            if event.kind == "cvr_shift":
                cvr = np.where(slots, cvr * factor, cvr)
            elif event.kind == "ctr_shift":
                ctr = np.where(slots, ctr * factor, ctr)
            elif event.kind == "order_value_shift":
                order_value = np.where(slots, order_value * factor, order_value)
            elif event.kind == "competitor_bid_surge":
                median = np.where(slots, median * factor, median)
            elif event.kind == "competitor_price_drop":
                cpi = np.where(camps, cpi * (1 - event.drop), cpi)
        # Cheaper competitors take buyers: conversion falls steeply with their price index.
        cvr = cvr * np.minimum(cpi, 1.2)[self.campaign_of] ** 3
        cvr = np.where(in_stock[self.campaign_of], np.minimum(cvr, 1.0), 0.0)
        opportunities = crn.poisson(draws.uniform("traffic", minute, self.S), self.expected_opportunities(minute))
        return Truth(opportunities, np.minimum(ctr, 1.0), cvr, median, order_value, price, discount, cpi)

    def expected_opportunities(self, minute: int) -> np.ndarray:
        """(S,) the mean of the minute's opportunities per slot (what `truth` draws from)."""
        return self.traffic_base * self.curves.traffic[minute]

    def stockout_mask(self, minute: int) -> np.ndarray:
        """(C,) campaigns an active stock-out event empties at this minute."""
        out = np.zeros(self.C, dtype=bool)
        for event, _, camps in self.event_masks:
            if event.kind == "stockout" and event.active(minute):
                out |= camps
        return out

    def outage_until(self, minute: int) -> int | None:
        """End of the outcome outage covering this minute, if any."""
        ends = [e.until_minute for e, _, _ in self.event_masks if e.kind == "outcome_outage" and e.active(minute)]
        return max(ends) if ends else None
