"""The guard state machine, second by second with an injected clock (no sleeps)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.domain import GuardAction, GuardMode, InvalidValue
from guards.config import parse_guard_settings
from guards.machine import FORCED_MODES, MachineState, force
from guards.registry import evaluate
from guards.roi import poisson_upper, transition
from tests.guards_helpers import T0, obs

DEFAULTS = parse_guard_settings()
ROI = DEFAULTS.defaults["roi"]
M = ROI.machine
TRIPPED, PROBATION, MODEL = GuardMode.TRIPPED, GuardMode.PROBATION, GuardMode.MODEL


def play(steps, config=ROI, state=None):
    """steps: (seconds after T0, observation). Returns the modes after each step and all event kinds."""
    state = state or MachineState(since_ts=T0)
    modes, kinds = [], []
    for t, o in steps:
        state, events = transition(state, o, config, T0 + t)
        modes.append(state.mode)
        kinds += [e.kind for e in events]
    return state, modes, kinds


def minutes(values, start=0, **kw):
    """One observation per minute, each a new bucket, pred_roi from `values`."""
    return [(60 * (start + i), obs(v, bucket=T0 + 60 * (start + i), **kw)) for i, v in enumerate(values)]


CASES = [
    # (name, steps, expected final mode, expected event kinds)
    ("three below the floor trip", minutes([1.8, 1.8, 1.8]), TRIPPED, ["tripped"]),
    ("two below then one above do not", minutes([1.8, 1.8, 2.1]), MODEL, []),
    ("a dip is forgotten", minutes([1.8, 1.8, 2.1, 1.8, 1.8]), MODEL, []),
    ("at the floor is not below", minutes([2.0, 2.0, 2.0, 2.0]), MODEL, []),
    ("no spend at risk, no trip", minutes([1.0] * 5, pred_spend=5.0), MODEL, []),
    ("the same bucket seen thrice is one evaluation",
     [(t, obs(1.5, bucket=T0)) for t in (0, 20, 40)], MODEL, []),
    ("no data is not a breach", minutes([math.nan] * 5), MODEL, []),
    ("sequential evidence at its threshold trips at once", minutes([2.5], cusum=ROI.cusum_threshold),
     TRIPPED, ["tripped"]),
    ("evidence short of its threshold does not", minutes([2.5] * 4, cusum=ROI.cusum_threshold - 0.1), MODEL, []),
    ("a realised ROI point estimate below the floor alone does not",
     minutes([2.5] * 4, realised_roi=1.0, realised_spend=4000.0, realised_orders=40.0), MODEL, []),
    ("stale data holds the mode and alerts once", [(t, obs(1.5, bucket=T0 + t, data_age_s=700 + t))
                                                   for t in (0, 60, 120, 180)], MODEL, ["data_stale"]),
]
FAIL_SAFE = replace(ROI, machine=replace(M, stale_action="pool"))
CASES += [(name, steps, mode, kinds, FAIL_SAFE) for name, steps, mode, kinds in [
    ("stale data fails safe to the pool when configured",
     [(0, obs(2.5, data_age_s=30)), (60, obs(2.5, data_age_s=700))], TRIPPED, ["data_stale", "tripped"]),
    ("fail-safe alerts once", [(t, obs(2.5, data_age_s=700 + t)) for t in (0, 60, 120)], TRIPPED,
     ["data_stale", "tripped"]),
]]


@pytest.mark.parametrize("name,steps,mode,kinds,config", [c if len(c) == 5 else (*c, ROI) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_transition_table(name, steps, mode, kinds, config):
    state, _, got = play(steps, config)
    assert state.mode is mode
    assert got == kinds


# Mature outcomes showing the model's value predictions sound (its calibration ~1, enough evidence).
SOUND = dict(value_calibration=1.0, realised_roi=2.6, realised_spend=6000.0, realised_orders=240.0)


def tripped_at(t=0, config=ROI):
    state, _, _ = play(minutes([1.5, 1.5, 1.5], start=t // 60), config)
    assert state.mode is TRIPPED
    return state


def test_cooldown_then_probation_then_model():
    state = tripped_at()
    trip_ts = state.since_ts
    # Healthy data during the cooldown changes nothing.
    state, modes, kinds = play(minutes([2.6] * 20, start=3), state=state)
    assert set(modes) == {TRIPPED} and kinds == []
    # The first evaluation at or after the cooldown starts probation with the canary share.
    t = trip_ts - T0 + M.cooldown_s
    state, _, kinds = play([(t, obs(2.6, bucket=T0 + t))], state=state)
    assert state.mode is PROBATION and kinds == ["probation_started"] and state.canary_share == 0.1
    # Its prediction alone is no evidence: without mature outcomes nothing passes.
    unproven, modes, kinds = play(minutes([2.6] * M.probation_evaluations, start=t // 60 + 1), state=state)
    assert set(modes) == {PROBATION} and kinds == []
    # M evaluations whose calibrated prediction is surely at floor + hysteresis or better restore it.
    state, modes, kinds = play(minutes([2.6] * M.probation_evaluations, start=t // 60 + 1, **SOUND), state=state)
    assert modes[-2] is PROBATION and state.mode is MODEL and kinds == ["restored"]


def test_probation_fails_back_to_tripped_with_a_longer_cooldown():
    state = tripped_at()
    t = M.cooldown_s + 180
    state, _, _ = play([(t, obs(2.6, bucket=T0 + t))], state=state)
    # The clicks bring 60% of the value the model predicted, surely: its canary makes 2.6 x 0.6 < 2.
    bad = dict(SOUND, value_calibration=0.6)
    state, _, kinds = play([(t + 60, obs(2.6, bucket=T0 + t + 60, **bad))], state=state)
    assert state.mode is TRIPPED and kinds == ["probation_failed"]
    assert state.cooldown_s == int(M.cooldown_s * M.cooldown_backoff) and state.probation_failures == 1


def test_probation_between_floor_and_hysteresis_times_out():
    state = tripped_at()
    t0 = M.cooldown_s + 180
    state, _, _ = play([(t0, obs(2.6, bucket=T0 + t0))], state=state)
    state, modes, kinds = play(minutes([2.1] * 31, start=t0 // 60 + 1, **SOUND), state=state)
    assert kinds == ["probation_failed"] and state.mode is TRIPPED


def test_release_needs_a_manager_when_configured():
    config = replace(ROI, machine=replace(M, require_approval=True))
    state = tripped_at(config=config)
    steps = minutes([2.6] * 3, start=M.cooldown_s // 60 + 3)
    state, modes, kinds = play(steps, config, state)
    assert set(modes) == {TRIPPED} and kinds == ["release_held"]  # announced once
    state, events = force(state, "auto", "manager", "checked the pool", T0 + 9999, guard="roi", campaign_id="c1")
    assert state.release_approved and events[0].kind == "forced"
    state, _, kinds = play(minutes([2.6], start=200), config, state)
    assert state.mode is PROBATION


def test_trip_budget_holds_the_pool():
    config = replace(ROI, machine=replace(M, max_trips_per_hour=1, cooldown_s=600))
    state = tripped_at(config=config)
    state, modes, kinds = play(minutes([2.6] * 30, start=13), config, state)
    assert set(modes) == {TRIPPED} and kinds == ["release_held"]


def test_stale_hold_keeps_the_mode_and_counts_nothing_until_fresh():
    state, modes, kinds = play([(0, obs(1.5, data_age_s=900)), (60, obs(1.5, bucket=T0 + 60, data_age_s=960)),
                                (120, obs(1.5, bucket=T0 + 120, data_age_s=20))])
    assert modes == [MODEL, MODEL, MODEL] and kinds == ["data_stale", "data_fresh"]
    assert dict(state.counts) == {"pred_roi": 1}


def test_a_model_that_over_promises_is_not_believed_in_probation():
    """Tripped by its sequential evidence while predicting 2.7: in probation its 2.7 counts only as far as
    the value of the clicks bears it out, whoever bought them."""
    state, _, kinds = play(minutes([2.7], cusum=ROI.cusum_threshold + 1))
    assert kinds == ["tripped"] and state.cause == "cusum"
    t = M.cooldown_s + 120
    # The clicks bring 45% of the value the model predicted: 2.7 x 0.45 is surely below the floor.
    over = dict(SOUND, value_calibration=0.45)
    state, _, kinds = play([(t, obs(2.7, bucket=T0 + t, **over)), (t + 60, obs(2.7, bucket=T0 + t + 60, **over))],
                           state=state)
    assert kinds == ["probation_started", "probation_failed"] and state.mode is TRIPPED
    # Measured live, its value predictions are sound again: the model's 2.7 is believed.
    t2 = t + int(state.cooldown_s) + 60
    state, _, kinds = play(minutes([2.7] * 6, start=t2 // 60, **SOUND), state=state)
    assert kinds == ["probation_started", "restored"]


def test_three_failed_probations_keep_the_campaign_held_until_a_person_or_the_next_day():
    config = replace(ROI, machine=replace(M, cooldown_s=600, max_cooldown_s=600, max_trips_per_hour=99))
    state = tripped_at(config=config)
    over = dict(SOUND, value_calibration=0.45)
    t = state.since_ts - T0 + 600
    for failure in range(1, config.machine.max_probation_failures + 1):
        state, _, kinds = play([(t, obs(2.7, bucket=T0 + t, **over)), (t + 60, obs(2.7, bucket=T0 + t + 60, **over))],
                               config, state)
        assert kinds == ["probation_started", "probation_failed"] and state.probation_failures == failure
        t += 60 + 600
    state, modes, kinds = play(minutes([2.7] * 30, start=t // 60, **SOUND), config, state)
    assert set(modes) == {TRIPPED} and kinds == ["release_held"] and state.waiting_note == "probation_limit"
    released, _ = force(state, "auto", "mia", "checked the model", T0 + t + 1800, guard="roi", campaign_id="c1")
    released, _, kinds = play(minutes([2.7], start=t // 60 + 31, **SOUND), config, released)
    assert released.mode is PROBATION
    # The next promotion day starts with a clean slate.
    tomorrow = 24 * 3600
    state, _, kinds = play([(tomorrow, obs(2.7, bucket=T0 + tomorrow, **SOUND))], config, state)
    assert state.mode is PROBATION and state.probation_failures == 0


@pytest.mark.parametrize(("margin", "pool_pred_roi", "action"), [
    (0.65, 4.0, GuardAction.POOL),     # a high margin and a pool worth 4.0 x 0.6 = 2.4: the pool earns most
    (0.28, 4.0, GuardAction.PAUSE),    # at a margin of 0.28 nothing below ROI 3.6 earns: pause
    (0.65, 2.6, GuardAction.BID_CUT),  # the pool's bids bring 2.6 x 0.6 < 2: cut the model's bid to the floor
])
def test_a_trip_takes_the_action_with_the_best_expected_profit(margin, pool_pred_roi, action):
    state, _, kinds = play(minutes([2.7], cusum=ROI.cusum_threshold, gross_margin=margin, value_calibration=0.6,
                                   realised_spend=6000.0, realised_orders=240.0, pool_pred_roi=pool_pred_roi))
    assert kinds == ["tripped"] and state.action is action
    if action is GuardAction.BID_CUT:  # to the bid at which the calibrated prediction meets the floor
        assert state.bid_factor == pytest.approx(2.7 * 0.6 / ROI.floor)
    fixed = replace(ROI, action_choice="pool")  # the seed rule: always the pool
    state, _, _ = play(minutes([2.7], cusum=ROI.cusum_threshold, gross_margin=margin), fixed)
    assert state.action is GuardAction.POOL


def test_when_the_pool_is_no_better_the_guard_takes_the_next_best_action():
    config = replace(ROI, machine=replace(M, cooldown_s=2 * ROI.action_review_s))  # no probation meanwhile
    evidence = dict(gross_margin=0.65, pool_pred_roi=4.0, value_calibration=0.6, realised_spend=6000.0,
                    realised_orders=240.0)
    state, _, _ = play(minutes([2.7], cusum=ROI.cusum_threshold, **evidence), config)
    assert state.action is GuardAction.POOL
    pool_bad = dict(evidence, realised_roi=1.4, realised_orders=120.0)
    early = ROI.action_review_s - 60  # before the pool's own outcomes fill the window, nothing changes
    state, _, kinds = play([(early, obs(2.7, bucket=T0 + early, **pool_bad))], config, state)
    assert kinds == [] and state.action is GuardAction.POOL
    t = ROI.action_review_s
    state, _, kinds = play([(t, obs(2.7, bucket=T0 + t, **pool_bad))], config, state)
    assert kinds == ["action_changed"] and state.action in (GuardAction.BID_CUT, GuardAction.PAUSE)
    assert state.mode is TRIPPED


def test_forced_modes_and_bad_commands():
    state, events = force(MachineState(), "pool", "mia", "818 incident", T0, guard="roi", campaign_id="c1")
    assert state.mode is GuardMode.FORCED_POOL and events[0].actor == "mia"
    state2, _, kinds = play(minutes([3.0] * 50), state=state)
    assert state2.mode is GuardMode.FORCED_POOL and kinds == []
    back, _ = force(state, "auto", "mia", "over", T0 + 60, guard="roi", campaign_id="c1")
    assert back.mode is MODEL
    with pytest.raises(InvalidValue, match="mode"):
        force(state, "later", "mia", "x", T0, guard="roi", campaign_id="c1")
    with pytest.raises(InvalidValue, match="reason"):
        force(state, "pool", "mia", " ", T0, guard="roi", campaign_id="c1")


def test_state_survives_json():
    state = tripped_at()
    assert MachineState.from_json(state.to_json()) == state
    with pytest.raises(InvalidValue, match="guard_states.state"):
        MachineState.from_json({"mode": "sideways"})


def test_poisson_bound_matches_the_exact_chi_square_values():
    # Exact one-sided 99% upper bounds (scipy.stats.chi2.ppf(0.99, 2n + 2) / 2).
    for n, exact in ((0, 4.6052), (1, 6.6384), (10, 20.1447), (100, 125.8387)):
        assert poisson_upper(n, 0.99) == pytest.approx(exact, rel=0.003)


def test_sibling_guards_trip_on_their_own_signals():
    pacing = DEFAULTS.defaults["pacing"]
    state = MachineState(since_ts=T0)
    for i in range(pacing.machine.consecutive):
        state, events = evaluate("pacing", state, obs(spend_pace=1.5, bucket=T0 + 60 * i), pacing, T0 + 60 * i)
    assert state.mode is TRIPPED and events[0].cause == "spend_pace"
    early = MachineState(since_ts=T0)
    for i in range(5):  # the first hour's pace is noise
        early, _ = evaluate("pacing", early, obs(spend_pace=1.5, bucket=T0 + 60 * i, day_elapsed_s=600),
                            pacing, T0 + 60 * i)
    assert early.mode is MODEL
    inventory = DEFAULTS.defaults["inventory"]
    state = MachineState(since_ts=T0)
    for i in range(inventory.machine.consecutive):
        state, events = evaluate("inventory", state, obs(inventory_level=0.2, bucket=T0 + 60 * i), inventory,
                                 T0 + 60 * i)
    assert state.mode is TRIPPED and events[0].cause == "inventory_level"


# --- properties ----------------------------------------------------------------------------------

step_strategy = st.tuples(
    st.integers(1, 900),                                   # seconds until the next evaluation
    st.floats(0.5, 4.0),                                   # predicted ROI
    st.sampled_from([5.0, 100.0]),                         # predicted spend
    st.sampled_from([30, 30, 30, 30, 700]),                # data age (sometimes stale)
    st.booleans(),                                         # a new bucket?
)


@settings(max_examples=150, deadline=None)
@given(st.lists(step_strategy, min_size=1, max_size=120), st.booleans())
def test_never_two_transitions_inside_a_cooldown_nor_too_many_trips(steps, hold):
    config = replace(ROI, machine=replace(M, stale_action="hold" if hold else "pool"))
    state, t, bucket = MachineState(since_ts=T0), 0, T0
    trip_times, entered_tripped = [], None
    for dt, roi, spend, age, new_bucket in steps:
        t += dt
        bucket += 60 if new_bucket else 0
        before = state
        state, events = transition(state, obs(roi, bucket=bucket, pred_spend=spend, data_age_s=age), config, T0 + t)
        if state.mode is not before.mode:
            if entered_tripped is not None:
                assert T0 + t - entered_tripped[0] >= entered_tripped[1], "left TRIPPED inside its cooldown"
            entered_tripped = (T0 + t, state.cooldown_s) if state.mode is TRIPPED else None
        trip_times += [e.ts for e in events if e.kind == "tripped"]
    for i, ts in enumerate(trip_times):
        assert sum(1 for u in trip_times[i:] if u - ts < 3600) <= config.machine.max_trips_per_hour


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(FORCED_MODES)), st.lists(step_strategy, min_size=1, max_size=60))
def test_forced_modes_are_never_left_automatically(mode, steps):
    state = MachineState(mode=mode, since_ts=T0)
    t, bucket = 0, T0
    for dt, roi, spend, age, new_bucket in steps:
        t += dt
        bucket += 60 if new_bucket else 0
        state, events = transition(state, obs(roi, bucket=bucket, pred_spend=spend, data_age_s=age), ROI, T0 + t)
        assert state.mode is mode and events == []


def test_a_trip_takes_the_action_its_evidence_calls_for_else_the_configured_one():
    from control.domain import GuardAction
    from guards.config import MachineConfig
    from guards.machine import Check, MachineState, Signal, step

    config = MachineConfig(consecutive=1, action="pause")
    bad = Signal(evaluation_key=60, checks=(Check("r", True, 1),), healthy=False, data_age_s=0)
    state, _ = step(MachineState(), bad, config, 100, guard="g", campaign_id="c1")
    assert (state.mode.value, state.action) == ("tripped", GuardAction.PAUSE)
    cut = Signal(evaluation_key=60, checks=(Check("r", True, 1),), healthy=False, data_age_s=0,
                 action=GuardAction.BID_CUT, bid_factor=0.7)
    state, _ = step(MachineState(), cut, config, 100, guard="g", campaign_id="c1")
    assert (state.action, state.bid_factor) == (GuardAction.BID_CUT, 0.7)
    assert MachineState.from_json(state.to_json()) == state
