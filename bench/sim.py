"""Simulator benchmarks: a whole promotion day of model decisions, the live per-minute step,
and the replay of a logged auction file."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import func, insert, select

from bench.registry import BenchContext, BenchResult, benchmark
from control.config import Settings
from control.domain import Slot
from control.policy import KillSwitch, SlotPlan, resolve_slot
from sim.engine import Simulation
from sim.kit import prepare
from sim.live import decisions_for_store, register_catalog, step_live
from sim.replay import ReplayConfig, linear_bidder, replay
from sim.scenario import load_scenario
from store import schema as s
from store.engine import open_store


def _kit(ctx: BenchContext):
    scenario = load_scenario("normal")
    return scenario, prepare(scenario, Path(ctx.workdir) / "sim-data")


def _per_slot_loop(sim: Simulation, buckets: int) -> tuple[int, float]:
    """The same decisions one slot at a time (a predict per row, the bid formula, resolve_slot)."""
    bidder = sim.bidders["roi"]
    params = sim.scenario.bidder
    kill = KillSwitch()
    n = 0
    start = time.perf_counter()
    for _ in range(buckets):
        result = sim.step()  # for the features the bidder would see
        for i, row in enumerate(result.features):
            value = max(float(bidder.artifact.booster.predict(row.reshape(1, -1), num_threads=1)[0]), 0.0)
            bid = min(max(value / params.target_roi, params.min_bid), params.max_bid)
            slot = Slot(result.columns["campaign_id"][i], result.columns["audience_package"][i], result.bucket_ts)
            resolve_slot(SlotPlan(slot, bid, True, 0.0), [], None, kill, None, result.bucket_ts)
            n += 1
    return n, time.perf_counter() - start


@benchmark("sim_day")
def sim_day(ctx: BenchContext) -> list[BenchResult]:
    scenario, kit = _kit(ctx)
    minutes = 60 if ctx.quick else 1440
    sim = Simulation(scenario, 1, kit.bidders, kit.history, pool=kit.pool)
    start = time.perf_counter()
    for _ in range(minutes):
        sim.step()
    seconds = time.perf_counter() - start
    decisions = minutes * sim.S
    sample = Simulation(scenario, 1, kit.bidders, kit.history, pool=kit.pool)
    n_loop, loop_seconds = _per_slot_loop(sample, 2 if ctx.quick else 5)
    return [BenchResult(
        "sim_day_slot_decisions_per_s", decisions / seconds, "slot-decisions/s",
        "per-slot Python loop (row predict + bid formula + resolve_slot), same sample size extrapolated",
        n_loop / loop_seconds, True,
        notes=f"{sim.C} campaigns x {sim.P} packages x {minutes} buckets, model decisions and effective "
              f"policy, no SHAP: {seconds:.1f} s (target < 60 s for the whole day)",
        extra={"seconds": round(seconds, 2), "buckets": minutes, "slots": sim.S,
               "loop_seconds_per_day_extrapolated": round(decisions / (n_loop / loop_seconds), 1)})]


def _naive_write(engine, frame, received_ts: int) -> None:
    """Row by row through SQLAlchemy, the way a first version would write."""
    rows = frame.drop(columns=["rule_id", "override_ids", "guard_event_id", "canary_share", "auctions",
                               "impressions", "clicks", "spend", "orders", "gmv"]).to_dict("records")
    with engine.begin() as conn:
        for row in rows:
            conn.execute(insert(s.decisions).values(**row, source="sim", received_ts=received_ts))


@benchmark("sim_live_step")
def sim_live_step(ctx: BenchContext) -> list[BenchResult]:
    scenario, kit = _kit(ctx)
    demo = load_scenario("demo")
    buckets = 5 if ctx.quick else 30
    url = f"sqlite:///{Path(ctx.workdir) / 'sim-live.db'}"
    engine = open_store(url)
    register_catalog(engine, kit, str(Path(ctx.workdir) / "sim-data" / "models"))
    sim = Simulation(demo, 1, kit.bidders, kit.history, pool=kit.pool)
    times = []
    for _ in range(buckets):
        start = time.perf_counter()
        step_live(engine, sim)
        times.append(time.perf_counter() - start)
    naive_engine = open_store(f"sqlite:///{Path(ctx.workdir) / 'sim-live-naive.db'}")
    naive_sim = Simulation(demo, 1, kit.bidders, kit.history, pool=kit.pool)
    naive = []
    for _ in range(max(2, buckets // 5)):
        start = time.perf_counter()
        result = naive_sim.step()
        _naive_write(naive_engine, decisions_for_store(result), result.now_ts)
        naive.append(time.perf_counter() - start)
    p95 = float(np.percentile(times, 95)) * 1000
    budget_ms = 1000.0 * 60 / Settings().demo_speed
    return [BenchResult(
        "sim_live_step_p95", p95, "ms per simulated minute",
        "same step with row-by-row SQLAlchemy inserts", float(np.percentile(naive, 95)) * 1000, False,
        notes=f"read policy from the store, step 480 slots, write decisions (with features) and outcomes "
              f"to SQLite; the demo clock allows {budget_ms:.0f} ms per simulated minute",
        extra={"budget_ms": budget_ms, "median_ms": round(float(np.median(times)) * 1000, 1),
               "buckets": buckets})]


def _auction_log(path: Path, n: int) -> None:
    rng = np.random.default_rng(11)
    log = pd.DataFrame({"market_price": rng.lognormal(-0.5, 0.6, n).round(3),
                        "click": (rng.random(n) < 0.01).astype(np.int8),
                        "pctr": rng.uniform(0.002, 0.03, n)})
    log["value"] = log["click"] * rng.gamma(2.0, 20.0, n)
    log.to_parquet(path)


@benchmark("sim_replay")
def sim_replay(ctx: BenchContext) -> list[BenchResult]:
    n = 100_000 if ctx.quick else 3_000_000
    path = Path(ctx.workdir) / "auctions.parquet"
    _auction_log(path, n)
    config = ReplayConfig(budget_per_episode=500.0, episode_size=10_000, max_bid=5.0)
    start = time.perf_counter()
    result = replay(path, linear_bidder(0.8, None), config)
    seconds = time.perf_counter() - start
    # Baseline: the same rules one auction at a time in Python, on a sample.
    sample = pd.read_parquet(path).head(50_000)
    bids = linear_bidder(0.8, None)(sample)
    start = time.perf_counter()
    left: dict[int, float] = {}
    for i, (price, bid) in enumerate(zip(sample["market_price"].tolist(), bids.tolist(), strict=True)):
        episode = i // config.episode_size
        remaining = left.setdefault(episode, config.budget_per_episode)
        if min(bid, config.max_bid, remaining) >= price:
            left[episode] = remaining - price
    loop_rate = len(sample) / (time.perf_counter() - start)
    return [BenchResult(
        "sim_replay_rows_per_s", n / seconds, "auctions/s",
        "the same rules one auction at a time in Python (50k-row sample)", loop_rate, True,
        notes=f"{n:,} logged auctions from Parquet in {seconds:.2f} s, linear bidder, budget per episode "
              f"of 10,000 auctions, max bid",
        extra={"rows": n, "seconds": round(seconds, 3), "impressions": result.overall.impressions})]


@benchmark("sim_api_bucket")
def sim_api_bucket(ctx: BenchContext) -> list[BenchResult]:
    """A demo bucket through the bidder API (bidlens demo --api) beside the same bucket in process,
    both with every decision explained."""
    from api.app import store_app
    from api.client import BidLensClient
    from api.server import serve_in_thread
    from api.sim_bidder import ApiBidder
    from app.explanations import reference_formulas
    from app.launch import Launches
    from app.service import Control
    from app.tokens import Tokens
    from control.domain import Role
    from explain.store import explain_hook, record_bid_formula
    from sim.catalog import DAY_START_TS

    _, kit = _kit(ctx)
    demo = load_scenario("demo")
    buckets = 3 if ctx.quick else 30
    models = str(Path(ctx.workdir) / "sim-data" / "models")
    settings = Settings(data_dir=str(Path(ctx.workdir) / "sim-data"))

    def timed(step) -> list[float]:
        sim = Simulation(demo, 1, kit.bidders, kit.history, pool=kit.pool)
        times = []
        for _ in range(buckets):
            start = time.perf_counter()
            step(sim)
            times.append(time.perf_counter() - start)
        return times

    local = open_store(f"sqlite:///{Path(ctx.workdir) / 'sim-local.db'}")
    register_catalog(local, kit, models)
    formulas = reference_formulas(demo.bidder, kit.bidders)
    hook = explain_hook((b.artifact for b in kit.bidders.values()), formulas)
    in_process = timed(lambda sim: step_live(local, sim, hook))

    remote = open_store(f"sqlite:///{Path(ctx.workdir) / 'sim-api.db'}")
    register_catalog(remote, kit, models)
    with remote.begin() as conn:  # as `bidlens demo --api` records them: the API explains in bid units
        for version, formula in formulas.items():
            record_bid_formula(conn, version, formula, "bench", DAY_START_TS)
    clock = lambda: DAY_START_TS + 86_400  # noqa: E731 - the API's now: every bucket is in the past
    _, secret = Tokens(remote, clock).create(None, "bidder", "bench")
    # As `bidlens demo --api`: the simulated models were never launched through the gate.
    admin = Control(remote, clock, settings).add_user(None, "admin", "Admin", Role.ADMIN, "bench-admin-password")
    Launches(remote, clock, settings).set_gate(admin, False, "benchmark")
    with serve_in_thread(store_app(remote, clock, settings)) as url:
        bidder = ApiBidder(BidLensClient(url, secret, retries=0))
        through_api = timed(bidder.step)
    with remote.connect() as conn:
        explained = conn.execute(select(func.count()).select_from(s.explanations)).scalar()
    assert explained == buckets * 480, f"{explained} explanations for {buckets * 480} decisions"
    budget_ms = 1000.0 * 60 / settings.demo_speed
    return [BenchResult(
        "sim_api_bucket_p50", float(np.median(through_api)) * 1000, "ms per simulated minute",
        "the same bucket in process (store write + explain hook)", float(np.median(in_process)) * 1000, False,
        notes=f"poll GET /v1/policy, serve, POST 480 decisions with features (explained by the API) and the "
              f"outcomes; one uvicorn thread, SQLite; the demo clock allows {budget_ms:.0f} ms",
        extra={"p95_ms": round(float(np.percentile(through_api, 95)) * 1000, 1), "buckets": buckets,
               "budget_ms": budget_ms})]
