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
  effective policy. app.stress_guard supplies it; without one the arm is not run;
- `oracle` (with the guarded arm): what a perfect guard could have done (sim.oracle).

Every draw is keyed by seed, purpose, minute and slot (sim.crn): arms differ only where
their policies do, so loss_avoided = guarded profit - model profit, same seed, is exact.

**The truth a guard is judged against** is the model arm's EXPECTED ROI over the trailing
hour (sim.oracle.minute_values: expected GMV / expected spend under the true rates, no
dice): its below-floor episodes are the runs of minutes where it is below the floor, and a
*sustained* episode stays below for at least SUSTAINED minutes. A trip detects the
episode under way at the trip, else the one that ended most recently (at most TRIP_SLACK
minutes before), else the one starting soonest after it (at most TRIP_SLACK minutes
later: an early trip). A trip near no episode is a false trip. Its detection delay is
counted from the first crossing of the nearest sustained episode within TRIP_SLACK (None
when only a shorter dip is near). A return to TRIPPED from PROBATION is a failed probation,
reported apart; a return to the model is a restore, reported with the model's expected
ROI on that campaign over the half hour before it (what the canary showed).
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
from sim.oracle import ACTIONS, MODEL, minute_values, play_oracle, trailing_roi
from sim.scenario import Scenario

ARMS = ("model", "rule_pool", "guarded")
TRUE_ROI_WINDOW = 60  # minutes of the trailing window the true ROI is measured over
TRIP_SLACK = 60       # minutes between a trip and a below-floor episode for the trip to count as its detection
SUSTAINED = 15        # minutes below the floor that make an episode sustained (the delay counts from its start)
RESTORE_WINDOW = 30   # minutes of the model's expected ROI before a restore that judge it


class GuardHook(Protocol):
    def guard_states(self, now_ts: int, last: BucketResult | None) -> Mapping[str, GuardState]: ...


@dataclass(frozen=True)
class Transition:
    """A campaign's guard moving at a minute: kind trip (from the model), probation_failed (back to
    TRIPPED), probation (to the canary) or restore (back to the model); the action while held."""

    campaign: str
    minute: int
    kind: str
    action: str


@dataclass(frozen=True)
class ArmRun:
    """Per campaign and minute, what an arm spent and the GMV its clicks brought; the expected values of
    every action along the arm's path (sim.oracle.minute_values); what the guard hook did."""

    spend: np.ndarray    # (C, 1440) yuan
    gmv: np.ndarray      # (C, 1440) yuan, by the bucket of its clicks
    clicks: np.ndarray   # (C,)
    orders: np.ndarray   # (C,)
    transitions: list[Transition]
    held: np.ndarray            # (C, 1440) bool: a guard held the campaign (tripped or in probation)
    values_spend: np.ndarray    # (actions + served, C, 1440) expected spend
    values_gmv: np.ndarray      # (actions + served, C, 1440) expected GMV
    cut_factor: np.ndarray      # (C, 1440) the oracle's bid cut
    # The outcome feed as a guard sees it: GMV and orders by campaign, bucket minute and the minute they
    # became known (one entry per increment, summed over the campaign's packages), and the feed's
    # watermark after each minute (the newest minute known so far).
    increments: dict[str, np.ndarray]  # campaign, bucket, known, gmv, orders
    watermark: np.ndarray       # (1440,)

    @property
    def trips(self) -> list[tuple[str, int, str]]:
        """(campaign, minute, kind) of each move into TRIPPED: "trip" from the model, "probation_failed"."""
        return [(t.campaign, t.minute, t.kind) for t in self.transitions if t.kind in ("trip", "probation_failed")]


_TRANSITION = {(None, GuardMode.TRIPPED): "trip", (GuardMode.MODEL, GuardMode.TRIPPED): "trip",
               (GuardMode.PROBATION, GuardMode.TRIPPED): "probation_failed",
               (GuardMode.TRIPPED, GuardMode.PROBATION): "probation",
               (GuardMode.PROBATION, GuardMode.MODEL): "restore", (GuardMode.TRIPPED, GuardMode.MODEL): "restore"}


