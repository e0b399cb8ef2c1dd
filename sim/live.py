"""The live promotion: the simulator as a real bidder, feeding the store on an accelerated clock.

Each bucket, `step_live` reads what the control core says (approved overrides,
guard states, the kill switch) from the store, steps the simulation with them,
and writes the served decisions (with the model's features, and SHAP values when
an `explain` hook is given), the outcome increments that became known and the
campaigns' stock (the safety-stock guard's feed). So an
approved override, a guard trip or the kill switch changes what happens next.
`api.sim_bidder.ApiBidder` plays the same bidder through the bidder HTTP API instead
(docs/INTEGRATION.md, section 9): policy polled, decisions and outcomes posted.

`run_live` paces the buckets by the promotion clock: bucket m is played once the
clock has passed its end. The default scenario is `demo`, whose "818"-style
incident (the GMV-only model switched on, conversion falling in eight campaigns)
starts five simulated minutes in, so the guard has something to catch at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pandas as pd
from sqlalchemy import Engine

from control import rows
from control.clock import AcceleratedClock, Clock
from control.config import Settings
from explain.store import register_model
from sim.catalog import BUCKET_SECONDS, DAY_START_TS
from sim.engine import BucketResult, Simulation
from sim.kit import Kit, prepare
from sim.scenario import load_scenario
from store import repo
from store import schema as s

ExplainHook = Callable[[BucketResult], "repo.ExplanationBatch | None"]


@dataclass
class LiveSummary:
    buckets: int = 0
    decisions: int = 0
    outcomes: int = 0
    last_bucket_ts: int | None = None
    seconds_per_bucket_max: float = 0.0


def register_catalog(engine: Engine, kit: Kit, models_dir: str) -> None:
    """Campaigns, audience packages and the bidders' model versions, so the panel can name them."""
    with engine.begin() as conn:
        repo.upsert_campaigns(conn, kit.catalog.campaigns)
        repo.upsert_audience_packages(conn, kit.catalog.packages)
        for variant, bidder in kit.bidders.items():
            a = bidder.artifact
            register_model(conn, a, f"{models_dir}/{a.version}", a.created_ts, active=variant == "roi")


def decisions_for_store(result: BucketResult):
    """The bucket's decisions with each row's feature vector as a {name: value} document."""
    names = list(result.feature_names)
    frame = result.decisions.copy()
    frame["features"] = [dict(zip(names, row, strict=True)) for row in result.features.tolist()]
    return frame


def step_live(engine: Engine, sim: Simulation, explain: ExplainHook | None = None) -> tuple[BucketResult, int, int]:
    """One bucket against the store: read the policy inputs, step, write. Returns (result, decisions, outcomes)."""
    with engine.connect() as conn:
        inputs = repo.load_policy_inputs(conn)
    result = sim.step(overrides=inputs.overrides, guards=inputs.guards, kill_switch=inputs.kill_switch)
    explanation = explain(result) if explain is not None else None
    with repo.write_transaction(engine) as conn:  # the bucket is stored whole or not at all
        ids = repo.insert_decisions(conn, decisions_for_store(result), received_ts=result.now_ts, source="sim",
                                    explanation=explanation)
        written = repo.insert_outcomes(conn, result.outcomes_frame, source="sim")
        repo.insert_feed(conn, s.stock_levels, rows.STOCK_FIELDS, result.stock_frame(sim.catalog.campaign_ids),
                         received_ts=result.now_ts, source="sim")
    return result, len(ids), written


class LiveBidder(Protocol):
    """How the live runner plays a bucket: in process against the store (StoreBidder), or as an
    external bidder through the bidder API (api.sim_bidder.ApiBidder)."""

    def step(self, sim: Simulation) -> tuple[BucketResult, int, int]:
        """One bucket: (its result, decisions stored, outcome increments stored)."""

    def drain(self, late: pd.DataFrame) -> int:
        """Store the outcome increments still pending after the day; returns how many were stored."""


@dataclass(frozen=True)
class StoreBidder:
    """The simulator as a bidder inside BidLens: policy inputs read from, rows written to the store."""

    engine: Engine
    explain: ExplainHook | None = None

    def step(self, sim: Simulation) -> tuple[BucketResult, int, int]:
        return step_live(self.engine, sim, self.explain)

    def drain(self, late: pd.DataFrame) -> int:
        return repo.write_outcomes(self.engine, late, source="sim")


def run_live(engine: Engine, settings: Settings, clock: Clock | None = None, speed: float | None = None,
             stop_event: threading.Event | None = None, *, scenario: str = "demo", seed: int = 1,
             explain: ExplainHook | None = None, max_buckets: int | None = None,
             on_bucket: Callable[[BucketResult], None] | None = None,
             bidder: LiveBidder | None = None) -> LiveSummary:
    """Play the promotion live until the day ends, `stop_event` is set or `max_buckets` are done.

    `clock` is the promotion clock (simulated epoch seconds; the demo anchors one in the
    store, see store.repo.store_clock); without one, a clock starting now at the
    promotion's 00:00 runs at `speed` simulated seconds per real second (default
    settings.demo_speed, 60 = one simulated minute per second). Each bucket is played by
    `bidder` (default: StoreBidder with `explain`, in process against the store).
    """
    speed = speed or settings.demo_speed
    stop_event = stop_event or threading.Event()
    clock = clock or AcceleratedClock(DAY_START_TS, time.time(), speed)
    the_scenario = load_scenario(scenario)
    kit = prepare(the_scenario, settings.data_dir)
    register_catalog(engine, kit, f"{settings.data_dir}/models")
    sim = Simulation(the_scenario, seed, kit.bidders, kit.history, pool=kit.pool)
    bidder = bidder or StoreBidder(engine, explain)
    summary = LiveSummary()
    while not sim.done and not stop_event.is_set() and (max_buckets is None or summary.buckets < max_buckets):
        due = DAY_START_TS + (sim.minute + 1) * BUCKET_SECONDS
        ahead = due - clock()
        if ahead > 0:  # wait for the clock, in real seconds, waking at once when stopped
            stop_event.wait(min(ahead / speed, 1.0))
            continue
        started = time.perf_counter()
        result, n_decisions, n_outcomes = bidder.step(sim)
        summary.buckets += 1
        summary.decisions += n_decisions
        summary.outcomes += n_outcomes
        summary.last_bucket_ts = result.bucket_ts
        summary.seconds_per_bucket_max = max(summary.seconds_per_bucket_max, time.perf_counter() - started)
        if on_bucket is not None:
            on_bucket(result)
    if sim.done:  # orders still in the lag pipeline after midnight
        late = sim.drain().rows(sim.slot_campaign, sim.slot_package)
        summary.outcomes += bidder.drain(late)
    return summary
