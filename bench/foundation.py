"""Foundation benchmarks: batch writes of decision rows, effective-policy resolution."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import insert

from bench.registry import BenchContext, BenchResult, benchmark
from control.domain import (
    GuardMode,
    GuardState,
    Override,
    OverrideField,
    OverrideScope,
    OverrideStatus,
    RuleAnswer,
    Slot,
)
from control.policy import KillSwitch, SlotPlan, resolve_policy, resolve_slot
from store import repo
from store import schema as s
from store.engine import open_store

PACKAGES = [f"pkg{i:02d}" for i in range(12)]


def synthetic_decisions(n: int, rng: np.random.Generator, campaigns: int = 1000) -> pd.DataFrame:
    """n decision rows in bucket order, as a bidder sends them."""
    bid = rng.gamma(2.0, 0.8, n)
    frame = pd.DataFrame({
        "campaign_id": pd.Series([f"c{i:05d}" for i in rng.integers(0, campaigns, n)], dtype=object),
        "audience_package": pd.Series([PACKAGES[i] for i in rng.integers(0, 12, n)], dtype=object),
        "bucket_ts": 1_786_982_400 + 60 * rng.integers(0, 1440, n),
        "model_version": "bench-v1",
        "model_bid": bid,
        "bid": bid,
        "budget_share": rng.uniform(0, 0.05, n),
        "audience_on": rng.uniform(size=n) > 0.1,
        "pred_ctr": rng.uniform(0.005, 0.05, n),
        "pred_cvr": rng.uniform(0.01, 0.08, n),
        "pred_value": bid * 2.2,
        "pred_roi": rng.uniform(1.2, 3.5, n),
        "pacing": rng.uniform(0.6, 1.0, n),
        "pool_bid": bid * 0.9,
        "pool_pred_roi": rng.uniform(1.8, 3.0, n),
        "decided_by": "model",
        "decided_reason": "model",
    })
    return frame.sort_values("bucket_ts", kind="stable", ignore_index=True)


def _write_rates(url: str, label: str, n: int, baseline_n: int, workdir: str) -> BenchResult:
    engine = open_store(url)
    frame = synthetic_decisions(n, np.random.default_rng(7))
    start = time.perf_counter()
    repo.write_decisions(engine, frame, received_ts=1_786_982_400)
    fast = n / (time.perf_counter() - start)
    records = frame.iloc[:baseline_n].assign(received_ts=1_786_982_400, source="bench").to_dict("records")
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(insert(s.decisions), records)
    slow = baseline_n / (time.perf_counter() - start)
    engine.dispose()
    return BenchResult(
        name=f"store.write_decisions.{label}", value=round(fast), unit="rows/s",
        baseline="SQLAlchemy Core executemany", baseline_value=round(slow), higher_is_better=True,
        notes=f"{n:,} rows x {len(frame.columns)} columns; baseline on {baseline_n:,} of them")


@benchmark("store.write_decisions.sqlite")
def bench_write_sqlite(ctx: BenchContext) -> list[BenchResult]:
    n = 20_000 if ctx.quick else 1_000_000
    url = f"sqlite:///{Path(ctx.workdir) / 'bench-write.db'}"
    return [_write_rates(url, "sqlite", n, n // 5, ctx.workdir)]


@benchmark("store.write_decisions.postgres")
def bench_write_postgres(ctx: BenchContext) -> list[BenchResult]:
    if ctx.postgres_url is None:
        return []
    n = 20_000 if ctx.quick else 1_000_000
    return [_write_rates(ctx.postgres_url, "postgres", n, n // 5, ctx.workdir)]


def policy_inputs(campaigns: int, rng: np.random.Generator):
    """A plan of campaigns x 12 packages, 2% of campaigns tripped, 1 override per 50 campaigns."""
    ids = [f"c{i:05d}" for i in range(campaigns)]
    plan = pd.DataFrame({
        "campaign_id": np.repeat(np.array(ids, dtype=object), 12),
        "audience_package": np.tile(np.array(PACKAGES, dtype=object), campaigns),
        "bucket_ts": 1_786_982_400,
        "bid": rng.gamma(2.0, 0.8, campaigns * 12),
        "audience_on": True,
        "budget_share": 1.0 / (campaigns * 12),
    })
    tripped = rng.choice(campaigns, campaigns // 50, replace=False)
    guards = {ids[i]: GuardState(ids[i], GuardMode.TRIPPED, event_id=int(i)) for i in tripped}
    pool = {(c, p): RuleAnswer(f"r-{p}", 1.0) for c in (ids[i] for i in tripped) for p in PACKAGES}
    overrides = [
        Override(k + 1, OverrideScope(ids[i], PACKAGES[k % 12] if k % 2 else None), OverrideField.BID,
                 1.5, "bench", "op", 0, 10**10, OverrideStatus.APPROVED, "mgr", k)
        for k, i in enumerate(rng.choice(campaigns, campaigns // 50, replace=False))]
    return plan, overrides, guards, pool


@benchmark("policy.resolve")
def bench_policy(ctx: BenchContext) -> list[BenchResult]:
    campaigns = 500 if ctx.quick else 10_000
    plan, overrides, guards, pool = policy_inputs(campaigns, np.random.default_rng(3))
    kill = KillSwitch()
    start = time.perf_counter()
    resolve_policy(plan, overrides, guards, kill, pool, 1)
    vectorised = time.perf_counter() - start

    by_campaign: dict[str, list[Override]] = {}
    for o in overrides:
        by_campaign.setdefault(o.scope.campaign_id, []).append(o)
    start = time.perf_counter()
    for c, p, b, bid, on, share in plan.itertuples(index=False):
        resolve_slot(SlotPlan(Slot(c, p, b), bid, on, share), by_campaign.get(c, ()), guards.get(c),
                     kill, pool.get((c, p)), 1)
    per_slot = time.perf_counter() - start
    return [BenchResult(
        name="policy.resolve", value=round(vectorised * 1000, 2), unit="ms",
        baseline="resolve_slot per slot (indexed)", baseline_value=round(per_slot * 1000, 2),
        higher_is_better=False, notes=f"{campaigns:,} campaigns x 12 audience packages")]
