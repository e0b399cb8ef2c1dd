"""Training the reference bid models on simulated earlier days.

History: the simulated company ran three earlier days (an ordinary day, a
pre-heat day and last promotion's day) with its operators' hand-set bids (the
behaviour policy below, noisy around each slot's long-run value). From those
logs come (1) the per-slot history features, (2) the training rows: features
at the start of each 15-minute window and the window's GMV per click as the
label, weighted by clicks, and (3) the reference bids the manual rule pool's
multipliers scale.

Two variants are trained on the same rows: "roi" (label: GMV per click) and
"gmv" (label: GMV per click credited with assisted orders, x ASSIST_CREDIT) --
the "818" model, whose objective was GMV alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import lightgbm as lgb
import numpy as np

from explain.artifacts import ModelArtifact, save_artifact
from sim.bidder import HISTORY_FILE, Bidder, Plan, load_bidder
from sim.catalog import DAY_START_TS, MINUTES_PER_DAY, Catalog, build_catalog
from sim.engine import Simulation
from sim.features import FEATURE_NAMES, History, feature_specs
from sim.scenario import Scenario, WorldParams
from sim.world import World

HISTORY_DAYS = (0.0, 0.5, 1.0)   # promotion intensity of each earlier day, oldest first
WINDOW = 15                      # minutes per training row
ASSIST_CREDIT = 1.25             # the gmv variant's label credits assisted orders
MODEL_PARAMS = {
    "objective": "regression", "learning_rate": 0.1, "num_leaves": 31, "min_data_in_leaf": 40,
    "feature_fraction": 0.9, "lambda_l2": 1.0, "num_threads": 1, "deterministic": True,
    "force_row_wise": True, "seed": 7, "verbose": -1,  # one thread: 2 threads are ~8x slower here
}
NUM_ROUNDS = 120


class BehaviourBidder:
    """The operators' hand-set bids of earlier days: long-run value per click x a factor that
    differs by slot and hour (so the logs cover a range of bids)."""

    variant = "behaviour"
    version = "operators"

    def __init__(self, ref_value: np.ndarray, rng: np.random.Generator):
        self.ref_value = ref_value
        self.factor = rng.uniform(0.3, 0.75, (24, len(ref_value)))

    def decide(self, X: np.ndarray, *, params, pacing, paid_ratio, campaign_of, recent_ctr, recent_reach,
               avg_order_value) -> Plan:
        hour = int(X[0, FEATURE_NAMES.index("hour")])
        bid = np.clip(self.ref_value * self.factor[hour], params.min_bid, params.max_bid)
        on = np.ones(len(bid), dtype=bool)
        share = np.full(len(bid), 1.0 / np.bincount(campaign_of)[campaign_of])
        value = bid * 2
        return Plan(self.version, bid, share, on, recent_ctr, np.zeros(len(bid)), value,
                    np.full(len(bid), 2.0), pacing)


def prior_history(world: World) -> History:
    """Before any logs: the catalog's long-run rates (what the category managers would say)."""
    cat = world.catalog
    return History(cat.base_ctr.ravel(), cat.base_cvr.ravel(), world.ref_value.copy(), 0.8)


def _history_from(totals: dict, prior: History) -> History:
    """Per-slot rates from a day's logs, shrunk towards the prior where logs are thin."""
    k_imp, k_click = 500.0, 50.0
    ctr = (totals["clicks"] + prior.ctr * k_imp) / (totals["impressions"] + k_imp)
    cvr = (totals["orders"] + prior.cvr * k_click) / (totals["clicks"] + k_click)
    vpc = (totals["gmv"] + prior.value_per_click * k_click) / (totals["clicks"] + k_click)
    ratio = float(totals["spend"].sum() / max(totals["bid_clicks"].sum(), 1e-9))
    return History(ctr, cvr, vpc, ratio)


@dataclass(frozen=True)
class TrainingData:
    X: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    day: np.ndarray
    history: History
    window: tuple[int, int]


