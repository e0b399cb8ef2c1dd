"""What the guards see: one observation per campaign per tick, computed for all at once.

Definitions (docs/GUARDS.md has the reasoning):

- predicted ROI of the model's plan: over the campaign's newest decision buckets
  (`pred_window_s` back from its latest bucket), predicted GMV / predicted spend =
  sum(pred_roi x w) / sum(w), w = budget_share x audience_on (the bidder's split of
  the campaign's spend across its slots). The decisions table keeps the MODEL's
  plan for every slot even when the pool serves, so this is also the probation
  canary's figure.
- spend at risk: spend per second over the last `spend_window_s` of buckets, from
  outcomes (spend is known when the bucket is served); predicted spend in the
  window = that rate x pred_window_s.
- realised ROI over MATURE outcomes, corrected for conversion lag: the feed's
  watermark W (newest known_ts, never past now) gives each bucket its age
  a = W - bucket_ts and the share F(a) of its GMV the lag curve expects to be known.
  Buckets with F(a) >= maturity_cdf (age >= maturity_s) and within
  `realised_window_s` of that horizon count; realised ROI = sum(GMV known) /
  sum(spend x F(a)): the GMV still to come is neither ignored (no false fall) nor
  invented per bucket. Using the watermark instead of now means an outcome feed
  that stops does not make recent buckets look like a fall.
- the campaign's value calibration, over the same mature buckets as the realised
  ROI: GMV known / sum(clicks x pred_value x F(a)), how far the model's value
  predictions for its clicks are off, whoever set the bid (the ROI guard's probation
  uses it while the pool serves).
- predicted ROI of the clicks bought: over the last `spend_window_s` of buckets, the
  value the model predicted for the clicks the campaign bought (clicks x pred_value) /
  what they cost. Clicks and spend are known when a bucket is served, so it needs no
  outcome lag and no model of the price: the plan's pred_roi divides by an expected
  price (bid x the historical paid ratio) that was 10% too high in 818.
- model-wide calibration of the model's VALUE prediction, pooled over every campaign
  observed (one model serves them): k = GMV known / sum(pred_value x clicks x F(a))
  over the buckets of age >= `calibration_maturity_s` (and within `realised_window_s`
  of it): each slot's clicks times the value per click the model predicted for that
  slot, whoever set the bid. Every slot has the model's prediction, so the pool's
  slots are evidence too; comparing ROIs instead would also measure how well the
  shadow score prices the pool's bids (it over-promised by a third more in 818).
  With ~40x one campaign's evidence it shows a model that over-promises everywhere
  minutes before any one campaign's own outcomes can. Its evidence is the effective
  order count (G^2 / sum(gmv_c^2 / orders_c): orders weighted by the campaigns'
  baskets). Outcomes without a decision have no prediction and count as GMV only
  (k errs high: towards no trip).
- data age: now minus the older of the campaign's newest decision bucket and
  newest outcome known_ts, looked up within `lookback_s`; None when the campaign
  has neither (nothing to guard).
- for the sibling breakers: the newest bucket's features (spend pace, inventory
  level, competitor price index) and the feeds' figures (guards.feeds: the worst
  competitor price drop, stock units, the sales rate), one value per campaign.

`observe` is pure over small aggregated frames (one row per campaign x bucket);
`load_inputs` makes those frames from the store with GROUP BY queries.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from guards.config import ObserveConfig
from guards.sequential import cusum, lag_share_at_end

DAY_S = 86400


@dataclass(frozen=True, slots=True)
class Observation:
    """One campaign at one tick (NaN where there is nothing to measure)."""

    campaign_id: str
    latest_bucket_ts: int | None
    pred_roi: float
    pred_spend: float          # spend expected over pred_window_s at the current rate, yuan
    spend_per_hour: float      # spend at risk, yuan per hour
    pool_pred_roi: float       # the rule pool's predicted ROI on the same slots (shadow score)
    value_calibration: float   # GMV known / the model's lag-corrected predicted GMV, mature buckets
    bought_pred_roi: float     # the model's value of the clicks bought / their cost, over spend_window_s
    realised_roi: float        # lag-corrected, mature buckets only
    realised_spend: float      # sum(spend x F(age)) of those buckets, yuan
    realised_orders: float     # orders known in those buckets
    avg_order_value: float
    data_age_s: int | None
    day_elapsed_s: int
    spend_pace: float
    inventory_level: float
    # Model-wide, the same for every campaign of the tick (see model_calibration):
    model_calibration: float         # realised / predicted GMV pooled over every campaign served
    model_calibration_orders: float  # effective orders behind it (its evidence)
    # The sequential evidence that ROI fell below the campaign's floor (guards.sequential: the bucket-time
    # CUSUM over the last `sequential.window_s`), and the campaign's gross margin (what an action earns).
    cusum: float = 0.0
    gross_margin: float = float("nan")
    model_calibration_prior_share: float = 0.0  # the launch gate's prior's share of the pooled evidence
    # The sibling breakers' figures (guards.feeds), per campaign; NaN: nothing to measure.
    competitor_price_index: float = math.nan      # the decisions' feature: competitors' price / their usual one
    competitor_price_drop: float = math.nan       # the feed's worst 1 - price / reference over the competitors
    competitor_price: float = math.nan            # that competitor's price, yuan
    competitor_reference_price: float = math.nan  # and its reference, yuan
    stock_units: float = math.nan                 # the stock feed's newest reading
    sales_per_day: float = math.nan               # orders known over the sales window, per day
    # How old each breaker's evidence is (its own staleness: a paused campaign's outcomes stop, its
    # competitors' prices and its stock do not); None: no evidence.
    competitor_age_s: int | None = None           # the fresher of the decisions' index and the price feed
    stock_age_s: int | None = None                # the stock reading


OBSERVATION_COLUMNS = tuple(f.name for f in fields(Observation))
FEATURE_COLUMNS = ("spend_pace", "inventory_level", "competitor_price_index")
# guards.feeds' figures per campaign (observed as they are) and the times of the readings behind them.
BREAKER_FIGURES = ("competitor_price_drop", "competitor_price", "competitor_reference_price", "stock_units",
                   "sales_per_day")
BREAKER_COLUMNS = BREAKER_FIGURES + ("competitor_observed_ts", "stock_observed_ts")


def lag_share(age_s: np.ndarray, config: ObserveConfig) -> np.ndarray:
    """Share of a bucket's GMV expected known at age `age_s` (step function of the lag curve)."""
    minutes = np.asarray(config.lag_minutes, dtype=np.float64) * 60
    cdf = np.asarray(config.lag_cdf, dtype=np.float64)
    idx = np.searchsorted(minutes, np.asarray(age_s, dtype=np.float64), side="right") - 1
    return np.where(idx >= 0, cdf[np.clip(idx, 0, None)], 0.0)


