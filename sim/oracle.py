"""The yardstick for a guard: what a perfect guard could have saved on a simulated day.

A guard can do four things with a campaign's traffic: leave it to the model, give it
to the manual rule pool, cut the model's bid (降价) or pause the campaign. The oracle
does the same things, knowing the world but not the dice:

- **Expected values.** Every simulated minute, from the minute's truth (true CTR,
  CVR, order values, competitors' bids, the expected number of auctions), the
  expected spend and GMV of each campaign under each action (`minute_values`): the
  model's bids, the pool's, the model's bids cut to the level at which the model's
  own prediction, corrected by how far its value predictions are truly off, meets
  the floor (the guard's own cut rule with the true correction), and nothing. Spend
  is capped by what the campaign has left of its budget. No draw is involved, so no
  yardstick can harvest luck a guard cannot.
- **The perfect guard's rule.** Per campaign-hour: where the model's expected ROI
  is below the floor, the one of a guard's actions (pool, bid cut, pause) with the
  best expected profit (GMV x gross margin - spend); elsewhere the model. It acts where a guard's mandate is (ROI below the
  floor) and chooses as a guard should (by expected profit): on a healthy campaign
  that loses money at ROI 2.9 it does nothing, as the guard must not.
- **Played, and improved where budgets interact.** The schedule is played through
  the same engine (same seed: common random numbers) as a guard hook would be. A
  campaign-hour decided on the model arm's path is judged again on the oracle's own
  path (the budget it saved, the model's features), and the day is played again,
  until the schedule stops changing (at most `MAX_PASSES` plays); the play with the
  best expected profit is the oracle. A per-campaign-hour choice made once is not
  enough: the budget a pool saves early funds the model's later hours.

`oracle_loss_avoided` = the oracle's profit - the model's (both played, same seed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from control.domain import GuardAction, GuardMode, GuardState
from sim.catalog import BUCKET_SECONDS, DAY_START_TS
from sim.engine import BucketResult
from sim.world import partial_mean

ACTIONS = ("model", "rule_pool", "bid_cut", "pause")
MODEL, POOL, CUT, PAUSE = range(len(ACTIONS))
_GUARD_ACTION = {POOL: GuardAction.POOL, CUT: GuardAction.BID_CUT, PAUSE: GuardAction.PAUSE}
MIN_CUT = 0.05   # the lowest bid factor a cut goes to
MAX_PASSES = 4


@dataclass(frozen=True)
class MinuteValues:
    """Expected spend and GMV per campaign for one minute: (actions + the served policy, campaigns)."""

    spend: np.ndarray      # (len(ACTIONS) + 1, C); the last row is what was served
    gmv: np.ndarray
    cut_factor: np.ndarray  # (C,) the bid factor of the cut


def expected_slots(result: BucketResult, bid: np.ndarray, on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(expected spend, expected GMV) per slot at these bids, from the minute's truth."""
    truth = result.truth
    win, paid = partial_mean(np.maximum(bid, 1e-9), truth.median_bid, result.competitor_bid_spread)
    clicks = result.expected_opportunities * on * win * truth.ctr
    return clicks * paid, clicks * truth.cvr * truth.order_value


