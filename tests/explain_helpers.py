"""Small synthetic bid models for the explanation tests (fast, deterministic)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from explain.artifacts import FeatureSpec, ModelArtifact

FEATURES = (
    FeatureSpec("cvr_1h", "近 1 小时转化率", "conversion rate, last hour", "%", "%"),
    FeatureSpec("ctr_1h", "近 1 小时点击率", "click-through rate, last hour", "%", "%"),
    FeatureSpec("competitor_price_index", "竞品价格指数", "competitor price index"),
    FeatureSpec("hour", "小时", "hour of day", "时", "h"),
    FeatureSpec("stock_days", "库存可售天数", "days of stock", "天", "days"),
    FeatureSpec("audience", "人群包", "audience package",
                categorical_levels=("育儿", "搬家", "换新", "送礼", "健康")),
    FeatureSpec("budget_left", "剩余预算占比", "budget left", "%", "%"),
    FeatureSpec("promo_flag", "大促标记", "promotion flag"),
)
NAMES = [f.name for f in FEATURES]


def feature_rows(n: int, rng: np.random.Generator, *, missing: bool = True) -> np.ndarray:
    X = np.column_stack([
        rng.gamma(2.0, 1.5, n),            # cvr %
        rng.gamma(2.0, 1.0, n),            # ctr %
        rng.normal(1.0, 0.2, n),           # competitor price index
        rng.integers(0, 24, n).astype(float),
        rng.exponential(10.0, n),
        rng.integers(0, 5, n).astype(float),
        rng.uniform(0, 100, n),
        (rng.random(n) < 0.3).astype(float),
    ])
    if missing:
        X[rng.random(n) < 0.05, 4] = np.nan   # stock unknown
        X[rng.random(n) < 0.10, 6] = 0.0      # budget exhausted
    return X


def value_per_click(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    y = (0.8 * X[:, 0] + 0.3 * X[:, 1] - 2.0 * (X[:, 2] - 1.0) + 0.4 * (X[:, 5] == 3)
         + 0.02 * np.nan_to_num(X[:, 4], nan=5.0) + 0.5 * X[:, 7] + 0.05 * np.sin(X[:, 3] / 24 * 6.28))
    return np.maximum(y + rng.normal(0, 0.2, len(X)), 0.05)


def train_booster(seed: int = 0, n: int = 3000, trees: int = 60, leaves: int = 15, **params) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    X = feature_rows(n, rng)
    y = value_per_click(X, rng)
    dataset = lgb.Dataset(X, y, feature_name=NAMES, free_raw_data=False,
                          categorical_feature=params.pop("categorical_feature", "auto"))
    base = {"num_leaves": leaves, "learning_rate": 0.1, "verbose": -1, "num_threads": 1, "seed": seed,
            "deterministic": True}
    return lgb.train({**base, **params}, dataset, num_boost_round=trees)


def artifact(version: str = "v1", seed: int = 0, **params) -> ModelArtifact:
    return ModelArtifact(version=version, features=FEATURES, booster=train_booster(seed, **params),
                         training_window=(0, 86_400), metrics={"rmse": 0.2})
