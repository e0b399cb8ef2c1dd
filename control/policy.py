"""Effective policy: for every slot exactly one authority decides.

Order of authority, highest first:

1. an approved, unexpired override covering the slot (decided_by = override);
2. the manual rule pool, when a kill switch (global or the campaign's) is on or the
   campaign's guard holds it with the pool as its action (tripped, probation, forced)
   (decided_by = rule_pool);
3. the guard's own action when it holds the campaign with one: the model's bid cut
   by the guard's bid_factor (降价), or every package off (pause) (decided_by = guard);
4. the model (decided_by = model).

An override changes only its own field (bid, budget or audience on/off); the
fields it does not touch come from the authority below it, but the slot is
reported as decided by the override. Among overrides for the same field, one
scoped to the audience package beats one scoped to the whole campaign, and of
equal scope the one reviewed last wins.

In PROBATION the guard's action decides and `canary_share` says which share of the
slot's traffic the bidder sends back to the model at its own bid (the guard's canary).

`resolve_slot` is the definition, one slot at a time; `resolve_policy` is the
same rule over a whole plan at once (columnar, vectorised) and is tested
against `resolve_slot`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from control.domain import (
    DecidedBy,
    GuardAction,
    GuardMode,
    GuardState,
    Override,
    OverrideField,
    RuleAnswer,
    Slot,
)


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """Global and per-campaign kill switches: on means the rule pool serves."""

    global_on: bool = False
    campaigns: frozenset[str] = frozenset()

    def covers(self, campaign_id: str) -> bool:
        return self.global_on or campaign_id in self.campaigns


@dataclass(frozen=True, slots=True)
class PolicyInputs:
    """What the effective policy reads besides the model's plan and the pool's answers."""

    overrides: tuple[Override, ...] = ()   # approved ones (in force or not: resolution checks the time)
    guards: Mapping[str, GuardState] = field(default_factory=dict)
    kill_switch: KillSwitch = KillSwitch()


def guard_action(campaign_id: str, guards: Mapping[str, GuardState], kill_switch: KillSwitch) -> GuardAction | None:
    """What takes the campaign's traffic from the model: the pool under a kill switch, else its guard's
    action while the guard holds it; None when the model serves it."""
    if kill_switch.covers(campaign_id):
        return GuardAction.POOL
    guard = guards.get(campaign_id)
    return None if guard is None else guard.effective_action


def pool_serves(campaign_id: str, guards: Mapping[str, GuardState], kill_switch: KillSwitch) -> bool:
    """Whether the manual rule pool answers for the campaign: a kill switch covers it, or its guard
    holds it with the pool as its action (tripped, probation, forced)."""
    return guard_action(campaign_id, guards, kill_switch) is GuardAction.POOL


def pool_campaigns(campaign_ids: Iterable[str], guards: Mapping[str, GuardState],
                   kill_switch: KillSwitch) -> set[str]:
    """The campaigns among `campaign_ids` the rule pool answers for."""
    return {c for c in campaign_ids if pool_serves(c, guards, kill_switch)}


def held_campaigns(campaign_ids: Iterable[str], guards: Mapping[str, GuardState],
                   kill_switch: KillSwitch) -> set[str]:
    """The campaigns among `campaign_ids` whose traffic the model does not decide (before overrides)."""
    return {c for c in campaign_ids if guard_action(c, guards, kill_switch) is not None}


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """The model's plan for one slot: the inputs the policy needs from a decision row."""

    slot: Slot
    bid: float
    audience_on: bool
    budget_share: float


@dataclass(frozen=True, slots=True)
class EffectiveDecision:
    slot: Slot
    decided_by: DecidedBy
    bid: float
    audience_on: bool
    budget_share: float
    model_bid: float
    reason: str
    override_ids: tuple[int, ...] = ()
    rule_id: str | None = None
    guard_event_id: int | None = None
    canary_share: float = 0.0
    daily_budget: float | None = None  # set by a budget override, yuan
    bid_factor: float = 1.0            # a guard's bid cut: bid = the model's bid x this


def _override_rank(override: Override) -> tuple[int, int, int]:
    specific = 1 if override.scope.audience_package is not None else 0
    return (specific, override.reviewed_ts or 0, override.override_id)


