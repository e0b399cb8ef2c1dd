"""The stress test: the same promotion, same seed, played by each arm; a report per arm.

Arms:
- `model`: the model alone (the scenario's variant, switched by its events), no guard;
- `rule_pool`: the manual rule pool alone (a global kill switch puts every slot on it);
- `guarded`: the model watched by a guard. The guard is not part of sim/: the caller
  passes a *guard hook*, any object with

      guard_states(now_ts: int, last: BucketResult | None) -> Mapping[str, GuardState]

  called before every bucket with the previous bucket's result (its decisions with
  pred_roi, its features, and the outcome increments that became known -- what a
  guard worker would read from the store). Its answer is passed to that bucket's
  effective policy. app.stress_guard supplies it; without one the arm is not run.

Trips are read from the hook's answers: a campaign entering TRIPPED. Each is judged
against the campaign's TRUE ROI over the trailing hour (model arm, same seed, GMV as it
will eventually be known): its below-floor episodes are the runs of minutes where that
ROI is below the floor. A trip detects the episode under way at the trip, else the one
that ended most recently (at most TRIP_SLACK minutes before), else the one starting
soonest after it (at most TRIP_SLACK minutes later: an early trip); its detection delay is
the trip's minute minus that episode's first minute. A trip near no episode is a false
trip -- also in a campaign that crossed the floor at some other hour of the day. A return
to TRIPPED from PROBATION is a failed probation, reported apart: the canary must prove
floor + hysteresis, so failing while the model is just above the floor is the design.
loss_avoided = guarded profit - model profit, same seed: exact, not estimated (every draw is
keyed by seed, purpose, minute and slot, sim.crn: the arms differ only where their policies do).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from control.domain import GuardMode, GuardState
from control.policy import KillSwitch
from guards.rule_pool import RulePool
from sim.catalog import BUCKET_SECONDS, DAY_START_TS, MINUTES_PER_DAY, build_catalog
from sim.engine import NO_KILL, BucketResult, Simulation
from sim.features import History
from sim.scenario import Scenario

ARMS = ("model", "rule_pool", "guarded")
TRUE_ROI_WINDOW = 60  # minutes of the trailing window the true ROI is measured over
TRIP_SLACK = 60       # minutes between a trip and a below-floor episode for the trip to count as its detection


class GuardHook(Protocol):
    def guard_states(self, now_ts: int, last: BucketResult | None) -> Mapping[str, GuardState]: ...


@dataclass(frozen=True)
class ArmRun:
    """Per campaign and minute, what an arm spent and the GMV its clicks brought."""

    spend: np.ndarray    # (C, 1440) yuan
    gmv: np.ndarray      # (C, 1440) yuan
    clicks: np.ndarray   # (C,)
    orders: np.ndarray   # (C,)
    # (campaign_id, minute, kind) the hook answered TRIPPED: kind "trip" from the model,
    # "probation_failed" back from a probation that failed
    trips: list[tuple[str, int, str]]


def run_arm(scenario: Scenario, seed: int, bidders: Mapping[str, object], history: History,
            pool: RulePool, *, kill_switch: KillSwitch = NO_KILL, guard_hook: GuardHook | None = None,
            on_bucket: Callable[[BucketResult], None] | None = None, minutes: int = MINUTES_PER_DAY) -> ArmRun:
    """Play `minutes` buckets of the day (all of it by default) for one arm."""
    sim = Simulation(scenario, seed, bidders, history, pool=pool)
    C = sim.C
    spend, gmv = np.zeros((C, MINUTES_PER_DAY)), np.zeros((C, MINUTES_PER_DAY))
    clicks, orders = np.zeros(C), np.zeros(C)
    trips: list[tuple[str, int, str]] = []
    modes: dict[str, GuardMode] = {}
    last = None
    while sim.minute < minutes:
        guards = {}
        if guard_hook is not None:
            guards = dict(guard_hook.guard_states(DAY_START_TS + sim.minute * BUCKET_SECONDS, last))
            for c in sorted(guards):
                before, mode = modes.get(c), guards[c].mode
                if mode is GuardMode.TRIPPED and before is not GuardMode.TRIPPED:
                    trips.append((c, sim.minute, "probation_failed" if before is GuardMode.PROBATION else "trip"))
                modes[c] = mode
        last = sim.step(guards=guards, kill_switch=kill_switch)
        spend[:, last.minute] = last.campaign_spend
        gmv[:, last.minute] = last.campaign_gmv
        clicks += np.bincount(sim.campaign_of, weights=last.columns["clicks"], minlength=C)
        orders += np.bincount(sim.campaign_of, weights=last.columns["orders"], minlength=C)
        if on_bucket is not None:
            on_bucket(last)
    return ArmRun(spend, gmv, clicks, orders, trips)


def _money(x: float) -> float:
    return round(float(x), 2)


def _ratio(gmv: float, spend: float) -> float | None:
    return round(gmv / spend, 4) if spend > 0 else None


def arm_summary(run: ArmRun, margin: np.ndarray, campaign_ids: tuple[str, ...], floor: float) -> dict:
    spend_c, gmv_c = run.spend.sum(axis=1), run.gmv.sum(axis=1)
    profit_c = gmv_c * margin - spend_c
    by_hour = []
    hourly_spend = run.spend.reshape(len(margin), 24, 60).sum(axis=2)
    hourly_gmv = run.gmv.reshape(len(margin), 24, 60).sum(axis=2)
    for h in range(24):
        s, g = hourly_spend[:, h], hourly_gmv[:, h]
        by_hour.append({"hour": h, "spend": _money(s.sum()), "gmv": _money(g.sum()),
                        "roi": _ratio(g.sum(), s.sum()), "profit": _money((g * margin - s).sum())})
    by_campaign = [{"campaign": cid, "spend": _money(spend_c[i]), "gmv": _money(gmv_c[i]),
                    "roi": _ratio(gmv_c[i], spend_c[i]), "profit": _money(profit_c[i]),
                    "clicks": int(run.clicks[i]), "orders": int(run.orders[i])}
                   for i, cid in enumerate(campaign_ids)]
    roi_c = np.where(spend_c > 0, gmv_c / np.maximum(spend_c, 1e-9), np.inf)
    return {
        "spend": _money(spend_c.sum()), "gmv": _money(gmv_c.sum()), "roi": _ratio(gmv_c.sum(), spend_c.sum()),
        "profit": _money(profit_c.sum()), "clicks": int(run.clicks.sum()), "orders": int(run.orders.sum()),
        "campaigns_below_floor": int((roi_c < floor).sum()),
        "by_hour": by_hour, "by_campaign": by_campaign,
    }


def below_floor(run: ArmRun, floor: float, window: int = TRUE_ROI_WINDOW) -> np.ndarray:
    """(C, minutes) whether each campaign's true trailing-window ROI was below the floor."""
    def trailing(x: np.ndarray) -> np.ndarray:
        c = np.cumsum(x, axis=1)
        c[:, window:] = c[:, window:] - c[:, :-window]
        return c
    spend, gmv = trailing(run.spend), trailing(run.gmv)
    return (spend > 0) & (gmv < floor * spend)


