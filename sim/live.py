"""The live promotion: the simulator as a real bidder, feeding the store on an accelerated clock.

Each bucket, `step_live` reads what the control core says (approved overrides,
guard states, the kill switch) from the store, steps the simulation with them,
and writes the served decisions (with the model's features, and SHAP values when
an `explain` hook is given) and the outcome increments that became known. So an
approved override, a guard trip or the kill switch changes what happens next.
`ApiBidder` plays the same bidder through the bidder HTTP API instead (docs/INTEGRATION.md,
section 9): policy polled, decisions and outcomes posted.

`run_live` paces the buckets by the promotion clock: bucket m is played once the
clock has passed its end. The default scenario is `demo`, whose "818"-style
incident (the GMV-only model switched on, conversion falling in eight campaigns)
starts five simulated minutes in, so the guard has something to catch at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, insert

from api.client import BidLensClient, serve_policy
from control.clock import AcceleratedClock, Clock
from control.config import Settings
from control.domain import OverrideStatus
from control.policy import KillSwitch
from sim.catalog import BUCKET_SECONDS, DAY_START_TS
from sim.engine import BucketResult, Simulation
from sim.kit import Kit, prepare
from sim.scenario import load_scenario
from store import repo
from store import schema as s

ExplainHook = Callable[[BucketResult], "repo.ExplanationBatch | None"]
log = logging.getLogger("sim.live")


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
            conn.execute(delete(s.models).where(s.models.c.model_version == a.version))
            conn.execute(insert(s.models).values(
                model_version=a.version, path=f"{models_dir}/{a.version}", created_ts=a.created_ts,
                active=variant == "roi", meta=a.meta()))


def read_policy_inputs(engine: Engine) -> tuple[list, dict, KillSwitch]:
    """(approved overrides, guard states, kill switch) as the store holds them now."""
    with engine.connect() as conn:
        overrides = repo.list_overrides(conn, [OverrideStatus.APPROVED])
        return overrides, repo.load_guard_states(conn), repo.load_kill_switch(conn)


def decisions_for_store(result: BucketResult):
    """The bucket's decisions with each row's feature vector as a {name: value} document."""
    names = list(result.feature_names)
    frame = result.decisions.copy()
    frame["features"] = [dict(zip(names, row, strict=True)) for row in result.features.tolist()]
    return frame


def step_live(engine: Engine, sim: Simulation, explain: ExplainHook | None = None) -> tuple[BucketResult, int, int]:
    """One bucket against the store: read the policy inputs, step, write. Returns (result, decisions, outcomes)."""
    overrides, guards, kill = read_policy_inputs(engine)
    result = sim.step(overrides=overrides, guards=guards, kill_switch=kill)
    explanation = explain(result) if explain is not None else None
    ids = repo.write_decisions(engine, decisions_for_store(result), received_ts=result.now_ts, source="sim",
                               explanation=explanation)
    written = repo.write_outcomes(engine, result.outcomes_frame, source="sim")
    return result, len(ids), written


# What a bidder sends per decision (docs/INTEGRATION.md); optional ones go as null, never NaN.
API_DECISION_FIELDS = ("campaign_id", "audience_package", "bucket_ts", "model_version", "bid", "budget_share",
                       "audience_on", "pred_ctr", "pred_cvr", "pred_value", "pred_roi", "model_bid", "pacing",
                       "decided_by", "decided_reason")
API_OPTIONAL_FIELDS = ("pool_bid", "pool_pred_roi")


def policy_arrays(served: pd.DataFrame) -> dict[str, np.ndarray]:
    """api.client.serve_policy's frame as the simulator's served policy (sim.engine._POLICY_USED)."""
    ids = np.empty(len(served), dtype=object)
    ids[:] = list(served["override_ids"])
    return {"bid": served["bid"].to_numpy(np.float64), "audience_on": served["audience_on"].to_numpy(bool),
            "canary_share": served["canary_share"].to_numpy(np.float64),
            "decided_by": served["decided_by"].to_numpy(object), "reason": served["decided_reason"].to_numpy(object),
            "rule_id": served["rule_id"].to_numpy(object), "override_ids": ids,
            "guard_event_id": served["guard_event_id"].to_numpy(object),
            "daily_budget": served["daily_budget"].to_numpy(np.float64)}


def decisions_for_api(result: BucketResult) -> list[dict]:
    """The bucket's served decisions as the bidder API's rows, with the model's features."""
    frame = result.decisions
    rows = frame[list(API_DECISION_FIELDS)].to_dict("records")
    optional = {c: frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in API_OPTIONAL_FIELDS}
    names = list(result.feature_names)
    for i, (row, values) in enumerate(zip(rows, result.features.tolist(), strict=True)):
        row.update({c: optional[c][i] for c in API_OPTIONAL_FIELDS})
        row["features"] = dict(zip(names, values, strict=True))
    return rows