def lookback_s(config: ObserveConfig, stale_after_s: int, sequential_window_s: int = 0) -> int:
    oldest_mature = max(config.maturity_s, config.calibration_maturity_s) + config.realised_window_s
    return max(oldest_mature, config.spend_window_s, 3 * stale_after_s, sequential_window_s + config.bucket_s)


@dataclass(frozen=True)
class CalibrationPrior:
    """What the serving model version's launch gate measured of its calibration (GMV / the value it
    predicted, on held-out history), and the weight it is given: this many effective orders, at most."""

    k: float
    orders: float


def model_calibration(gmv: np.ndarray, orders: np.ndarray, predicted: np.ndarray,
                      prior: CalibrationPrior | None = None) -> tuple[float, float, float]:
    """(k, effective orders, the prior's share of them) pooled over campaigns: k = sum(gmv) / sum(predicted).

    Per campaign: GMV known, orders known and the lag-corrected GMV the model predicted,
    over the same buckets. Effective orders = G^2 / sum(gmv_c^2 / orders_c), the Poisson
    count that would give the pooled GMV its variance when baskets differ by campaign.
    A prior counts as `prior.orders` effective orders at ratio `prior.k` (a gamma prior on k,
    conjugate to the Poisson): live evidence outweighs it once it holds more orders than that.
    """
    total, expected = float(gmv.sum()), float(predicted.sum())
    sold = orders > 0
    spread = float((gmv[sold] ** 2 / orders[sold]).sum())
    live = total * total / spread if spread > 0 else 0.0
    if prior is None or not prior.orders > 0:
        return (total / expected if expected > 0 else np.nan), live, 0.0
    # The prior's orders as pseudo-GMV at the live GMV per effective order (any scale when there is none yet).
    per_order = total / live if live > 0 else 1.0
    prior_gmv = prior.orders * per_order
    k = (total + prior_gmv) / (expected + prior_gmv / prior.k)
    return k, live + prior.orders, prior.orders / (live + prior.orders)