def simulate_history(catalog: Catalog, seed: int = 2026) -> TrainingData:
    """Run the earlier days with the behaviour bidder; collect training rows and history."""
    n_days = len(HISTORY_DAYS)
    rows_X, rows_y, rows_w, rows_day = [], [], [], []
    history = None
    for d, promo in enumerate(HISTORY_DAYS):
        scenario = Scenario(f"history-{d}", world=replace(WorldParams(), campaigns=len(catalog.campaigns),
                                                          catalog_seed=catalog.catalog_seed,
                                                          promo_intensity=promo))
        day_seed = seed * 100 + d  # keys the day's world and its draws (sim.crn)
        world = World(scenario, day_seed, catalog)
        if history is None:
            history = prior_history(world)
        bidder = BehaviourBidder(world.ref_value, np.random.default_rng([seed, d]))
        sim = Simulation(scenario, day_seed, {"roi": bidder}, history, world=world)
        S = world.S
        totals = {k: np.zeros(S) for k in ("impressions", "clicks", "orders", "gmv", "spend", "bid_clicks")}
        window_X = None
        window_clicks, window_gmv = np.zeros(S), np.zeros(S)
        for m in range(MINUTES_PER_DAY):
            r = sim.step()
            if m % WINDOW == 0:
                if window_X is not None:
                    keep = window_clicks > 0
                    rows_X.append(window_X[keep])
                    rows_y.append(window_gmv[keep] / window_clicks[keep])
                    rows_w.append(window_clicks[keep])
                    rows_day.append(np.full(int(keep.sum()), d))
                window_X = r.features
                window_clicks, window_gmv = np.zeros(S), np.zeros(S)
            dec = r.columns
            clicks = dec["clicks"]
            window_clicks += clicks
            window_gmv += dec["gmv"]
            for k in ("impressions", "clicks", "orders", "gmv", "spend"):
                totals[k] += dec[k]
            totals["bid_clicks"] += clicks * dec["bid"]
        history = _history_from(totals, prior_history(world))
    window = (DAY_START_TS - n_days * 86400, DAY_START_TS)
    return TrainingData(np.vstack(rows_X), np.concatenate(rows_y), np.concatenate(rows_w),
                        np.concatenate(rows_day), history, window)


