import math

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from control.domain import (
    DecidedBy,
    GuardAction,
    GuardMode,
    GuardState,
    Override,
    OverrideField,
    OverrideScope,
    OverrideStatus,
    RuleAnswer,
    Slot,
    most_restrictive,
)
from control.policy import KillSwitch, SlotPlan, resolve_policy, resolve_slot

NOW = 1_000_000
CAMPAIGNS = ["c1", "c2", "c3"]
PACKAGES = ["gifting", "pets"]


def plan(c="c1", p="gifting", bid=1.0):
    return SlotPlan(Slot(c, p, NOW), bid, True, 0.1)


def override(oid, field=OverrideField.BID, value=2.0, c="c1", p=None, status=OverrideStatus.APPROVED,
             expires=NOW + 3600, reviewed=NOW - 10):
    return Override(oid, OverrideScope(c, p), field, value, "why", "op", NOW - 100, expires, status,
                    "mgr", reviewed)


POOL = RuleAnswer("rule-gifting", 0.7)


def test_model_decides_by_default():
    d = resolve_slot(plan(), [], None, KillSwitch(), POOL, NOW)
    assert (d.decided_by, d.bid, d.reason) == (DecidedBy.MODEL, 1.0, "model")


def test_tripped_guard_hands_the_slot_to_the_rule_pool():
    d = resolve_slot(plan(), [], GuardState("c1", GuardMode.TRIPPED, event_id=9), KillSwitch(), POOL, NOW)
    assert (d.decided_by, d.bid, d.rule_id, d.guard_event_id) == (DecidedBy.RULE_POOL, 0.7, "rule-gifting", 9)


def test_kill_switch_hands_every_slot_to_the_pool():
    d = resolve_slot(plan(), [], None, KillSwitch(global_on=True), POOL, NOW)
    assert d.decided_by is DecidedBy.RULE_POOL and d.reason == "kill_switch"
    d = resolve_slot(plan(c="c2"), [], None, KillSwitch(campaigns=frozenset({"c1"})), POOL, NOW)
    assert d.decided_by is DecidedBy.MODEL


def test_approved_override_beats_the_pool_and_expires():
    guard = GuardState("c1", GuardMode.TRIPPED, event_id=9)
    d = resolve_slot(plan(), [override(1)], guard, KillSwitch(global_on=True), POOL, NOW)
    assert (d.decided_by, d.bid, d.override_ids) == (DecidedBy.OVERRIDE, 2.0, (1,))
    d = resolve_slot(plan(), [override(1, expires=NOW)], guard, KillSwitch(), POOL, NOW)
    assert d.decided_by is DecidedBy.RULE_POOL


def test_proposed_override_does_not_decide():
    d = resolve_slot(plan(), [override(1, status=OverrideStatus.PROPOSED)], None, KillSwitch(), POOL, NOW)
    assert d.decided_by is DecidedBy.MODEL


def test_package_override_beats_campaign_override_for_the_same_field():
    both = [override(1, value=3.0, reviewed=NOW - 1), override(2, value=1.5, p="gifting", reviewed=NOW - 50)]
    d = resolve_slot(plan(), both, None, KillSwitch(), POOL, NOW)
    assert d.bid == 1.5 and d.override_ids == (2,)


def test_override_changes_only_its_own_field():
    d = resolve_slot(plan(), [override(1, OverrideField.AUDIENCE_ON, 0.0)], None, KillSwitch(), POOL, NOW)
    assert d.decided_by is DecidedBy.OVERRIDE and d.audience_on is False and d.bid == 1.0


def test_a_guard_can_cut_the_models_bid_or_pause_the_campaign_instead_of_the_pool():
    cut = GuardState("c1", GuardMode.TRIPPED, event_id=5, action=GuardAction.BID_CUT, bid_factor=0.6)
    d = resolve_slot(plan(bid=2.0), [], cut, KillSwitch(), POOL, NOW)
    assert (d.decided_by, d.bid, d.audience_on, d.bid_factor, d.reason, d.guard_event_id) == \
        (DecidedBy.GUARD, 1.2, True, 0.6, "guard:tripped:bid_cut", 5)
    pause = GuardState("c1", GuardMode.PROBATION, canary_share=0.1, action=GuardAction.PAUSE)
    d = resolve_slot(plan(), [], pause, KillSwitch(), POOL, NOW)
    assert (d.decided_by, d.audience_on, d.canary_share, d.reason) == \
        (DecidedBy.GUARD, False, 0.1, "guard:probation:pause")
    # The kill switch puts the campaign on the pool whatever the guard's action; an override beats both.
    assert resolve_slot(plan(), [], cut, KillSwitch(global_on=True), POOL, NOW).decided_by is DecidedBy.RULE_POOL
    d = resolve_slot(plan(bid=2.0), [override(1, OverrideField.AUDIENCE_ON, 1.0)], cut, KillSwitch(), POOL, NOW)
    assert (d.decided_by, d.bid, d.bid_factor) == (DecidedBy.OVERRIDE, 1.2, 0.6)


