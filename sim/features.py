"""What the bidder knows: its feature vector per slot, built from its own observations.

The bidder never sees the world's truth. It sees its catalog (prices, discounts,
stock), the platform's traffic forecast, market intelligence (competitor price
index), its own budget, history from earlier days, and outcome increments as
they arrive (with conversion lag), smoothed into recent rates by `Observer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from explain.artifacts import FeatureSpec
from sim.catalog import CATEGORIES, PACKAGES, Catalog

# Exponential smoothing of observations: about an hour of memory per minute step.
_DECAY = float(np.exp(-1.0 / 60.0))
# Pseudo-counts pulling sparse recent rates towards history.
_PRIOR_IMPRESSIONS = 200.0
_PRIOR_CLICKS = 40.0


def feature_specs(catalog: Catalog) -> tuple[FeatureSpec, ...]:
    """The bid model's features, in the model's column order, with zh/en names and units."""
    return (
        FeatureSpec("hour", "小时", "Hour of day", "时", "h"),
        FeatureSpec("minute_of_day", "大促分钟", "Minute of promotion", "分钟", "min"),
        FeatureSpec("campaign", "推广计划", "Campaign", categorical_levels=catalog.campaign_ids),
        FeatureSpec("audience_package", "人群包", "Audience package", categorical_levels=catalog.package_codes),
        FeatureSpec("category", "品类", "Category", categorical_levels=tuple(c.code for c in CATEGORIES)),
        FeatureSpec("package_kind", "人群包类型", "Package kind",
                    categorical_levels=("life_scene", "value_tier")),
        FeatureSpec("promo_intensity", "大促力度", "Promotion intensity"),
        FeatureSpec("traffic_index", "流量指数", "Traffic index"),
        FeatureSpec("price", "到手价", "Price after discount", "元", "yuan"),
        FeatureSpec("discount", "折扣率", "Discount", "%", "%"),
        FeatureSpec("avg_order_value", "客单价", "Average order value", "元", "yuan"),
        FeatureSpec("inventory_level", "库存水位", "Inventory level", "%", "%"),
        FeatureSpec("competitor_price_index", "竞品价格指数", "Competitor price index"),
        FeatureSpec("budget_left", "剩余预算占比", "Budget left", "%", "%"),
        FeatureSpec("spend_pace", "消耗进度比", "Spend pace vs plan"),
        FeatureSpec("recent_ctr", "近期点击率", "Recent CTR", "%", "%"),
        FeatureSpec("recent_cvr", "近期转化率", "Recent CVR", "%", "%"),
        FeatureSpec("recent_value_per_click", "近期单次点击价值", "Recent value per click", "元", "yuan"),
        FeatureSpec("recent_cpc", "近期点击成本", "Recent cost per click", "元", "yuan"),
        FeatureSpec("recent_win_rate", "近期竞得率", "Recent win rate", "%", "%"),
        FeatureSpec("hist_ctr", "历史点击率", "Historical CTR", "%", "%"),
        FeatureSpec("hist_cvr", "历史转化率", "Historical CVR", "%", "%"),
        FeatureSpec("hist_value_per_click", "历史单次点击价值", "Historical value per click", "元", "yuan"),
    )


FEATURE_NAMES = (
    "hour", "minute_of_day", "campaign", "audience_package", "category", "package_kind",
    "promo_intensity", "traffic_index", "price", "discount", "avg_order_value", "inventory_level",
    "competitor_price_index", "budget_left", "spend_pace", "recent_ctr", "recent_cvr",
    "recent_value_per_click", "recent_cpc", "recent_win_rate", "hist_ctr", "hist_cvr",
    "hist_value_per_click",
)


@dataclass(frozen=True)
class History:
    """Per-slot averages from earlier days: what the company's logs say (S,) each."""

    ctr: np.ndarray
    cvr: np.ndarray
    value_per_click: np.ndarray
    cpc_ratio: float  # mean price paid / bid, from the logs

    def as_json(self) -> dict:
        return {"ctr": self.ctr.round(6).tolist(), "cvr": self.cvr.round(6).tolist(),
                "value_per_click": self.value_per_click.round(4).tolist(), "cpc_ratio": self.cpc_ratio}

    @classmethod
    def from_json(cls, doc: dict) -> History:
        return cls(np.asarray(doc["ctr"]), np.asarray(doc["cvr"]), np.asarray(doc["value_per_click"]),
                   float(doc["cpc_ratio"]))


