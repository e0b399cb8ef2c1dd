"""The simulated company: its audience packages, product categories and campaigns.

The catalog is fixed by a catalog seed (not the run seed), so the same campaigns
exist in every run and a model trained once serves every seed of that catalog.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from control.domain import AudiencePackage, Campaign

# 2026-08-18 00:00 Asia/Shanghai, the promotion day the simulator plays.
DAY_START_TS = 1786982400
MINUTES_PER_DAY = 1440
BUCKET_SECONDS = 60

PACKAGES: tuple[AudiencePackage, ...] = (
    AudiencePackage("parenting", "育儿", "Parenting"),
    AudiencePackage("moving", "搬家", "Moving home"),
    AudiencePackage("upgrade", "换新", "Upgrade"),
    AudiencePackage("gifting", "送礼", "Gifting"),
    AudiencePackage("health", "健康", "Health"),
    AudiencePackage("outdoor", "户外", "Outdoor"),
    AudiencePackage("beauty", "美妆", "Beauty"),
    AudiencePackage("stay_home", "宅家", "Stay-home"),
    AudiencePackage("pets", "宠物", "Pets"),
    AudiencePackage("high_value_repeat", "高价值复购", "High-value repeat buyers", "value_tier"),
    AudiencePackage("new_customers", "新客", "New customers", "value_tier"),
    AudiencePackage("lapsed_buyers", "沉睡唤醒", "Lapsed buyers", "value_tier"),
)
PACKAGE_CODES = tuple(p.code for p in PACKAGES)

# Value tiers change conversion and basket size; life scenes change affinity by category.
_TIER_CVR = {"high_value_repeat": 1.8, "new_customers": 0.7, "lapsed_buyers": 0.8}
_TIER_BASKET = {"high_value_repeat": 1.3, "new_customers": 0.9, "lapsed_buyers": 1.0}
_TIER_REACH = {"high_value_repeat": 0.6, "new_customers": 1.4, "lapsed_buyers": 0.9}


@dataclass(frozen=True)
class Category:
    code: str
    name_zh: str
    name_en: str
    price: tuple[float, float]    # item price range, yuan
    margin: tuple[float, float]   # gross margin range
    cvr: float                    # base conversion rate per click
    affinity: dict                # life-scene package -> conversion/reach lift


CATEGORIES: tuple[Category, ...] = (
    Category("mother_baby", "母婴", "Mother & baby", (120, 380), (0.40, 0.50), 0.035,
             {"parenting": 2.4, "gifting": 1.3, "health": 1.2, "moving": 1.1}),
    Category("appliance", "家电", "Home appliances", (600, 2800), (0.25, 0.33), 0.012,
             {"moving": 2.2, "upgrade": 2.4, "stay_home": 1.3, "gifting": 1.1}),
    Category("beauty", "美妆", "Beauty", (110, 480), (0.60, 0.72), 0.04,
             {"beauty": 2.5, "gifting": 1.7, "health": 1.1}),
    Category("food", "食品", "Food & fresh", (50, 180), (0.35, 0.45), 0.055,
             {"stay_home": 1.9, "health": 1.5, "gifting": 1.3, "parenting": 1.1}),
    Category("outdoor", "户外", "Outdoor & sports", (180, 900), (0.45, 0.55), 0.025,
             {"outdoor": 2.4, "health": 1.5, "gifting": 1.1}),
    Category("pets", "宠物", "Pet supplies", (70, 320), (0.42, 0.52), 0.045,
             {"pets": 2.6, "stay_home": 1.3, "moving": 1.1}),
)


@dataclass(frozen=True)
class Catalog:
    campaigns: tuple[Campaign, ...]
    packages: tuple[AudiencePackage, ...]
    category_of: tuple[int, ...]     # campaign index -> category index
    list_price: np.ndarray           # (C,) yuan, before promotion discounts
    base_discount: np.ndarray        # (C,) the campaign's promotion discount share
    basket: np.ndarray               # (C, P) items per order
    base_ctr: np.ndarray             # (C, P)
    base_cvr: np.ndarray             # (C, P)
    reach: np.ndarray                # (C, P) relative traffic weight
    market_ratio: np.ndarray         # (C, P) competitors' median bid / value per click
    catalog_seed: int

    @property
    def campaign_ids(self) -> tuple[str, ...]:
        return tuple(c.campaign_id for c in self.campaigns)

    @property
    def package_codes(self) -> tuple[str, ...]:
        return tuple(p.code for p in self.packages)

    @property
    def n_slots(self) -> int:
        return len(self.campaigns) * len(self.packages)

    def fingerprint(self) -> str:
        """Short hash naming this catalog, so models are trained per catalog."""
        doc = {"seed": self.catalog_seed, "campaigns": [c.campaign_id for c in self.campaigns],
               "packages": list(self.package_codes)}
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:8]


def campaign_ids(n: int) -> tuple[str, ...]:
    return tuple(f"c{i + 1:02d}" for i in range(n))


def build_catalog(n_campaigns: int = 40, catalog_seed: int = 818) -> Catalog:
    rng = np.random.default_rng(catalog_seed)
    P = len(PACKAGES)
    ids = campaign_ids(n_campaigns)
    campaigns, category_of = [], []
    list_price = np.empty(n_campaigns)
    discount = np.empty(n_campaigns)
    basket = np.empty((n_campaigns, P))
    ctr = np.empty((n_campaigns, P))
    cvr = np.empty((n_campaigns, P))
    reach = np.empty((n_campaigns, P))
    for i, cid in enumerate(ids):
        k = i % len(CATEGORIES)
        cat = CATEGORIES[k]
        category_of.append(k)
        price = float(np.exp(rng.uniform(np.log(cat.price[0]), np.log(cat.price[1]))))
        list_price[i] = price
        discount[i] = rng.uniform(0.08, 0.25)
        margin = float(rng.uniform(*cat.margin))
        items = rng.uniform(1.0, 1.6)
        aff = np.array([cat.affinity.get(p.code, 0.8) if p.kind == "life_scene" else 1.0 for p in PACKAGES])
        tier_cvr = np.array([_TIER_CVR.get(p.code, 1.0) for p in PACKAGES])
        tier_basket = np.array([_TIER_BASKET.get(p.code, 1.0) for p in PACKAGES])
        tier_reach = np.array([_TIER_REACH.get(p.code, 1.0) for p in PACKAGES])
        basket[i] = items * tier_basket
        ctr[i] = rng.uniform(0.018, 0.045) * np.sqrt(aff) * rng.lognormal(0, 0.15, P)
        cvr[i] = cat.cvr * aff * tier_cvr * rng.lognormal(0, 0.25, P)
        reach[i] = tier_reach * np.sqrt(aff) * rng.lognormal(0, 0.3, P)
        # Budgets at the scale of a large merchant's promotion day: 0.3 to 1.5 million yuan.
        budget = float(np.round(rng.uniform(300_000, 1_500_000), -3))
        campaigns.append(Campaign(
            campaign_id=cid, name=f"{cat.name_zh} {cat.name_en} #{i // len(CATEGORIES) + 1}",
            category=cat.code, daily_budget=budget, budget_cap=budget * 2,
            avg_order_value=round(price * (1 - discount[i]) * items, 2), gross_margin=round(margin, 3)))
    market_ratio = rng.uniform(0.32, 0.5, (n_campaigns, P))
    return Catalog(tuple(campaigns), PACKAGES, tuple(category_of), list_price, discount, basket,
                   ctr, cvr, reach, market_ratio, catalog_seed)