def run_arm(scenario: Scenario, seed: int, bidders: Mapping[str, object], history: History,
            pool: RulePool, *, kill_switch: KillSwitch = NO_KILL, guard_hook: GuardHook | None = None,
            on_bucket: Callable[[BucketResult], None] | None = None, minutes: int = MINUTES_PER_DAY) -> ArmRun:
    """Play `minutes` buckets of the day (all of it by default) for one arm."""
    sim = Simulation(scenario, seed, bidders, history, pool=pool)
    C = sim.C
    floor = scenario.bidder.floor_roi
    spend, gmv = np.zeros((C, MINUTES_PER_DAY)), np.zeros((C, MINUTES_PER_DAY))
    clicks, orders = np.zeros(C), np.zeros(C)
    values_spend = np.zeros((len(ACTIONS) + 1, C, MINUTES_PER_DAY))
    values_gmv = np.zeros_like(values_spend)
    cut_factor = np.ones((C, MINUTES_PER_DAY))
    held = np.zeros((C, MINUTES_PER_DAY), dtype=bool)
    increments: list[tuple[np.ndarray, ...]] = []
    watermark = np.zeros(MINUTES_PER_DAY, dtype=np.int64)
    index = {cid: i for i, cid in enumerate(sim.catalog.campaign_ids)}
    transitions: list[Transition] = []
    modes: dict[str, GuardMode] = {}
    last = None
    while sim.minute < minutes:
        guards = {}
        if guard_hook is not None:
            guards = dict(guard_hook.guard_states(DAY_START_TS + sim.minute * BUCKET_SECONDS, last))
            for c in sorted(set(guards) | set(modes)):
                state = guards.get(c)
                mode = state.mode if state is not None else GuardMode.MODEL
                kind = _TRANSITION.get((modes.get(c), mode))
                if kind is not None:
                    transitions.append(Transition(c, sim.minute, kind, state.action.value if state else "model"))
                modes[c] = mode
                if state is not None and state.holds:
                    held[index[c], sim.minute] = True
        last = sim.step(guards=guards, kill_switch=kill_switch)
        m = last.minute
        spend[:, m] = last.campaign_spend
        gmv[:, m] = last.campaign_gmv
        clicks += np.bincount(sim.campaign_of, weights=last.columns["clicks"], minlength=C)
        orders += np.bincount(sim.campaign_of, weights=last.columns["orders"], minlength=C)
        inc = last.outcomes
        if len(inc.slot):
            increments.append((sim.campaign_of[inc.slot], inc.bucket_minute, inc.known_minute, inc.gmv, inc.orders))
            watermark[m] = max(int(inc.known_minute.max()), watermark[m - 1] if m else 0)
        elif m:
            watermark[m] = watermark[m - 1]
        values = minute_values(last, sim.campaign_of, floor)
        values_spend[:, :, m], values_gmv[:, :, m], cut_factor[:, m] = values.spend, values.gmv, values.cut_factor
        if on_bucket is not None:
            on_bucket(last)
    names = ("campaign", "bucket", "known", "gmv", "orders")
    flat = {n: np.concatenate([p[i] for p in increments]) if increments else np.zeros(0)
            for i, n in enumerate(names)}
    return ArmRun(spend, gmv, clicks, orders, transitions, held, values_spend, values_gmv, cut_factor,
                  flat, watermark)


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


def true_roi(run: ArmRun, window: int = TRUE_ROI_WINDOW) -> np.ndarray:
    """(C, minutes) the model's expected ROI over the trailing window, along the arm's path."""
    return trailing_roi(run.values_spend[MODEL], run.values_gmv[MODEL], window)