def _metrics(booster: lgb.Booster, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict:
    pred = booster.predict(X, num_threads=1)
    err = pred - y
    wmean = float(np.average(y, weights=w))
    return {
        "rmse_yuan": round(float(np.sqrt(np.average(err ** 2, weights=w))), 4),
        "mae_yuan": round(float(np.average(np.abs(err), weights=w)), 4),
        "r2": round(float(1 - np.average(err ** 2, weights=w) / np.average((y - wmean) ** 2, weights=w)), 4),
        "bias_yuan": round(float(np.average(err, weights=w)), 4),
        "rows": int(len(y)),
    }


def model_version(variant: str, catalog: Catalog) -> str:
    return f"sim-{variant}-{catalog.fingerprint()}"


def train_models(catalog: Catalog, models_dir: str | Path, seed: int = 2026) -> dict[str, Bidder]:
    """Simulate history, train both variants, save them as artefacts; returns the bidders as loaded
    back from those artefacts, so the run that trains them plays exactly as every later run."""
    started = time.perf_counter()
    data = simulate_history(catalog, seed)
    specs = feature_specs(catalog)
    holdout = data.day == data.day.max()   # metrics on the latest day, trained on all
    rng = np.random.default_rng(seed)
    valid = holdout & (rng.random(len(data.y)) < 0.25)
    bidders = {}
    for variant, credit in (("roi", 1.0), ("gmv", ASSIST_CREDIT)):
        y = data.y * credit
        train_set = lgb.Dataset(data.X[~valid], y[~valid], weight=data.weight[~valid],
                                feature_name=list(FEATURE_NAMES), free_raw_data=False)
        booster = lgb.train(MODEL_PARAMS, train_set, num_boost_round=NUM_ROUNDS)
        metrics = _metrics(booster, data.X[valid], y[valid], data.weight[valid])
        metrics["train_seconds"] = round(time.perf_counter() - started, 2)
        metrics["label"] = "GMV per click" if credit == 1.0 else f"GMV per click incl. assisted orders x{credit}"
        artifact = ModelArtifact(version=model_version(variant, catalog), features=specs, booster=booster,
                                 variant=variant, training_window=data.window, metrics=metrics,
                                 created_ts=data.window[1])
        folder = save_artifact(artifact, models_dir)
        (folder / HISTORY_FILE).write_text(json.dumps(data.history.as_json()), encoding="utf-8")
        bidders[variant] = load_bidder(folder)
    return bidders


def ensure_models(catalog: Catalog, models_dir: str | Path) -> dict[str, Bidder]:
    """The catalog's trained bidders, training them first when they are not on disk yet."""
    folders = {v: Path(models_dir) / model_version(v, catalog) for v in ("roi", "gmv")}
    if all((f / HISTORY_FILE).exists() and (f / "model.txt").exists() for f in folders.values()):
        return {v: load_bidder(f) for v, f in folders.items()}
    return train_models(catalog, models_dir)


def default_catalog() -> Catalog:
    return build_catalog(WorldParams().campaigns, WorldParams().catalog_seed)


# --- the operators' default manual rule pool ---------------------------------------------------

RULE_POOL_FILE = Path(__file__).parent / "rule_pool_default.toml"
# The operators' overall bid level: calibrated so the pool alone makes ROI about 2.3 in "818".
POOL_LEVEL = 1.2
HOUR_BANDS = ((0, 2, "midnight rush"), (2, 8, "night"), (8, 12, "morning"), (12, 19, "afternoon"),
              (19, 22, "evening peak"), (22, 24, "final hours"))


def rule_pool_toml(data: TrainingData, catalog: Catalog, level: float) -> str:
    """The rules an operations team writes from last promotion's logs: per audience package and
    hour band, a multiplier of the slot's reference bid (historical value per click / target ROI)
    following how that package's value per click moved through the day; `level` is their
    overall caution. Plus a daily budget cap per campaign and a night-time switch-off of the
    weakest value tier."""
    col = FEATURE_NAMES.index
    last = data.day == data.day.max()
    X, y, w = data.X[last], data.y[last], data.weight[last]
    hour, pkg = X[:, col("hour")], X[:, col("audience_package")]
    lines = ["# Default manual rule pool (人工规则池) of the simulated company, written from last",
             "# promotion's logs (sim.train.rule_pool_toml). Fields: control.domain.Rule.", ""]

    def rule(**fields) -> None:
        lines.append("[[rules]]")
        for key, value in fields.items():
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
        lines.append("")

    rule(rule_id="base", action="multiplier", value=level, priority=0,
         note="reference bid (historical value per click / 2.0) everywhere else")
    for p, code in enumerate(catalog.package_codes):
        in_pkg = pkg == p
        day_value = np.average(y[in_pkg], weights=w[in_pkg])
        for start, end, label in HOUR_BANDS:
            sel = in_pkg & (hour >= start) & (hour < end)
            ratio = np.average(y[sel], weights=w[sel]) / day_value if w[sel].sum() > 0 else 1.0
            rule(rule_id=f"{code}-{start:02d}-{end:02d}", action="multiplier",
                 value=round(float(level * ratio), 2), priority=10, audience_package=code,
                 hour_from=start, hour_to=end, note=f"{label}: value per click x{ratio:.2f} of the day")
    rule(rule_id="lapsed-night-off", action="audience_off", value=0.0, priority=10,
         audience_package="lapsed_buyers", hour_from=2, hour_to=8, note="too few orders at night")
    for c in catalog.campaigns:
        rule(rule_id=f"cap-{c.campaign_id}", action="budget_cap", value=float(round(0.9 * c.daily_budget, -3)),
             priority=10, campaign_id=c.campaign_id, note="keep 10% of the budget in reserve")
    return "\n".join(lines)


def write_default_rule_pool(seed: int = 2026) -> str:
    """Regenerate sim/rule_pool_default.toml from the default catalog's history; returns the text."""
    catalog = default_catalog()
    text = rule_pool_toml(simulate_history(catalog, seed), catalog, POOL_LEVEL)
    RULE_POOL_FILE.write_text(text, encoding="utf-8")
    return text
