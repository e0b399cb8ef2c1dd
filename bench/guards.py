"""Guard benchmarks: one tick's evaluation of many campaigns (observe + every guard's transition)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from bench.registry import BenchContext, BenchResult, benchmark
from guards.config import parse_guard_settings
from guards.machine import MachineState
from guards.observe import lookback_s, observations, observe
from guards.registry import GUARDS, evaluate

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
                             "last_known_ts": bucket + 60})
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
    lookback = lookback_s(config, 600)
    buckets = (config.maturity_s + config.realised_window_s) // 60 + 2
    frames = synthetic_inputs(n, buckets, np.random.default_rng(5))
    now = T0 + 60 * buckets
    states = {(g, c): MachineState(since_ts=T0) for g in GUARDS for c in frames[3]["campaign_id"]}

    start = time.perf_counter()
    obs_list = observations(observe(*frames, now, config, lookback))
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
