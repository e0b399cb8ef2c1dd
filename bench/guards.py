"""Guard benchmarks: one tick's evaluation of many campaigns (observe + every guard's transition), and the
worker's read of its inputs from the store."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import text

from bench.registry import BenchContext, BenchResult, benchmark
from control.domain import AudiencePackage, Campaign
from guards.config import parse_guard_settings
from guards.machine import MachineState
from guards.observe import load_inputs, lookback_s, observations, observe
from guards.registry import GUARDS, evaluate
from store import repo
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


def _filled_store(path: Path, campaigns: int, buckets: int, rng: np.random.Generator):
    """A SQLite store with `buckets` minutes of decisions and outcomes for campaigns x 12 packages."""
    engine = open_store(f"sqlite:///{path}")
    packages = [f"p{j:02d}" for j in range(12)]
    ids = [f"c{i:05d}" for i in range(campaigns)]
    with engine.begin() as conn:
        repo.upsert_campaigns(conn, [Campaign(c, c, "toys", 1000.0, 3000.0, 120.0, 0.3) for c in ids])
        repo.upsert_audience_packages(conn, [AudiencePackage(p, p, p) for p in packages])
    cid, pkg = np.repeat(ids, len(packages)), np.tile(packages, campaigns)
    n = len(cid)
    for b in range(buckets):
        bucket = T0 + 60 * b
        repo.write_decisions(engine, pd.DataFrame({
            "campaign_id": cid, "audience_package": pkg, "bucket_ts": bucket, "model_version": "bench",
            "bid": 1.0, "budget_share": 1 / 12, "audience_on": True, "pred_ctr": 0.01, "pred_cvr": 0.02,
            "pred_value": rng.uniform(1, 3, n), "pred_roi": rng.uniform(1.5, 3.0, n), "decided_by": "model",
            "features": [{"spend_pace": 1.0, "inventory_level": 0.8}] * n}), received_ts=bucket + 60, source="bench")
        repo.write_outcomes(engine, pd.DataFrame({
            "campaign_id": cid, "audience_package": pkg, "bucket_ts": bucket, "known_ts": bucket + 60,
            "impressions": 100, "clicks": rng.poisson(3, n), "spend": rng.uniform(1, 5, n),
            "orders": rng.poisson(0.1, n), "gmv": rng.uniform(0, 20, n)}), source="bench")
    return engine


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
    engine = _filled_store(Path(ctx.workdir) / "bench-guard-read.db", campaigns, buckets, np.random.default_rng(3))
    now = T0 + 60 * buckets

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
                              "outcomes; the worker's load_inputs with the value join")]
