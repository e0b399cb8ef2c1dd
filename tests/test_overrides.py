"""Four eyes, bounds, expiry and conflicts, through the control service on SQLite and PostgreSQL."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.domain import Campaign, InvalidValue, OverrideField, OverrideStatus, Role, User
from control.overrides import FourEyesViolation, OverrideBounds, OverrideStateError, check_bounds
from control.permissions import PermissionDenied
from store import repo
from tests.helpers import add_users, decision_frame, seed_campaigns

OPERATOR = User("olivia", "Olivia", Role.OPERATOR)
OPERATOR2 = User("oscar", "Oscar", Role.OPERATOR)
MANAGER = User("mia", "Mia", Role.MANAGER)
MANAGER2 = User("max", "Max", Role.MANAGER)
ENGINEER = User("ethan", "Ethan", Role.ENGINEER)


@pytest.fixture
def seeded(control, engine, clock):
    seed_campaigns(engine)
    add_users(engine, OPERATOR, OPERATOR2, MANAGER, MANAGER2, ENGINEER)
    repo.write_decisions(engine, decision_frame(6).assign(bid=1.0), received_ts=clock())
    return control


def propose(control, clock, actor=OPERATOR, value=1.5, field=OverrideField.BID, package="gifting"):
    return control.propose_override(actor, campaign_id="c1", audience_package=package, field=field,
                                    value=value, reason="CVR fell in gifting", expires_ts=clock() + 3600)


def test_operator_proposes_and_another_manager_approves(seeded, clock):
    proposal = propose(seeded, clock)
    assert proposal.status is OverrideStatus.PROPOSED and proposal.version == 1
    approved = seeded.approve_override(MANAGER, proposal.override_id, proposal.version, "ok")
    assert approved.status is OverrideStatus.APPROVED and approved.reviewed_by == "mia"
    assert approved.version == 2


def test_nobody_approves_their_own_override(seeded, clock):
    proposal = propose(seeded, clock, actor=MANAGER)
    with pytest.raises(FourEyesViolation):
        seeded.approve_override(MANAGER, proposal.override_id, proposal.version)
    assert seeded.approve_override(MANAGER2, proposal.override_id, proposal.version).status is OverrideStatus.APPROVED


@pytest.mark.parametrize("actor", [OPERATOR2, ENGINEER])
def test_only_managers_approve(seeded, clock, actor):
    proposal = propose(seeded, clock)
    with pytest.raises(PermissionDenied):
        seeded.approve_override(actor, proposal.override_id, proposal.version)


def test_engineer_cannot_propose(seeded, clock):
    with pytest.raises(PermissionDenied):
        propose(seeded, clock, actor=ENGINEER)


def test_bounds_refuse_absurd_bids_and_budgets(seeded, clock):
    with pytest.raises(InvalidValue, match="3.0x the model's bid"):
        propose(seeded, clock, value=3.5)  # the model bid 1.0
    with pytest.raises(InvalidValue, match="cap"):
        propose(seeded, clock, field=OverrideField.BUDGET, value=50_000, package=None)
    assert seeded.overrides() == []


def test_approved_override_expires_by_itself(seeded, clock):
    proposal = propose(seeded, clock)
    seeded.approve_override(MANAGER, proposal.override_id, proposal.version)
    clock.advance(3599)
    assert seeded.expire_overrides() == []
    clock.advance(1)
    expired = seeded.expire_overrides()
    assert [o.status for o in expired] == [OverrideStatus.EXPIRED]
    assert seeded.overrides([OverrideStatus.APPROVED]) == []


def test_editing_a_proposal_resets_its_review(seeded, clock):
    proposal = propose(seeded, clock)
    rejected = seeded.reject_override(MANAGER, proposal.override_id, proposal.version, "too high")
    edited = seeded.edit_override(OPERATOR, rejected.override_id, rejected.version, value=1.2,
                                  reason="lower", expires_ts=clock() + 600)
    assert edited.status is OverrideStatus.PROPOSED and edited.reviewed_by is None
    with pytest.raises(OverrideStateError):
        approved = seeded.approve_override(MANAGER, edited.override_id, edited.version)
        seeded.edit_override(OPERATOR, approved.override_id, approved.version, value=1.1, reason="x",
                             expires_ts=clock() + 600)


def test_concurrent_approval_loser_gets_a_conflict(seeded, clock):
    proposal = propose(seeded, clock)
    seeded.reject_override(MANAGER2, proposal.override_id, proposal.version, "no")
    with pytest.raises(repo.ConflictError, match="changed by someone else"):
        seeded.approve_override(MANAGER, proposal.override_id, proposal.version)
    assert seeded.overrides()[0].status is OverrideStatus.REJECTED


def test_every_step_is_audited(seeded, clock):
    proposal = propose(seeded, clock)
    seeded.approve_override(MANAGER, proposal.override_id, proposal.version)
    with seeded.engine.connect() as conn:
        actions = [(e.actor, e.action) for e in repo.load_audit(conn, entity="override")]
    assert actions == [("olivia", "override.propose"), ("mia", "override.approve")]
    assert seeded.verify_audit().ok


CAMPAIGN = Campaign("c1", "n", "beauty", daily_budget=1000, budget_cap=3000, avg_order_value=100,
                    gross_margin=0.3)
BOUNDS = OverrideBounds(max_bid_multiple=3.0, max_bid_abs=50.0, min_bid=0.01)


@given(value=st.floats(0, 200, allow_nan=False), model_bid=st.floats(0.01, 40))
def test_bid_bounds_property(value, model_bid):
    ok = BOUNDS.min_bid <= value <= min(BOUNDS.max_bid_abs, BOUNDS.max_bid_multiple * model_bid)
    try:
        check_bounds(OverrideField.BID, value, model_bid=model_bid, campaign=CAMPAIGN, bounds=BOUNDS)
        assert ok
    except InvalidValue as exc:
        assert not ok and exc.field == "value" and exc.value == value


@given(value=st.floats(-10, 10_000, allow_nan=False))
def test_budget_bounds_property(value):
    ok = 0 < value <= CAMPAIGN.budget_cap
    try:
        check_bounds(OverrideField.BUDGET, value, model_bid=None, campaign=CAMPAIGN, bounds=BOUNDS)
        assert ok
    except InvalidValue:
        assert not ok