class Observer:
    """The bidder's smoothed view of its own outcomes, updated as increments arrive."""

    def __init__(self, n_slots: int):
        z = np.zeros
        self.auctions, self.impressions, self.clicks = z(n_slots), z(n_slots), z(n_slots)
        self.spend, self.bid_clicks = z(n_slots), z(n_slots)
        self.orders, self.gmv = z(n_slots), z(n_slots)

    def observe(self, auctions: np.ndarray, slot: np.ndarray, impressions: np.ndarray, clicks: np.ndarray,
                spend: np.ndarray, bid: np.ndarray, orders: np.ndarray, gmv: np.ndarray) -> None:
        """One minute: decay, then add the increments that became known (slot-indexed arrays)."""
        n = len(self.auctions)
        for arr in (self.auctions, self.impressions, self.clicks, self.spend, self.bid_clicks,
                    self.orders, self.gmv):
            arr *= _DECAY
        self.auctions += auctions
        add = np.bincount
        clicks_now = add(slot, weights=clicks, minlength=n)
        self.impressions += add(slot, weights=impressions, minlength=n)
        self.clicks += clicks_now
        self.spend += add(slot, weights=spend, minlength=n)
        self.bid_clicks += clicks_now * bid
        self.orders += add(slot, weights=orders, minlength=n)
        self.gmv += add(slot, weights=gmv, minlength=n)


@dataclass(frozen=True)
class BidderView:
    """Everything except observations that the features need for one minute."""

    minute: int
    promo_intensity: float
    traffic_index: float
    price: np.ndarray            # (C,)
    discount: np.ndarray         # (C,)
    avg_order_value: np.ndarray  # (C,) the catalog's figure for the campaign, yuan
    inventory_level: np.ndarray  # (C,)
    competitor_price_index: np.ndarray  # (C,)
    budget_left: np.ndarray      # (C,) share of the daily budget not yet spent
    spend_pace: np.ndarray       # (C,) share spent / share of the day's traffic gone


class FeatureBuilder:
    """Builds the (S, F) float64 feature matrix, in FEATURE_NAMES order, one minute at a time."""

    def __init__(self, catalog: Catalog, history: History):
        C, P = len(catalog.campaigns), len(catalog.packages)
        self.C, self.P = C, P
        self.campaign_of = np.repeat(np.arange(C), P)
        self.history = history
        self.static = np.zeros((C * P, len(FEATURE_NAMES)))
        col = FEATURE_NAMES.index
        self.static[:, col("campaign")] = self.campaign_of
        self.static[:, col("audience_package")] = np.tile(np.arange(P), C)
        self.static[:, col("category")] = np.asarray(catalog.category_of)[self.campaign_of]
        kinds = np.array([p.kind == "value_tier" for p in PACKAGES[:P]], dtype=float)
        self.static[:, col("package_kind")] = np.tile(kinds, C)
        self.static[:, col("hist_ctr")] = history.ctr
        self.static[:, col("hist_cvr")] = history.cvr
        self.static[:, col("hist_value_per_click")] = history.value_per_click

    def build(self, view: BidderView, obs: Observer) -> np.ndarray:
        X = self.static.copy()
        col = FEATURE_NAMES.index
        h = self.history
        by = self.campaign_of
        X[:, col("hour")] = view.minute // 60
        X[:, col("minute_of_day")] = view.minute
        X[:, col("promo_intensity")] = view.promo_intensity
        X[:, col("traffic_index")] = view.traffic_index
        X[:, col("price")] = view.price[by]
        X[:, col("discount")] = view.discount[by]
        X[:, col("avg_order_value")] = view.avg_order_value[by]
        X[:, col("inventory_level")] = view.inventory_level[by]
        X[:, col("competitor_price_index")] = view.competitor_price_index[by]
        X[:, col("budget_left")] = view.budget_left[by]
        X[:, col("spend_pace")] = view.spend_pace[by]
        X[:, col("recent_ctr")] = (obs.clicks + h.ctr * _PRIOR_IMPRESSIONS) / (obs.impressions + _PRIOR_IMPRESSIONS)
        X[:, col("recent_cvr")] = (obs.orders + h.cvr * _PRIOR_CLICKS) / (obs.clicks + _PRIOR_CLICKS)
        X[:, col("recent_value_per_click")] = ((obs.gmv + h.value_per_click * _PRIOR_CLICKS)
                                              / (obs.clicks + _PRIOR_CLICKS))
        X[:, col("recent_cpc")] = obs.spend / np.maximum(obs.clicks, 1e-9) * (obs.clicks > 0.5)
        X[:, col("recent_win_rate")] = obs.impressions / np.maximum(obs.auctions, 1.0)
        return X

    def paid_ratio(self, obs: Observer) -> np.ndarray:
        """Estimated price paid / bid per slot, for the predicted ROI at a bid."""
        k = _PRIOR_CLICKS
        return (obs.spend + self.history.cpc_ratio * k) / (obs.bid_clicks + k)