def detection_delay(below: np.ndarray, minute: int, slack: int = TRIP_SLACK) -> int | None:
    """Minutes from the start of the below-floor episode a trip at `minute` detected (negative: it
    tripped before the episode began); None when no episode is within `slack` (a false trip)."""
    padded = np.concatenate([[False], below, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1) - 1   # last minute of each episode
    before = starts <= minute
    if before.any():
        i = int(np.flatnonzero(before)[-1])
        if ends[i] >= minute - slack:
            return minute - int(starts[i])
    after = starts[~before]
    if len(after) and after[0] <= minute + slack:
        return minute - int(after[0])
    return None


def run_stress(scenario: Scenario, seed: int, bidders: Mapping[str, object], history: History, pool: RulePool,
               *, guard_hook: GuardHook | None = None, arms: Sequence[str] = ("model", "rule_pool"),
               minutes: int = MINUTES_PER_DAY) -> dict:
    """The stress report (the JSON contract in docs/SIMULATOR.md) for the baseline `arms` asked
    for, plus the guarded arm when a guard hook is given. `minutes` < 1440 plays only the
    start of the day (for quick checks; the shipped commands always play it all)."""
    unknown = set(arms) - {"model", "rule_pool"}
    if unknown:
        raise ValueError(f"unknown arm(s) {sorted(unknown)}: the baselines are model and rule_pool")
    kill = {"model": NO_KILL, "rule_pool": KillSwitch(global_on=True)}
    runs: dict[str, ArmRun] = {name: run_arm(scenario, seed, bidders, history, pool, kill_switch=kill[name],
                                             minutes=minutes)
                               for name in ("model", "rule_pool") if name in arms}
    if guard_hook is not None:
        runs["guarded"] = run_arm(scenario, seed, bidders, history, pool, guard_hook=guard_hook,
                                  minutes=minutes)
    campaigns = build_catalog(scenario.world.campaigns, scenario.world.catalog_seed).campaigns
    ids = tuple(c.campaign_id for c in campaigns)
    margin = np.array([c.gross_margin for c in campaigns])
    floor = scenario.bidder.floor_roi
    report = {
        "scenario": scenario.name, "seed": seed, "floor_roi": floor, "minutes": minutes,
        "arms": {name: arm_summary(run, margin, ids, floor) for name, run in runs.items()},
        "trips": [], "false_trips": 0, "probation_failures": 0, "loss_avoided": None,
    }
    if "guarded" in runs:
        reference = runs.get("model") or run_arm(scenario, seed, bidders, history, pool, minutes=minutes)
        below = below_floor(reference, floor)
        index = {cid: i for i, cid in enumerate(ids)}
        trips = [{"campaign": cid, "at_minute": minute, "kind": kind,
                  "detection_delay_min": detection_delay(below[index[cid]], minute)}
                 for cid, minute, kind in runs["guarded"].trips]
        report["trips"] = trips
        report["false_trips"] = sum(1 for t in trips if t["kind"] == "trip" and t["detection_delay_min"] is None)
        report["probation_failures"] = sum(1 for t in trips if t["kind"] == "probation_failed")
        model_profit = arm_summary(reference, margin, ids, floor)["profit"]
        report["loss_avoided"] = _money(report["arms"]["guarded"]["profit"] - model_profit)
    return report