def _winning_overrides(overrides: Iterable[Override], slot: Slot, now_ts: int) -> dict[OverrideField, Override]:
    winners: dict[OverrideField, Override] = {}
    for override in overrides:
        if not override.in_force(now_ts):
            continue
        if not override.scope.covers(slot.campaign_id, slot.audience_package):
            continue
        current = winners.get(override.field)
        if current is None or _override_rank(override) > _override_rank(current):
            winners[override.field] = override
    return winners


def resolve_slot(plan: SlotPlan, overrides: Iterable[Override], guard: GuardState | None,
                 kill_switch: KillSwitch, pool: RuleAnswer | None, now_ts: int) -> EffectiveDecision:
    """The effective decision for one slot (see the module docstring for the order)."""
    slot = plan.slot
    mode = guard.mode if guard is not None else GuardMode.MODEL
    killed = kill_switch.covers(slot.campaign_id)
    action = guard_action(slot.campaign_id, {slot.campaign_id: guard} if guard else {}, kill_switch)
    canary = 0.0 if killed or mode is not GuardMode.PROBATION else guard.canary_share
    event_id = None if killed or guard is None else guard.event_id

    if action is GuardAction.POOL and pool is not None:
        base = EffectiveDecision(
            slot=slot, decided_by=DecidedBy.RULE_POOL, bid=pool.bid,
            audience_on=pool.audience_on, budget_share=plan.budget_share, model_bid=plan.bid,
            reason="kill_switch" if killed else f"guard:{mode.value}",
            rule_id=pool.rule_id, guard_event_id=event_id, canary_share=canary,
        )
    elif action in (GuardAction.BID_CUT, GuardAction.PAUSE):
        cut = action is GuardAction.BID_CUT
        base = EffectiveDecision(
            slot=slot, decided_by=DecidedBy.GUARD, bid=plan.bid * guard.bid_factor if cut else plan.bid,
            audience_on=plan.audience_on and cut, budget_share=plan.budget_share, model_bid=plan.bid,
            reason=f"guard:{mode.value}:{action.value}", guard_event_id=event_id, canary_share=canary,
            bid_factor=guard.bid_factor if cut else 1.0,
        )
    else:
        reason = "model"
        if action is GuardAction.POOL:
            reason = "rule_pool_gap"  # a validated pool never has one; kept visible if it happens
        base = EffectiveDecision(
            slot=slot, decided_by=DecidedBy.MODEL, bid=plan.bid, audience_on=plan.audience_on,
            budget_share=plan.budget_share, model_bid=plan.bid, reason=reason,
        )

    winners = _winning_overrides(overrides, slot, now_ts)
    if not winners:
        return base
    bid, audience_on, daily_budget = base.bid, base.audience_on, None
    if OverrideField.BID in winners:
        bid = winners[OverrideField.BID].value
    if OverrideField.AUDIENCE_ON in winners:
        audience_on = winners[OverrideField.AUDIENCE_ON].value == 1.0
    if OverrideField.BUDGET in winners:
        daily_budget = winners[OverrideField.BUDGET].value
    ids = tuple(sorted(o.override_id for o in winners.values()))
    return EffectiveDecision(
        slot=slot, decided_by=DecidedBy.OVERRIDE, bid=bid, audience_on=audience_on,
        budget_share=base.budget_share, model_bid=plan.bid,
        reason="override:" + ",".join(str(i) for i in ids), override_ids=ids,
        rule_id=base.rule_id, guard_event_id=base.guard_event_id,
        canary_share=0.0, daily_budget=daily_budget,
        bid_factor=1.0 if OverrideField.BID in winners else base.bid_factor,
    )


# Columns of the plan frame `resolve_policy` takes and of the policy frame it returns.
PLAN_COLUMNS = ("campaign_id", "audience_package", "bucket_ts", "bid", "audience_on", "budget_share")
POLICY_COLUMNS = PLAN_COLUMNS + (
    "decided_by", "model_bid", "reason", "override_ids", "rule_id", "guard_event_id",
    "canary_share", "daily_budget", "bid_factor",
)