def test_the_most_restrictive_guard_decides_and_forced_pool_is_always_the_pool():
    states = [GuardState("c1", GuardMode.TRIPPED, action=GuardAction.BID_CUT, bid_factor=0.5),
              GuardState("c1", GuardMode.TRIPPED, action=GuardAction.PAUSE),
              GuardState("c1", GuardMode.PROBATION, action=GuardAction.POOL)]
    assert most_restrictive(states)["c1"].action is GuardAction.PAUSE
    forced = GuardState("c1", GuardMode.FORCED_POOL, action=GuardAction.PAUSE)
    assert resolve_slot(plan(), [], forced, KillSwitch(), POOL, NOW).decided_by is DecidedBy.RULE_POOL


def test_probation_keeps_the_canary_share_for_the_model():
    guard = GuardState("c1", GuardMode.PROBATION, canary_share=0.1, event_id=4)
    d = resolve_slot(plan(), [], guard, KillSwitch(), POOL, NOW)
    assert d.decided_by is DecidedBy.RULE_POOL and d.canary_share == 0.1


# --- the vectorised resolution equals the per-slot definition ------------------------------

overrides_st = st.lists(st.builds(
    override,
    oid=st.integers(1, 10_000),
    field=st.sampled_from(list(OverrideField)),
    value=st.sampled_from([0.0, 1.0]),
    c=st.sampled_from(CAMPAIGNS),
    p=st.sampled_from([None] + PACKAGES),
    status=st.sampled_from([OverrideStatus.APPROVED, OverrideStatus.PROPOSED, OverrideStatus.REVOKED]),
    expires=st.sampled_from([NOW, NOW + 60]),
    reviewed=st.integers(NOW - 100, NOW),
), max_size=6, unique_by=lambda o: o.override_id)


@settings(max_examples=200, deadline=None)
@given(
    bids=st.lists(st.floats(0.01, 10), min_size=6, max_size=6),
    modes=st.fixed_dictionaries({c: st.sampled_from(list(GuardMode)) for c in CAMPAIGNS}),
    actions=st.fixed_dictionaries({c: st.sampled_from(list(GuardAction)) for c in CAMPAIGNS}),
    overrides=overrides_st,
    kill_global=st.booleans(),
    killed=st.frozensets(st.sampled_from(CAMPAIGNS)),
    pool_gaps=st.frozensets(st.tuples(st.sampled_from(CAMPAIGNS), st.sampled_from(PACKAGES))),
)
def test_resolve_policy_matches_resolve_slot(bids, modes, actions, overrides, kill_global, killed, pool_gaps):
    slots = [(c, p) for c in CAMPAIGNS for p in PACKAGES][:6]
    frame = pd.DataFrame({"campaign_id": [c for c, _ in slots], "audience_package": [p for _, p in slots],
                          "bucket_ts": NOW, "bid": bids, "audience_on": True, "budget_share": 0.1})
    guards = {c: GuardState(c, m, canary_share=0.1 if m is GuardMode.PROBATION else 0.0, event_id=7,
                            action=actions[c], bid_factor=0.5 if actions[c] is GuardAction.BID_CUT else 1.0)
              for c, m in modes.items()}
    pool = {(c, p): RuleAnswer(f"r-{c}-{p}", 0.5, audience_on=p == "pets")
            for c in CAMPAIGNS for p in PACKAGES if (c, p) not in pool_gaps}
    kill = KillSwitch(kill_global, killed)
    table = resolve_policy(frame, overrides, guards, kill, pool, NOW)
    for (c, p), bid, row in zip(slots, bids, table.itertuples(index=False), strict=True):
        expected = resolve_slot(SlotPlan(Slot(c, p, NOW), bid, True, 0.1), overrides, guards[c], kill,
                                pool.get((c, p)), NOW)
        assert row.decided_by == expected.decided_by.value
        assert row.bid == expected.bid
        assert row.audience_on == expected.audience_on
        assert row.reason == expected.reason
        assert tuple(row.override_ids) == expected.override_ids
        assert row.rule_id == expected.rule_id
        assert row.canary_share == expected.canary_share
        assert row.guard_event_id == expected.guard_event_id
        assert row.bid_factor == expected.bid_factor
        assert (math.isnan(row.daily_budget) and expected.daily_budget is None) or \
            row.daily_budget == expected.daily_budget
        # A campaign on the pool with an answer is served by the pool or an override, never the model.
        on_pool = kill.covers(c) or guards[c].effective_action is GuardAction.POOL
        if on_pool and (c, p) in pool:
            assert row.decided_by in ("rule_pool", "override")
