"""Guard benchmarks: one tick's evaluation of many campaigns (observe + every guard's transition), and the
worker's read of its inputs from the store."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import text

from app.service import Control
from bench.panel_seed import PROMOTION_START, seed_store
from bench.registry import BenchContext, BenchResult, benchmark
from control.clock import ManualClock
from control.config import Settings
from guards.config import parse_guard_settings
from guards.machine import MachineState
from guards.observe import load_inputs, lookback_s, observations, observe
from guards.registry import GUARDS, evaluate, feeds_stale_after_s
from guards.roi import sequential_for
from store.engine import open_store

T0 = 1_786_982_400


def synthetic_inputs(campaigns: int, buckets: int, rng: np.random.Generator):
    """Aggregated frames as load_inputs returns them: one row per campaign x bucket."""
    ids = np.array([f"c{i:05d}" for i in range(campaigns)], dtype=object)
    cid = np.repeat(ids, buckets)
    bucket = np.tile(T0 + 60 * np.arange(buckets), campaigns)
    w = rng.uniform(0.5, 1.0, len(cid))
    decisions = pd.DataFrame({"campaign_id": cid, "bucket_ts": bucket, "w": w,
                              "roi_w": w * rng.uniform(1.5, 3.0, len(cid)), "pool_w": w * 2.3, "pool_n": w})
    outcomes = pd.DataFrame({"campaign_id": cid, "bucket_ts": bucket, "spend": rng.uniform(10, 50, len(cid)),
                             "orders": rng.poisson(0.5, len(cid)), "gmv": rng.uniform(20, 120, len(cid)),
                             "pred_gmv": rng.uniform(30, 150, len(cid)), "last_known_ts": bucket + 60})
    features = pd.DataFrame({"campaign_id": ids, "spend_pace": rng.uniform(0.8, 1.2, campaigns),
                             "inventory_level": rng.uniform(0.2, 1.0, campaigns)})
    camp = pd.DataFrame({"campaign_id": ids, "avg_order_value": rng.uniform(80, 500, campaigns)})
    return decisions, outcomes, features, camp


def observe_loop(decisions, outcomes, features, campaigns, now, config, lookback) -> pd.DataFrame:
    """The baseline: the same observation, campaign by campaign (a filter per campaign)."""
    rows = []
    for cid in campaigns["campaign_id"]:
        rows.append(observe(decisions[decisions["campaign_id"] == cid], outcomes[outcomes["campaign_id"] == cid],
                            features[features["campaign_id"] == cid], campaigns[campaigns["campaign_id"] == cid],
                            now, config, lookback))
    return pd.concat(rows)


@benchmark("guards.tick")
def bench_tick(ctx: BenchContext) -> list[BenchResult]:
    n = 500 if ctx.quick else 10_000
    baseline_n = 50 if ctx.quick else 300
    settings = parse_guard_settings()
    config = settings.observe
    # The worker's window: everything its rules read, the sequential evidence's two hours included.
    lookback = lookback_s(config, feeds_stale_after_s(settings, GUARDS), settings.defaults["roi"].cusum_window_s)
    buckets = lookback // 60
    frames = synthetic_inputs(n, buckets, np.random.default_rng(5))
    now = T0 + 60 * buckets
    states = {(g, c): MachineState(since_ts=T0) for g in GUARDS for c in frames[3]["campaign_id"]}

    start = time.perf_counter()
    sequential = sequential_for(settings, frames[3]["campaign_id"].tolist())
    obs_list = observations(observe(*frames, now, config, lookback, sequential))
    observed = time.perf_counter() - start
    for guard in GUARDS:
        cfg = settings.defaults[guard]
        for o in obs_list:
            states[(guard, o.campaign_id)], _ = evaluate(guard, states[(guard, o.campaign_id)], o, cfg, now)
    tick = time.perf_counter() - start

    small = synthetic_inputs(baseline_n, buckets, np.random.default_rng(5))
    start = time.perf_counter()
    observe_loop(*small, now, config, lookback)
    per_campaign_loop = (time.perf_counter() - start) / baseline_n
    vectorised = observed / n
    return [
        BenchResult("guards.tick", tick, "s", f"time budget of one tick (1 s) for {n} campaigns x "
                    f"{len(GUARDS)} guards", 1.0, False,
                    notes=f"observe {observed:.3f}s + transitions {tick - observed:.3f}s, {buckets} buckets each"),
        BenchResult("guards.observe_per_campaign", vectorised * 1e6, "us/campaign",
                    f"per-campaign loop ({baseline_n} campaigns)", per_campaign_loop * 1e6, False),
    ]


def _read_in_pandas(conn, now: int, lookback: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The baseline: the window's raw rows, summed and joined in pandas (no features)."""
    params = {"since": now - lookback, "now": now}
    d = pd.read_sql(text("SELECT campaign_id, audience_package, bucket_ts, budget_share, audience_on, pred_roi, "
                         "pool_pred_roi, pred_value FROM decisions WHERE bucket_ts >= :since AND bucket_ts <= :now"),
                    conn, params=params)
    o = pd.read_sql(text("SELECT campaign_id, audience_package, bucket_ts, known_ts, clicks, spend, orders, gmv "
                         "FROM outcomes WHERE bucket_ts >= :since AND known_ts <= :now"), conn, params=params)
    d["w"] = d["budget_share"] * d["audience_on"]
    d["roi_w"] = d["w"] * d["pred_roi"]
    decisions = d.groupby(["campaign_id", "bucket_ts"], as_index=False)[["w", "roi_w"]].sum()
    o = o.merge(d[["campaign_id", "audience_package", "bucket_ts", "pred_value"]], how="left",
                on=["campaign_id", "audience_package", "bucket_ts"])
    o["pred_gmv"] = o["clicks"] * o["pred_value"].fillna(0.0)
    outcomes = o.groupby(["campaign_id", "bucket_ts"], as_index=False).agg(
        spend=("spend", "sum"), orders=("orders", "sum"), gmv=("gmv", "sum"), pred_gmv=("pred_gmv", "sum"),
        last_known_ts=("known_ts", "max"))
    return decisions, outcomes


@benchmark("guards.store_read")
def bench_store_read(ctx: BenchContext) -> list[BenchResult]:
    campaigns = 50 if ctx.quick else 1000
    settings = parse_guard_settings()
    config = settings.observe
    lookback = lookback_s(config, settings.defaults["roi"].machine.stale_after_s)
    buckets = lookback // 60
    engine = open_store(f"sqlite:///{Path(ctx.workdir) / 'bench-guard-read.db'}")
    now = PROMOTION_START + 60 * buckets
    seed_store(Control(engine, ManualClock(now), Settings()), n_campaigns=campaigns, n_buckets=buckets, bucket_s=60,
               explain_buckets=0)

    def best_of_3(read) -> float:
        times = []
        for _ in range(3):
            with engine.connect() as conn:
                start = time.perf_counter()
                read(conn)
                times.append(time.perf_counter() - start)
        return min(times)

    names = {"spend_pace": "spend_pace", "inventory_level": "inventory_level"}
    sql = best_of_3(lambda conn: load_inputs(conn, now, config, lookback, names))
    in_pandas = best_of_3(lambda conn: _read_in_pandas(conn, now, lookback))
    engine.dispose()
    return [BenchResult("guards.store_read", sql, "s", "raw rows summed and joined in pandas (without features)",
                        in_pandas, False,
                        notes=f"SQLite, {campaigns} campaigns x 12 packages x {buckets} buckets of decisions and "
                              "outcomes (bench.panel_seed); the worker's load_inputs with the value join")]