def resolve_policy(plan: pd.DataFrame, overrides: Sequence[Override],
                   guards: Mapping[str, GuardState], kill_switch: KillSwitch,
                   pool: Mapping[tuple[str, str], RuleAnswer], now_ts: int) -> pd.DataFrame:
    """`resolve_slot` for every row of `plan` (columns PLAN_COLUMNS), vectorised.

    `pool` maps (campaign_id, audience_package) to the rule pool's answer for the
    plan's bucket. Returns a new frame with POLICY_COLUMNS, one row per plan row,
    in the same order.
    """
    n = len(plan)
    campaign = plan["campaign_id"].to_numpy(dtype=object)
    package = plan["audience_package"].to_numpy(dtype=object)
    model_bid = plan["bid"].to_numpy(dtype=np.float64)
    bid = model_bid.copy()
    audience_on = plan["audience_on"].to_numpy(dtype=bool).copy()
    decided_by = np.full(n, DecidedBy.MODEL.value, dtype=object)
    reason = np.full(n, "model", dtype=object)
    rule_id = np.full(n, None, dtype=object)
    guard_event_id = np.full(n, None, dtype=object)
    canary_share = np.zeros(n)
    daily_budget = np.full(n, np.nan)
    bid_factor = np.ones(n)
    override_ids = np.empty(n, dtype=object)
    override_ids[:] = [()] * n

    rows_by_campaign = pd.Series(np.arange(n)).groupby(campaign, sort=False).indices if n else {}

    # The rule pool or the guard's own action: kill switch first, then guard modes, campaign by campaign.
    for campaign_id, rows in rows_by_campaign.items():
        action = guard_action(campaign_id, guards, kill_switch)
        if action is None:
            continue
        guard = guards.get(campaign_id)
        mode = guard.mode if guard is not None else GuardMode.MODEL
        killed = kill_switch.covers(campaign_id)
        if not killed:
            guard_event_id[rows] = guard.event_id
            if mode is GuardMode.PROBATION:
                canary_share[rows] = guard.canary_share
        if action is not GuardAction.POOL:
            decided_by[rows] = DecidedBy.GUARD.value
            reason[rows] = f"guard:{mode.value}:{action.value}"
            if action is GuardAction.BID_CUT:
                bid[rows] = model_bid[rows] * guard.bid_factor
                bid_factor[rows] = guard.bid_factor
            else:
                audience_on[rows] = False
            continue
        why = "kill_switch" if killed else f"guard:{mode.value}"
        for row in rows:
            answer = pool.get((campaign_id, package[row]))
            if answer is None:
                reason[row] = "rule_pool_gap"
                guard_event_id[row], canary_share[row] = None, 0.0
                continue
            bid[row] = answer.bid
            audience_on[row] = answer.audience_on
            decided_by[row] = DecidedBy.RULE_POOL.value
            reason[row] = why
            rule_id[row] = answer.rule_id

    # Overrides in rank order, so the highest-ranked one for a field is applied last.
    in_force = sorted((o for o in overrides if o.in_force(now_ts)), key=_override_rank)
    touched: dict[int, dict[OverrideField, int]] = {}
    for override in in_force:
        rows = rows_by_campaign.get(override.scope.campaign_id)
        if rows is None:
            continue
        if override.scope.audience_package is not None:
            rows = rows[package[rows] == override.scope.audience_package]
        if override.field is OverrideField.BID:
            bid[rows] = override.value
            bid_factor[rows] = 1.0
        elif override.field is OverrideField.AUDIENCE_ON:
            audience_on[rows] = override.value == 1.0
        else:
            daily_budget[rows] = override.value
        for row in rows.tolist():
            touched.setdefault(row, {})[override.field] = override.override_id
    for row, by_field in touched.items():
        ids = tuple(sorted(by_field.values()))
        override_ids[row] = ids
        decided_by[row] = DecidedBy.OVERRIDE.value
        reason[row] = "override:" + ",".join(str(i) for i in ids)
        canary_share[row] = 0.0

    return pd.DataFrame({
        "campaign_id": campaign,
        "audience_package": package,
        "bucket_ts": plan["bucket_ts"].to_numpy(),
        "bid": bid,
        "audience_on": audience_on,
        "budget_share": plan["budget_share"].to_numpy(dtype=np.float64),
        "decided_by": decided_by,
        "model_bid": model_bid,
        "reason": reason,
        "override_ids": override_ids,
        # object dtype keeps None as None (pandas would turn it into NaN in a string column)
        "rule_id": pd.Series(rule_id, dtype=object),
        "guard_event_id": pd.Series(guard_event_id, dtype=object),
        "canary_share": canary_share,
        "daily_budget": daily_budget,
        "bid_factor": bid_factor,
    })