class ApiBidder:
    """The simulator as an external bidder: the policy from GET /v1/policy, decisions and
    outcomes by POST (api.client), nothing read from or written to the store directly.
    The API explains the decisions at ingest with the registered model (explain_registered)."""

    def __init__(self, client: BidLensClient):
        self.client = client

    def step(self, sim: Simulation) -> tuple[BucketResult, int, int]:
        snapshot = self.client.policy(only_changes=False)  # 304 when unchanged: the cached one
        result = sim.step(policy_for=lambda plan: policy_arrays(serve_policy(plan, snapshot)))
        key = f"sim-{result.model_version}-{result.bucket_ts}"  # a re-sent bucket is stored once
        sent = self.client.send_decisions(decisions_for_api(result), key_prefix=f"{key}-d")
        outcomes = self.client.send_outcomes(result.outcomes_frame, key_prefix=f"{key}-o")
        if sent.refused or outcomes.refused:
            log.warning("bucket %s: the API refused %d decisions and %d outcomes: %s", result.bucket_ts,
                        sent.refused, outcomes.refused, (sent.refusals + outcomes.refusals)[:3])
        return result, sent.accepted, outcomes.accepted


def run_live(engine: Engine, settings: Settings, clock: Clock | None = None, speed: float | None = None,
             stop_event: threading.Event | None = None, *, scenario: str = "demo", seed: int = 1,
             explain: ExplainHook | None = None, max_buckets: int | None = None,
             on_bucket: Callable[[BucketResult], None] | None = None,
             api_bidder: ApiBidder | None = None) -> LiveSummary:
    """Play the promotion live until the day ends, `stop_event` is set or `max_buckets` are done.

    `clock` is the promotion clock (simulated epoch seconds; the demo anchors one in the
    store, see store.repo.store_clock); without one, a clock starting now at the
    promotion's 00:00 runs at `speed` simulated seconds per real second (default
    settings.demo_speed, 60 = one simulated minute per second). With `api_bidder` each
    bucket goes through the bidder API instead of the store (`explain` is then the API's).
    """
    speed = speed or settings.demo_speed
    stop_event = stop_event or threading.Event()
    clock = clock or AcceleratedClock(DAY_START_TS, time.time(), speed)
    the_scenario = load_scenario(scenario)
    kit = prepare(the_scenario, settings.data_dir)
    register_catalog(engine, kit, f"{settings.data_dir}/models")
    sim = Simulation(the_scenario, seed, kit.bidders, kit.history, pool=kit.pool)
    summary = LiveSummary()
    while not sim.done and not stop_event.is_set() and (max_buckets is None or summary.buckets < max_buckets):
        due = DAY_START_TS + (sim.minute + 1) * BUCKET_SECONDS
        ahead = due - clock()
        if ahead > 0:  # wait for the clock, in real seconds, waking at once when stopped
            stop_event.wait(min(ahead / speed, 1.0))
            continue
        started = time.perf_counter()
        result, n_decisions, n_outcomes = (api_bidder.step(sim) if api_bidder is not None
                                           else step_live(engine, sim, explain))
        summary.buckets += 1
        summary.decisions += n_decisions
        summary.outcomes += n_outcomes
        summary.last_bucket_ts = result.bucket_ts
        summary.seconds_per_bucket_max = max(summary.seconds_per_bucket_max, time.perf_counter() - started)
        if on_bucket is not None:
            on_bucket(result)
    if sim.done:  # orders still in the lag pipeline after midnight
        late = sim.drain().rows(sim.slot_campaign, sim.slot_package)
        summary.outcomes += (api_bidder.client.send_outcomes(late, key_prefix="sim-drain").accepted
                             if api_bidder is not None else repo.write_outcomes(engine, late, source="sim"))
    return summary