def _by_campaign(values: np.ndarray, campaign_of: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(campaign_of, weights=values, minlength=n)


def minute_values(result: BucketResult, campaign_of: np.ndarray, floor: float) -> MinuteValues:
    """Every action's expected spend and GMV per campaign for the minute (MinuteValues)."""
    cols = result.columns
    C = len(result.campaign_spend)
    model_bid = np.asarray(cols["model_bid"], dtype=np.float64)
    pool_bid = np.asarray(cols["pool_bid"], dtype=np.float64)
    has_pool = ~np.isnan(pool_bid)
    # The true correction of the model's value per click, over the clicks its own bids buy.
    m_spend, m_gmv = expected_slots(result, model_bid, result.plan_on)
    win, _ = partial_mean(np.maximum(model_bid, 1e-9), result.truth.median_bid, result.competitor_bid_spread)
    clicks = result.expected_opportunities * result.plan_on * win * result.truth.ctr
    predicted = _by_campaign(clicks * np.asarray(cols["pred_value"], dtype=np.float64), campaign_of, C)
    true_value = _by_campaign(clicks * result.truth.cvr * result.truth.order_value, campaign_of, C)
    share = np.asarray(cols["budget_share"], dtype=np.float64) * result.plan_on
    pred_roi = (_by_campaign(share * np.asarray(cols["pred_roi"], dtype=np.float64), campaign_of, C)
                / np.maximum(_by_campaign(share, campaign_of, C), 1e-12))
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(predicted > 0, true_value / predicted, 1.0)
    cut = np.clip(k * pred_roi / floor, MIN_CUT, 1.0)
    rows = [
        (m_spend, m_gmv),
        expected_slots(result, np.where(has_pool, pool_bid, model_bid),
                       np.where(has_pool, result.pool_on, result.plan_on)),
        expected_slots(result, model_bid * cut[campaign_of], result.plan_on),
        (np.zeros_like(m_spend), np.zeros_like(m_gmv)),
        expected_slots(result, np.asarray(cols["bid"], dtype=np.float64),
                       np.asarray(cols["audience_on"], dtype=bool)),
    ]
    spend = np.array([_by_campaign(s, campaign_of, C) for s, _ in rows])
    gmv = np.array([_by_campaign(g, campaign_of, C) for _, g in rows])
    # What a campaign has left of its budget caps what any action can spend this minute.
    scale = np.where(spend > result.budget_left, result.budget_left / np.maximum(spend, 1e-12), 1.0)
    return MinuteValues(spend * scale, gmv * scale, cut)


@dataclass(frozen=True)
class Schedule:
    """The oracle's action per campaign and hour (indexes into ACTIONS) and the cut's bid factor."""

    action: np.ndarray   # (C, 24) int
    factor: np.ndarray   # (C, 24)

    def same(self, other: Schedule) -> bool:
        return np.array_equal(self.action, other.action)


def decide(spend: np.ndarray, gmv: np.ndarray, factor: np.ndarray, margin: np.ndarray,
           floor: float) -> Schedule:
    """The perfect guard's rule per campaign-hour from per-minute expected values.

    spend, gmv: (actions + served, C, 1440); factor: (C, 1440). Where the model's expected ROI over
    the hour is below the floor, the action with the best expected profit; else the model."""
    A = len(ACTIONS)
    C = spend.shape[1]
    hourly_spend = spend[:A].reshape(A, C, 24, 60).sum(axis=3)
    hourly_gmv = gmv[:A].reshape(A, C, 24, 60).sum(axis=3)
    profit = hourly_gmv * margin[None, :, None] - hourly_spend
    below = hourly_gmv[MODEL] < floor * hourly_spend[MODEL]
    # Below the floor a guard must act: the best of the pool, a bid cut and a pause.
    action = np.where(below, 1 + profit[1:].argmax(axis=0), MODEL)
    return Schedule(action, factor.reshape(C, 24, 60).mean(axis=2))


class ScheduleHook:
    """A guard hook (sim.stress.GuardHook) that serves an oracle schedule: per campaign-hour, the
    campaign held with the schedule's action, or left to the model."""

    def __init__(self, schedule: Schedule, campaign_ids: tuple[str, ...]):
        self.schedule = schedule
        self.campaign_ids = campaign_ids

    def guard_states(self, now_ts: int, last: BucketResult | None) -> Mapping[str, GuardState]:
        hour = (now_ts - DAY_START_TS) // BUCKET_SECONDS // 60
        out = {}
        for c, cid in enumerate(self.campaign_ids):
            a = int(self.schedule.action[c, hour])
            if a != MODEL:
                out[cid] = GuardState(cid, GuardMode.TRIPPED, action=_GUARD_ACTION[a],
                                      bid_factor=float(self.schedule.factor[c, hour]) if a == CUT else 1.0)
        return out


def expected_profit(spend: np.ndarray, gmv: np.ndarray, margin: np.ndarray) -> float:
    """Expected profit of what was served (the last row of the values)."""
    return float((gmv[-1] * margin[:, None] - spend[-1]).sum())


@dataclass(frozen=True)
class OracleRun:
    run: object              # sim.stress.ArmRun of the oracle's best play
    schedule: Schedule
    passes: int
    expected_profit: float


def play_oracle(play: Callable[[ScheduleHook], object], model_run, campaign_ids: tuple[str, ...],
                margin: np.ndarray, floor: float) -> OracleRun:
    """Decide on the model arm's expected values, play, decide again on the oracle's own path, until
    the schedule settles (MAX_PASSES plays at most); the play with the best expected profit.

    `play(hook)` plays the day with that guard hook and returns an ArmRun with its expected values."""
    schedule = decide(model_run.values_spend, model_run.values_gmv, model_run.cut_factor, margin, floor)
    if not (schedule.action != MODEL).any():  # the model never falls below the floor: nothing to do
        return OracleRun(model_run, schedule, 0, expected_profit(model_run.values_spend, model_run.values_gmv, margin))
    best: OracleRun | None = None
    for passes in range(1, MAX_PASSES + 1):
        run = play(ScheduleHook(schedule, campaign_ids))
        value = expected_profit(run.values_spend, run.values_gmv, margin)
        if best is None or value > best.expected_profit:
            best = OracleRun(run, schedule, passes, value)
        again = decide(run.values_spend, run.values_gmv, run.cut_factor, margin, floor)
        if again.same(schedule):
            break
        schedule = again
    return best


def trailing_roi(spend: np.ndarray, gmv: np.ndarray, window: int) -> np.ndarray:
    """(C, minutes) ROI over the trailing `window` minutes (NaN with nothing spent)."""
    def trailing(x: np.ndarray) -> np.ndarray:
        c = np.cumsum(x, axis=1)
        c[:, window:] = c[:, window:] - c[:, :-window]
        return c
    s, g = trailing(spend), trailing(gmv)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s > 0, g / s, np.nan)