def episodes(below: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) minute of each run of True in a campaign's below-floor series."""
    padded = np.concatenate([[False], below, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _nearest(runs: list[tuple[int, int]], minute: int, slack: int) -> tuple[int, int] | None:
    """The episode a trip at `minute` detects: under way, else ended within `slack`, else starting within it."""
    before = [e for e in runs if e[0] <= minute]
    if before and before[-1][1] >= minute - slack:
        return before[-1]
    after = [e for e in runs if e[0] > minute]
    return after[0] if after and after[0][0] <= minute + slack else None


def judge_trip(below: np.ndarray, minute: int, slack: int = TRIP_SLACK) -> tuple[bool, int | None]:
    """(false trip?, detection delay in minutes from the first crossing of the sustained episode it
    detected; negative: it tripped before; None: no sustained episode near)."""
    runs = episodes(below)
    if _nearest(runs, minute, slack) is None:
        return True, None
    sustained = _nearest([e for e in runs if e[1] - e[0] + 1 >= SUSTAINED], minute, slack)
    return False, None if sustained is None else minute - sustained[0]


def first_sustained_crossing(below: np.ndarray) -> int | None:
    """The first minute of the day's first sustained below-floor episode (None: there is none)."""
    return next((s for s, e in episodes(below) if e - s + 1 >= SUSTAINED), None)


@dataclass(frozen=True)
class StressRuns:
    """The arms of one stress run, played, and what judging them needs."""

    scenario: Scenario
    seed: int
    minutes: int
    runs: dict[str, ArmRun]
    reference: ArmRun | None    # the model alone (also when its arm was not asked for), with a guard
    campaign_ids: tuple[str, ...]
    margin: np.ndarray
    floor: float
    oracle_passes: int = 0


def play_stress(scenario: Scenario, seed: int, bidders: Mapping[str, object], history: History, pool: RulePool,
                *, guard_hook: GuardHook | None = None, arms: Sequence[str] = ("model", "rule_pool"),
                minutes: int = MINUTES_PER_DAY, oracle: bool = True) -> StressRuns:
    """Play the baseline `arms` asked for, plus the guarded arm (and the oracle, unless `oracle` is False)
    when a guard hook is given. `minutes` < 1440 plays only the start of the day (the oracle needs it all)."""
    unknown = set(arms) - {"model", "rule_pool"}
    if unknown:
        raise ValueError(f"unknown arm(s) {sorted(unknown)}: the baselines are model and rule_pool")

    def play(**kwargs) -> ArmRun:
        return run_arm(scenario, seed, bidders, history, pool, minutes=minutes, **kwargs)

    kill = {"model": NO_KILL, "rule_pool": KillSwitch(global_on=True)}
    runs: dict[str, ArmRun] = {name: play(kill_switch=kill[name]) for name in ("model", "rule_pool") if name in arms}
    campaigns = build_catalog(scenario.world.campaigns, scenario.world.catalog_seed).campaigns
    ids = tuple(c.campaign_id for c in campaigns)
    margin = np.array([c.gross_margin for c in campaigns])
    floor = scenario.bidder.floor_roi
    reference, passes = None, 0
    if guard_hook is not None:
        reference = runs.get("model") or play()
        runs["guarded"] = play(guard_hook=guard_hook)
        if oracle and minutes == MINUTES_PER_DAY:
            best = play_oracle(lambda hook: play(guard_hook=hook), reference, ids, margin, floor)
            runs["oracle"], passes = best.run, best.passes
    return StressRuns(scenario, seed, minutes, runs, reference, ids, margin, floor, passes)


def stress_report(played: StressRuns, restore_margin: float = 0.2) -> dict:
    """The stress report (the JSON contract in docs/SIMULATOR.md). `restore_margin`: a restore is judged
    against floor + this (the guard's hysteresis)."""
    ids, margin, floor = played.campaign_ids, played.margin, played.floor
    report = {
        "scenario": played.scenario.name, "seed": played.seed, "floor_roi": floor, "minutes": played.minutes,
        "trips": [], "restores": [], "false_trips": 0, "probation_failures": 0, "held_campaign_hours": 0.0,
        "loss_avoided": None, "oracle_loss_avoided": None, "oracle_capture": None,
        "arms": {name: arm_summary(run, margin, ids, floor) for name, run in played.runs.items()},
    }
    if played.reference is None:
        return report
    report.update(judge_guard(played.reference, played.runs["guarded"], ids, floor, restore_margin))
    model = arm_summary(played.reference, margin, ids, floor)
    report["loss_avoided"] = _money(report["arms"]["guarded"]["profit"] - model["profit"])
    if "oracle" in played.runs:
        oracle_avoided = report["arms"]["oracle"]["profit"] - model["profit"]
        report["oracle_passes"] = played.oracle_passes
        report["oracle_loss_avoided"] = _money(oracle_avoided)
        report["oracle_capture"] = (round(report["loss_avoided"] / oracle_avoided, 4)
                                    if oracle_avoided > MATERIAL_SHARE * model["spend"] else None)
    return report


def run_stress(scenario: Scenario, seed: int, bidders: Mapping[str, object], history: History, pool: RulePool,
               *, guard_hook: GuardHook | None = None, arms: Sequence[str] = ("model", "rule_pool"),
               minutes: int = MINUTES_PER_DAY, oracle: bool = True, restore_margin: float = 0.2) -> dict:
    """play_stress, then stress_report."""
    return stress_report(play_stress(scenario, seed, bidders, history, pool, guard_hook=guard_hook, arms=arms,
                                     minutes=minutes, oracle=oracle), restore_margin)


MATERIAL_SHARE = 0.01  # capture is reported where the oracle avoids more than this share of the day's spend


def judge_guard(reference: ArmRun, guarded: ArmRun, ids: tuple[str, ...], floor: float,
                restore_margin: float) -> dict:
    """The guarded arm's trips, restores and probations judged against the truth (module docstring)."""
    below = true_roi(reference) < floor
    index = {cid: i for i, cid in enumerate(ids)}
    canary = trailing_roi(guarded.values_spend[MODEL], guarded.values_gmv[MODEL], RESTORE_WINDOW)
    trips, restores = [], []
    for t in guarded.transitions:
        c = index[t.campaign]
        if t.kind in ("trip", "probation_failed"):
            false, delay = judge_trip(below[c], t.minute)
            trips.append({"campaign": t.campaign, "at_minute": t.minute, "kind": t.kind, "action": t.action,
                          "detection_delay_min": delay, "false": bool(false and t.kind == "trip")})
        elif t.kind == "restore":
            roi = canary[c, t.minute - 1] if t.minute > 0 else np.nan
            restores.append({"campaign": t.campaign, "at_minute": t.minute,
                             "model_expected_roi": None if np.isnan(roi) else round(float(roi), 4),
                             "below_floor_plus_hysteresis": bool(roi < floor + restore_margin)})
    return {"trips": trips, "restores": restores,
            "false_trips": sum(t["false"] for t in trips),
            "probation_failures": sum(1 for t in trips if t["kind"] == "probation_failed"),
            "held_campaign_hours": round(float(guarded.held.sum()) / 60, 2)}