def _codes(frame: pd.DataFrame, index: pd.Index) -> np.ndarray:
    """Row -> campaign position in `index` (-1: a campaign not in the campaigns table). The rows name few
    campaigns many times: each distinct name is looked up once."""
    rows, names = pd.factorize(frame["campaign_id"].array)
    where = index.get_indexer(names)
    return np.where(rows >= 0, where[rows], -1)


def _sum_by(codes: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    # Bin 0 takes the rows of no campaign (code -1), then is dropped: no mask, no copy of the rows.
    return np.bincount(codes + 1, weights=values, minlength=n + 1)[1:]


def _bucket_table(codes: np.ndarray, bucket: np.ndarray, n: int, bucket_s: int):
    """(the distinct buckets, sorted; table(values) -> an n x buckets array of `values` summed per campaign
    and bucket). Rows of no campaign (code -1) are left out."""
    if len(bucket) == 0:
        return np.zeros(0, dtype=np.int64), lambda values: np.zeros((n, 0))
    first = int(bucket.min())
    if ((bucket - first) % bucket_s == 0).all():  # the usual grid: no sort needed
        where = (bucket - first) // bucket_s
        grid = first + bucket_s * np.arange(int(where.max()) + 1, dtype=np.int64)
    else:
        grid, where = np.unique(bucket, return_inverse=True)
    width = len(grid)
    key = (codes + 1) * width + where

    def table(values: np.ndarray) -> np.ndarray:
        return np.bincount(key, weights=values, minlength=(n + 1) * width).reshape(n + 1, width)[1:]

    return grid, table


def _max_by(codes: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    out = np.full(n, np.nan)
    ok = codes >= 0
    np.fmax.at(out, codes[ok], values[ok].astype(np.float64))
    return out


@dataclass(frozen=True)
class Feeds:
    """The aggregated inputs with campaigns as integer codes (position in the campaign list).

    Decisions and outcomes: one entry per campaign x bucket (sums); features: one per campaign.
    """

    d_codes: np.ndarray
    d_bucket: np.ndarray
    w: np.ndarray
    roi_w: np.ndarray
    pool_w: np.ndarray
    pool_n: np.ndarray
    o_codes: np.ndarray
    o_bucket: np.ndarray
    spend: np.ndarray
    orders: np.ndarray
    gmv: np.ndarray
    pred_gmv: np.ndarray    # sum over the entry's slots of clicks x the model's pred_value
    last_known: np.ndarray
    features: dict[str, np.ndarray]  # FEATURE_COLUMNS -> (n,)
    breakers: dict[str, np.ndarray] = field(default_factory=dict)  # BREAKER_COLUMNS -> (n,) (guards.feeds)


@dataclass(frozen=True)
class Sequential:
    """What the sequential evidence needs per tick: each campaign's ROI floor and the CUSUM's settings
    (guards.config.RoiConfig: cusum_above, cusum_below, cusum_window_s, order_value_cv)."""

    floor: np.ndarray          # (n,)
    above: float
    below: tuple[float, ...]
    window_s: int
    order_value_cv: float


def sequential_evidence(buckets: np.ndarray, gmv: np.ndarray, spend: np.ndarray, watermark: int,
                        avg_order_value: np.ndarray, config: ObserveConfig, params: Sequential) -> np.ndarray:
    """Per campaign, the bucket-time CUSUM of its realised GMV against its floor (guards.sequential), over
    the buckets of the last window that have ended by the feed's watermark (`gmv`, `spend`: campaigns x
    `buckets` tables)."""
    age = watermark - buckets - config.bucket_s
    window = (age >= 0) & (age < params.window_s)
    share = lag_share_at_end(age[window], np.asarray(config.lag_minutes, dtype=np.float64) * 60,
                             np.asarray(config.lag_cdf, dtype=np.float64))
    scale = (np.asarray(avg_order_value, dtype=np.float64) * (1.0 + params.order_value_cv ** 2))[:, None]
    return cusum(gmv[:, window] / scale, spend[:, window] * share / scale, params.floor, params.above,
                 params.below)


def observe_feeds(feeds: Feeds, avg_order_value: np.ndarray, now_ts: int, config: ObserveConfig,
                  lookback: int, gross_margin: np.ndarray | None = None,
                  sequential: Sequential | None = None, prior: CalibrationPrior | None = None) -> dict[str, np.ndarray]:
    """Every observation column (OBSERVATION_COLUMNS but campaign_id) for n campaigns, vectorised."""
    n = len(avg_order_value)
    d_codes, d_bucket = feeds.d_codes, feeds.d_bucket
    latest = _max_by(d_codes, n, d_bucket)
    latest_row = np.append(latest, np.nan)[d_codes]  # -1 (unknown campaign) reads the NaN
    in_pred = d_bucket > latest_row - config.pred_window_s
    w_sum = _sum_by(d_codes, n, feeds.w * in_pred)
    roi_sum = _sum_by(d_codes, n, feeds.roi_w * in_pred)
    pool_sum = _sum_by(d_codes, n, np.nan_to_num(feeds.pool_w) * in_pred)
    pool_n = _sum_by(d_codes, n, np.nan_to_num(feeds.pool_n) * in_pred)

    o_codes, o_bucket = feeds.o_codes, feeds.o_bucket
    watermark = min(now_ts, int(feeds.last_known.max())) if len(feeds.last_known) else now_ts
    # Every window below weighs a campaign's buckets by the bucket's age alone: sum each outcome column
    # into a campaign x bucket table once, then each window is one product with its weights by bucket.
    buckets, table = _bucket_table(o_codes, o_bucket, n, config.bucket_s)
    spend, gmv, orders, pred_gmv = (table(v) for v in (feeds.spend, feeds.gmv, feeds.orders, feeds.pred_gmv))
    age = watermark - buckets
    share = lag_share(age, config)
    mature = ((age >= config.maturity_s) & (age < config.maturity_s + config.realised_window_s)).astype(np.float64)
    realised_spend = spend @ (share * mature)
    realised_gmv = gmv @ mature
    realised_orders = orders @ mature
    realised_pred_gmv = pred_gmv @ (share * mature)
    cal_s = config.calibration_maturity_s
    cal = ((age >= cal_s) & (age < cal_s + config.realised_window_s)).astype(np.float64)
    recent = (buckets > watermark - config.spend_window_s).astype(np.float64)
    recent_spend = spend @ recent
    spend_rate = recent_spend / config.spend_window_s
    last_outcome = _max_by(o_codes, n, feeds.last_known)
    with np.errstate(invalid="ignore", divide="ignore"):
        pred_roi = np.where(w_sum > 0, roi_sum / w_sum, np.nan)
        pool_pred_roi = np.where(pool_n > 0, pool_sum / pool_n, np.nan)
        realised_roi = np.where(realised_spend > 0, realised_gmv / realised_spend, np.nan)
        value_calibration = np.where(realised_pred_gmv > 0, realised_gmv / realised_pred_gmv, np.nan)
        bought_pred_roi = np.where(recent_spend > 0, (pred_gmv @ recent) / recent_spend, np.nan)
    k, k_orders, prior_share = model_calibration(gmv @ cal, orders @ cal, pred_gmv @ (share * cal), prior)

    breakers = {c: feeds.breakers.get(c, np.full(n, np.nan)) for c in BREAKER_COLUMNS}
    index = feeds.features.get("competitor_price_index", np.full(n, np.nan))
    # A feed with no row in the lookback counts as lookback old, if the other feed has rows. The outcome
    # feed is one feed: its freshness is its newest row over every campaign. A campaign of its own sends
    # no outcome while it buys no click (paused, or its budget spent), which is not stale data.
    feed_outcome = np.nanmax(last_outcome) if np.any(~np.isnan(last_outcome)) else np.nan
    has_any = ~np.isnan(latest) | ~np.isnan(last_outcome)
    oldest = np.fmin(np.where(np.isnan(latest), now_ts - lookback, latest),
                     np.full(n, now_ts - lookback if np.isnan(feed_outcome) else feed_outcome))
    return {
        "latest_bucket_ts": latest,
        "pred_roi": pred_roi,
        "pred_spend": spend_rate * config.pred_window_s,
        "spend_per_hour": spend_rate * 3600,
        "pool_pred_roi": pool_pred_roi,
        "value_calibration": value_calibration,
        "bought_pred_roi": bought_pred_roi,
        "realised_roi": realised_roi,
        "realised_spend": realised_spend,
        "realised_orders": realised_orders,
        "avg_order_value": np.asarray(avg_order_value, dtype=np.float64),
        "data_age_s": np.where(has_any, now_ts - oldest, np.nan),
        "day_elapsed_s": np.full(n, (now_ts + config.tz_offset_s) % DAY_S, dtype=np.int64),
        **{c: feeds.features.get(c, np.full(n, np.nan)) for c in FEATURE_COLUMNS},
        "model_calibration": np.full(n, k),
        "model_calibration_orders": np.full(n, k_orders),
        "cusum": (np.zeros(n) if sequential is None else
                  sequential_evidence(buckets, gmv, spend, watermark, avg_order_value, config, sequential)),
        "gross_margin": np.full(n, np.nan) if gross_margin is None else np.asarray(gross_margin, dtype=np.float64),
        "model_calibration_prior_share": np.full(n, prior_share),
        **{c: breakers[c] for c in BREAKER_FIGURES},
        "competitor_age_s": np.fmin(now_ts - breakers["competitor_observed_ts"],
                                    np.where(np.isnan(index), np.nan, now_ts - latest)),
        "stock_age_s": now_ts - breakers["stock_observed_ts"],
    }


def observe(decisions: pd.DataFrame, outcomes: pd.DataFrame, features: pd.DataFrame,
            campaigns: pd.DataFrame, now_ts: int, config: ObserveConfig, lookback: int,
            sequential: Sequential | None = None, prior: CalibrationPrior | None = None,
            breakers: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per campaign of `campaigns` (index campaign_id), columns OBSERVATION_COLUMNS.

    decisions: campaign_id, bucket_ts, w, roi_w, pool_w, pool_n (sums per campaign x bucket)
    outcomes:  campaign_id, bucket_ts, spend, orders, gmv, pred_gmv, last_known_ts (sums per campaign x
               bucket; pred_gmv = clicks x the slot's decision's pred_value)
    features:  campaign_id and FEATURE_COLUMNS (the newest bucket's values; a missing column is NaN)
    campaigns: campaign_id, avg_order_value, gross_margin (optional)
    sequential: the CUSUM's floors (in `campaigns`' order) and settings; None: no sequential evidence
    prior:     the serving model version's calibration from its launch gate (load_calibration_prior)
    breakers:  indexed by campaign_id, BREAKER_COLUMNS (guards.feeds.load_breaker_inputs); None: NaN
    """
    index = pd.Index(campaigns["campaign_id"].array)
    feat = features.groupby("campaign_id", sort=False)[[c for c in FEATURE_COLUMNS if c in features]].max() \
        if len(features) else None

    def col(frame: pd.DataFrame, name: str, dtype=np.float64) -> np.ndarray:
        return frame[name].to_numpy(dtype=dtype)

    feeds = Feeds(
        _codes(decisions, index), col(decisions, "bucket_ts", np.int64), col(decisions, "w"),
        col(decisions, "roi_w"), col(decisions, "pool_w"), col(decisions, "pool_n"),
        _codes(outcomes, index), col(outcomes, "bucket_ts", np.int64), col(outcomes, "spend"),
        col(outcomes, "orders"), col(outcomes, "gmv"), col(outcomes, "pred_gmv"), col(outcomes, "last_known_ts"),
        {c: feat[c].reindex(index).to_numpy(dtype=np.float64) for c in feat.columns} if feat is not None else {},
        {c: breakers[c].reindex(index).to_numpy(dtype=np.float64) for c in BREAKER_COLUMNS}
        if breakers is not None else {})
    margin = campaigns["gross_margin"].to_numpy(dtype=np.float64) if "gross_margin" in campaigns else None
    columns = observe_feeds(feeds, campaigns["avg_order_value"].to_numpy(dtype=np.float64), now_ts, config,
                            lookback, margin, sequential, prior)
    return pd.DataFrame({"campaign_id": index.to_numpy(), **columns}, index=index)


def observations(frame: pd.DataFrame) -> list[Observation]:
    """Rows of `observe`'s frame as Observation values."""
    return observations_from(frame["campaign_id"].tolist(),
                             {c: frame[c].to_numpy() for c in OBSERVATION_COLUMNS[1:]})


def observations_from(campaign_ids: list[str], columns: dict[str, np.ndarray]) -> list[Observation]:
    """Observation values from observe_feeds' columns (NaN ages and buckets become None)."""
    lists = [columns[c].tolist() for c in OBSERVATION_COLUMNS[1:]]
    whole = [OBSERVATION_COLUMNS.index(c) - 1
             for c in ("latest_bucket_ts", "data_age_s", "competitor_age_s", "stock_age_s")]
    out = []
    for cid, *values in zip(campaign_ids, *lists, strict=True):
        for i in whole:
            values[i] = None if values[i] != values[i] else int(values[i])
        out.append(Observation(cid, *values))
    return out


# --- from the store ----------------------------------------------------------------------------

# Clicks x the value the model predicted for each outcome row's slot (its decision; MAX: a decision sent
# twice does not count twice).
_PRED_GMV_SQL = ("SUM(CASE WHEN o.clicks > 0 THEN o.clicks * COALESCE((SELECT MAX(d.pred_value) FROM decisions d "
                 "WHERE d.campaign_id = o.campaign_id AND d.bucket_ts = o.bucket_ts "
                 "AND d.audience_package = o.audience_package), 0) ELSE 0 END)")


def _feature_sql(dialect: str, name: str) -> str:
    if dialect == "postgresql":
        return f"CAST(features->>'{name}' AS DOUBLE PRECISION)"
    return f"json_extract(features, '$.{name}')"


def load_inputs(conn: Connection, now_ts: int, config: ObserveConfig, lookback: int,
                feature_names: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The frames `observe` takes, aggregated in the database.

    feature_names maps an observation column (FEATURE_COLUMNS) to the feature name in
    decisions.features (GuardSettings.feature_names).
    """
    since = now_ts - lookback
    decisions = pd.DataFrame(conn.execute(text(
        "SELECT campaign_id, bucket_ts, "
        "SUM(CASE WHEN audience_on THEN budget_share ELSE 0 END) AS w, "
        "SUM(CASE WHEN audience_on THEN budget_share * pred_roi ELSE 0 END) AS roi_w, "
        "SUM(CASE WHEN audience_on AND pool_pred_roi IS NOT NULL THEN budget_share * pool_pred_roi "
        "ELSE 0 END) AS pool_w, "
        "SUM(CASE WHEN audience_on AND pool_pred_roi IS NOT NULL THEN budget_share ELSE 0 END) AS pool_n "
        "FROM decisions WHERE bucket_ts >= :since AND bucket_ts <= :now "
        "GROUP BY campaign_id, bucket_ts"), {"since": since, "now": now_ts}).all(),
        columns=["campaign_id", "bucket_ts", "w", "roi_w", "pool_w", "pool_n"])
    # Each outcome row with clicks meets its slot's decision (ix_decisions_slot answers it).
    outcomes = pd.DataFrame(conn.execute(text(
        f"SELECT o.campaign_id, o.bucket_ts, SUM(o.spend), SUM(o.orders), SUM(o.gmv), {_PRED_GMV_SQL}, "
        "MAX(o.known_ts) FROM outcomes o WHERE o.bucket_ts >= :since AND o.known_ts <= :now "
        "GROUP BY o.campaign_id, o.bucket_ts"), {"since": since, "now": now_ts}).all(),
        columns=["campaign_id", "bucket_ts", "spend", "orders", "gmv", "pred_gmv", "last_known_ts"])
    dialect = conn.dialect.name
    selects = ", ".join(f"MAX({_feature_sql(dialect, feature_names.get(c, c))}) AS {c}"
                        for c in FEATURE_COLUMNS)
    features = pd.DataFrame(conn.execute(text(
        f"SELECT d.campaign_id, {selects} FROM decisions d JOIN "
        "(SELECT campaign_id, MAX(bucket_ts) AS b FROM decisions WHERE bucket_ts >= :since "
        "AND bucket_ts <= :now GROUP BY campaign_id) m "
        "ON d.campaign_id = m.campaign_id AND d.bucket_ts = m.b GROUP BY d.campaign_id"),
        {"since": since, "now": now_ts}).all(), columns=["campaign_id", *FEATURE_COLUMNS])
    campaigns = pd.DataFrame(conn.execute(text(
        "SELECT campaign_id, avg_order_value, gross_margin FROM campaigns ORDER BY campaign_id")).all(),
        columns=["campaign_id", "avg_order_value", "gross_margin"])
    for frame in (decisions, outcomes, features):
        for col in frame.columns[1:]:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return decisions, outcomes, features, campaigns


def load_calibration_prior(conn: Connection) -> CalibrationPrior | None:
    """The calibration prior of the model version behind the newest decisions: what its launch gate
    measured (models.meta["calibration_prior"]: k and orders), None without one."""
    meta = conn.execute(text(
        "SELECT m.meta FROM models m WHERE m.model_version = (SELECT d.model_version FROM decisions d "
        "ORDER BY d.bucket_ts DESC, d.decision_id DESC LIMIT 1)")).scalar()
    if isinstance(meta, str):  # a JSON column read through text() on SQLite
        meta = json.loads(meta)
    prior = (meta or {}).get("calibration_prior")
    if not prior:
        return None
    return CalibrationPrior(float(prior["k"]), float(prior["orders"]))
