"""What the sibling breakers read besides the decisions' features: competitor prices, stock, the sales rate.

Per campaign, at one tick (guards.observe.BREAKER_COLUMNS):

- competitor price drop: each competitor's newest reading within `feed_max_age_s`
  gives its drop 1 - price / reference_price; the campaign's is the largest (with
  that competitor's price and reference as the evidence). The decisions' own
  competitor price index (1.0 = competitors at their usual prices) is observed
  beside it (guards.observe); the competitor guard takes the larger drop of the two.
- stock units: the stock feed's newest reading within `feed_max_age_s`.
- sales per day: the orders that became known over the last `sales_window_s`
  (by known_ts, from the outcome feed) x 86,400 / the window. Counting orders as
  they become known needs no lag model, and over hours the conversion lag moves
  the rate little. Until the outcome feed has run MIN_SALES_S there is no rate;
  before it has run the whole window, the window is the time it has run.

The same pure functions serve the worker (`load_breaker_inputs`, from the store)
and the in-process evaluator (guards.evaluator), so both see the same figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from guards.config import ObserveConfig
from guards.observe import BREAKER_COLUMNS

DAY_S = 86400
MIN_SALES_S = 1800  # a rate from fewer minutes of orders swings with every order


def worst_competitor(codes: np.ndarray, observed_ts: np.ndarray, price: np.ndarray, reference: np.ndarray,
                     n: int) -> tuple[np.ndarray, ...]:
    """Per campaign (n): the competitor reading with the largest drop (drop, price, reference) and the newest
    reading's time; NaN where there is none.

    Each competitor's newest reading(s), campaigns as codes (-1: unknown, ignored)."""
    drop, best_price, best_ref, newest = (np.full(n, np.nan) for _ in range(4))
    ok = (codes >= 0) & (reference > 0)
    each = 1.0 - price[ok] / reference[ok]
    for code, ts, d, p, r in zip(codes[ok].tolist(), observed_ts[ok].tolist(), each.tolist(), price[ok].tolist(),
                                 reference[ok].tolist(), strict=True):
        if not d <= drop[code]:  # NaN (nothing yet) or a larger drop
            drop[code], best_price[code], best_ref[code] = d, p, r
        newest[code] = np.fmax(newest[code], ts)
    return drop, best_price, best_ref, newest


def sales_per_day(orders: np.ndarray, feed_start_ts: float | None, now_ts: int, window_s: int) -> np.ndarray:
    """Orders per day from the orders known over the window (per campaign); NaN before MIN_SALES_S of feed."""
    ran = now_ts - feed_start_ts if feed_start_ts is not None else 0
    window = min(window_s, ran)
    if window < MIN_SALES_S:
        return np.full(len(orders), np.nan)
    return np.asarray(orders, dtype=np.float64) * DAY_S / window


def days_of_stock(stock_units: float, per_day: float) -> float:
    """Days the stock lasts at the sales rate: 0 when empty, inf with stock and no sales, NaN unknown."""
    if stock_units != stock_units:
        return float("nan")
    if stock_units <= 0:
        return 0.0
    if per_day != per_day:
        return float("nan")
    return float("inf") if per_day <= 0 else stock_units / per_day


def breaker_frame(campaign_ids: list[str], competitor: tuple[np.ndarray, ...], stock: tuple[np.ndarray, np.ndarray],
                  per_day: np.ndarray) -> pd.DataFrame:
    """BREAKER_COLUMNS indexed by campaign_id, as guards.observe.observe takes them.

    competitor: worst_competitor's answer; stock: (units, observed_ts) of the newest readings."""
    drop, price, reference, competitor_ts = competitor
    units, stock_ts = stock
    values = (drop, price, reference, units, per_day, competitor_ts, stock_ts)
    return pd.DataFrame(dict(zip(BREAKER_COLUMNS, values, strict=True)),
                        index=pd.Index(campaign_ids, name="campaign_id"))


def load_breaker_inputs(conn: Connection, now_ts: int, config: ObserveConfig,
                        campaign_ids: list[str]) -> pd.DataFrame:
    """The breakers' figures for `campaign_ids` from the store: newest readings and the orders known."""
    index = pd.Index(campaign_ids)
    n = len(index)
    fresh = {"since": now_ts - config.feed_max_age_s, "now": now_ts}
    prices = conn.execute(text(
        "SELECT p.campaign_id, p.observed_ts, p.price, p.reference_price FROM competitor_prices p JOIN "
        "(SELECT campaign_id, competitor, MAX(observed_ts) AS t FROM competitor_prices "
        "WHERE observed_ts > :since AND observed_ts <= :now GROUP BY campaign_id, competitor) l "
        "ON p.campaign_id = l.campaign_id AND p.competitor = l.competitor AND p.observed_ts = l.t"), fresh).all()
    codes = index.get_indexer([r[0] for r in prices])
    competitor = worst_competitor(codes, *(np.array([r[i] for r in prices], dtype=np.float64) for i in (1, 2, 3)), n)
    stock = conn.execute(text(
        "SELECT s.campaign_id, MIN(s.stock_units), MAX(s.observed_ts) FROM stock_levels s JOIN "
        "(SELECT campaign_id, MAX(observed_ts) AS t FROM stock_levels "
        "WHERE observed_ts > :since AND observed_ts <= :now GROUP BY campaign_id) l "
        "ON s.campaign_id = l.campaign_id AND s.observed_ts = l.t GROUP BY s.campaign_id"), fresh).all()
    units, stock_ts = np.full(n, np.nan), np.full(n, np.nan)
    at = index.get_indexer([r[0] for r in stock])
    for column, i in ((units, 1), (stock_ts, 2)):
        column[at[at >= 0]] = np.array([r[i] for r in stock], dtype=np.float64)[at >= 0]
    window = {"since": now_ts - config.sales_window_s, "now": now_ts}
    sold = conn.execute(text(
        "SELECT campaign_id, SUM(orders) FROM outcomes WHERE known_ts > :since AND known_ts <= :now "
        "AND orders > 0 GROUP BY campaign_id"), window).all()  # most increments carry no order: 3x faster
    orders = np.zeros(n)
    at = index.get_indexer([r[0] for r in sold])
    orders[at[at >= 0]] = np.array([r[1] for r in sold], dtype=np.float64)[at >= 0]
    start = conn.execute(text("SELECT MIN(known_ts) FROM outcomes WHERE known_ts > :since AND known_ts <= :now"),
                         window).scalar()
    return breaker_frame(list(index), competitor, (units, stock_ts),
                         sales_per_day(orders, None if start is None else int(start), now_ts, config.sales_window_s))
