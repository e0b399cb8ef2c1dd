"""The launch gate's operations on a real store (SQLite file and PostgreSQL): the lifecycle, four eyes,
rollback, the admin's switch, the manager's thresholds, audit and alerts, and the guarded rollout as
the guard worker steps it."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import select

from app.current_policy import current_policy
from app.launch import Launches, servable_versions, version_prior
from control.config import Settings
from control.domain import ConflictError, InvalidValue
from control.launch import LaunchStateError, LaunchStatus, VersionStatus
from control.overrides import FourEyesViolation
from control.permissions import PermissionDenied
from control.rollout import in_share
from guards.alerts import AlertKind
from guards.alerts.core import AlertRecord
from guards.alerts.templates import Style, render
from guards.config import load_guard_settings
from guards.observe import load_calibration_prior
from guards.worker import GuardWorker
from store import launch_repo as lr
from store import repo
from store import schema as s
from tests.helpers import PROMOTION_START, seed_campaigns
from tests.launch_support import (
    ADMIN,
    ENGINEER,
    FAILING,
    MANAGER,
    MANAGER2,
    OPERATOR,
    add_people,
    gate_report,
    register,
)


@pytest.fixture
def launches(engine, clock):
    add_people(engine)
    return Launches(engine, clock, Settings())


def audit_actions(engine) -> list[str]:
    with engine.connect() as conn:
        return [e.action for e in repo.load_audit(conn)]


def alerts(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(s.alerts.c.kind, s.alerts.c.severity, s.alerts.c.payload)
                            .order_by(s.alerts.c.alert_id)).all()


def status(engine, version: str) -> VersionStatus:
    with engine.connect() as conn:
        return lr.get_model(conn, version).status


def launch_first(launches, version="v1"):
    """v1 gated and launched: the serving version the next launches replace."""
    launches.record_gate(ENGINEER, version, gate_report(version))
    first = launches.request_launch(ENGINEER, version, "the first model under the gate")
    return launches.approve_launch(MANAGER, first.launch_id, first.version)


def test_a_launch_takes_two_people_and_a_failing_gate_a_written_reason(engine, launches):
    register(engine, "v1", "v2")
    with pytest.raises(LaunchStateError, match="gated"):
        launches.request_launch(ENGINEER, "v1", "not gated yet")
    launch_first(launches)
    assert status(engine, "v1") is VersionStatus.SERVING
    gate = launches.record_gate(None, "v2", gate_report("v2", "fail", FAILING, prior={"k": 0.77, "orders": 150.0}))
    assert status(engine, "v2") is VersionStatus.GATED
    with engine.connect() as conn:
        assert version_prior(conn, "v2").k == 0.77
        assert "<html" in lr.gate_html(conn, gate.gate_id) and "818" in lr.gate_html(conn, gate.gate_id)
    with pytest.raises(PermissionDenied):
        launches.request_launch(OPERATOR, "v2", "operators do not launch models")
    request = launches.request_launch(ENGINEER, "v2", "it sells more", rollout_share=1.0)
    assert request.previous_version == "v1" and request.verdict.value == "fail"
    with pytest.raises(LaunchStateError, match="waiting"):
        launches.request_launch(MANAGER, "v2", "again")
    with pytest.raises(PermissionDenied):
        launches.approve_launch(ENGINEER, request.launch_id, request.version)
    with pytest.raises(InvalidValue) as refused:
        launches.approve_launch(MANAGER, request.launch_id, request.version, "")
    assert refused.value.field == "comment"
    with pytest.raises(ConflictError):
        launches.approve_launch(MANAGER, request.launch_id, request.version + 1, "stale page")
    live = launches.approve_launch(MANAGER, request.launch_id, request.version, "818 needs volume; guard armed")
    assert live.status is LaunchStatus.LIVE and live.reviewed_by == "boss"
    assert (status(engine, "v1"), status(engine, "v2")) == (VersionStatus.APPROVED, VersionStatus.SERVING)
    with engine.connect() as conn:
        approvals = [e for e in repo.load_audit(conn) if e.action == "launch.approve"]
        assert [e.after["against_failing_gate"] for e in approvals] == [False, True]
        assert lr.get_launch(conn, 1).status is LaunchStatus.SUPERSEDED
    kinds = alerts(engine)
    assert [(k, sev) for k, sev, _ in kinds] == [("model_launched", "info"), ("model_launched", "critical")]
    assert "FAILING" in kinds[-1][2]["detail"]["en"] and "818 needs volume" in kinds[-1][2]["detail"]["en"]


def test_the_requester_never_approves_their_own_launch(engine, launches):
    register(engine, "v1")
    launches.record_gate(MANAGER, "v1", gate_report("v1"))
    own = launches.request_launch(MANAGER, "v1", "I want it")
    with pytest.raises(FourEyesViolation):
        launches.approve_launch(MANAGER, own.launch_id, own.version)
    rejected = launches.reject_launch(MANAGER2, own.launch_id, own.version, "not this week")
    assert rejected.status is LaunchStatus.REJECTED and status(engine, "v1") is VersionStatus.GATED
    again = launches.request_launch(ENGINEER, "v1", "now?")
    assert launches.withdraw_launch(ENGINEER, again.launch_id, again.version).status is LaunchStatus.WITHDRAWN
    assert audit_actions(engine)[-4:] == ["launch.request", "launch.reject", "launch.request", "launch.withdraw"]


def test_rollback_is_one_action_and_the_previous_version_serves_again(engine, launches, clock):
    register(engine, "v1", "v2")
    launch_first(launches)
    launches.record_gate(ENGINEER, "v2", gate_report("v2"))
    request = launches.request_launch(ENGINEER, "v2", "better")
    launches.approve_launch(MANAGER, request.launch_id, request.version)
    with pytest.raises(PermissionDenied):
        launches.rollback(OPERATOR, "operators use the kill switch")
    back = launches.rollback(ENGINEER, "its calibration drifted in the first hour")
    assert back.status is LaunchStatus.ROLLED_BACK
    assert (status(engine, "v1"), status(engine, "v2")) == (VersionStatus.SERVING, VersionStatus.GATED)
    with engine.connect() as conn:
        assert lr.live_launch(conn).model_version == "v1" and lr.serving_version(conn) == "v1"
    assert audit_actions(engine)[-1] == "launch.rollback"
    assert alerts(engine)[-1][0] == "model_rolled_back"
    with pytest.raises(LaunchStateError, match="no version to roll back to"):
        launches.rollback(MANAGER, "v1 replaced nothing")
    # Retired: never to serve again, and never gated again.
    launches.retire(MANAGER, "v2", "superseded by v3")
    with pytest.raises(LaunchStateError, match="retired"):
        launches.record_gate(ENGINEER, "v2", gate_report("v2"))


def test_only_approved_versions_may_serve_unless_an_admin_switched_the_gate_off(engine, launches):
    register(engine, "v1", "v2")
    with engine.connect() as conn:
        assert servable_versions(conn) == frozenset()
    launch_first(launches)
    with engine.connect() as conn:
        assert servable_versions(conn) == {"v1"}
    with pytest.raises(PermissionDenied):
        launches.set_gate(MANAGER, False, "managers answer for the money, admins for the deployment")
    with pytest.raises(InvalidValue):
        launches.set_gate(ADMIN, False, " ")
    launches.set_gate(ADMIN, False, "migrating the bidder this week")
    with engine.connect() as conn:
        assert servable_versions(conn) is None
        entry = [e for e in repo.load_audit(conn) if e.action == "launch_gate.switch"][-1]
    assert entry.actor == "root" and entry.after == {"enabled": False, "reason": "migrating the bidder this week"}


def test_the_gate_thresholds_are_the_managers(engine, launches):
    with pytest.raises(PermissionDenied):
        launches.set_thresholds(ENGINEER, {"calibration_tolerance": 0.3}, "looser")
    with pytest.raises(InvalidValue) as exc:
        launches.set_thresholds(MANAGER, {"max_objective_share": 2.0}, "typo")
    assert exc.value.field == "gate_thresholds.max_objective_share"
    after = launches.set_thresholds(MANAGER, {"calibration_tolerance": 0.1, "roi_margin": 0.2}, "818 is coming")
    assert launches.thresholds(ENGINEER)[0] == after and after.calibration_tolerance == 0.1
    assert audit_actions(engine)[-1] == "gate.thresholds_set"


# --- the guarded rollout -----------------------------------------------------------------------

SLOTS = [(c, p) for c in ("c1", "c2", "c3") for p in ("gifting", "pets")]


def _rollout_share() -> float:
    """A share that puts some of the six test slots on the new version and keeps some on the old."""
    for share in (0.25, 0.5, 0.75):
        inside = sum(in_share(c, p, share) for c, p in SLOTS)
        if 0 < inside < len(SLOTS):
            return share
    raise AssertionError("no share splits the test slots")


def _traffic(engine, start: int, minutes: int, new_value_ratio: float) -> None:
    """Decisions by the version the policy names for each slot, and their outcomes: the old version's
    value predictions hold (GMV = predicted), the new one's realise `new_value_ratio` of them."""
    with engine.connect() as conn:
        live = lr.live_launch(conn)
    rows, outs = [], []
    for m in range(minutes):
        bucket = start + 60 * m
        for c, p in SLOTS:
            new = in_share(c, p, live.share)
            version = live.model_version if new else live.previous_version
            rows.append({"campaign_id": c, "audience_package": p, "bucket_ts": bucket, "model_version": version,
                         "bid": 1.0, "budget_share": 0.5, "audience_on": True, "pred_ctr": 0.02, "pred_cvr": 0.03,
                         "pred_value": 2.4, "pred_roi": 2.4})
            outs.append({"campaign_id": c, "audience_package": p, "bucket_ts": bucket, "known_ts": bucket + 9 * 3600,
                         "impressions": 400, "clicks": 20, "spend": 20.0, "orders": 5,
                         "gmv": 20 * 2.4 * (new_value_ratio if new else 1.0)})
    repo.write_decisions(engine, pd.DataFrame(rows), received_ts=start)
    repo.write_outcomes(engine, pd.DataFrame(outs))


def _rollout(engine, launches, clock):
    """v2 launched on a share of the slots beside v1, twelve hours before the clock's start; the worker
    that steps it. The tests then play two hours of traffic whose outcomes are all known by now."""
    clock.advance(-12 * 3600)
    seed_campaigns(engine)
    register(engine, "v1", "v2")
    launch_first(launches)
    launches.record_gate(ENGINEER, "v2", gate_report("v2"))
    share = _rollout_share()
    request = launches.request_launch(ENGINEER, "v2", "try it on a share first", rollout_share=share)
    live = launches.approve_launch(MANAGER, request.launch_id, request.version)
    assert live.rolling_out and live.share == share
    assert (status(engine, "v1"), status(engine, "v2")) == (VersionStatus.SERVING, VersionStatus.SERVING)
    clock.advance(12 * 3600)
    return GuardWorker(engine, clock, load_guard_settings(""), rollout=launches.rollout_tick)


def test_a_rollout_serves_its_share_of_slots_and_widens_on_evidence(engine, launches, clock):
    worker = _rollout(engine, launches, clock)
    with engine.connect() as conn:
        live = lr.live_launch(conn)
    _traffic(engine, PROMOTION_START - 12 * 3600, 120, new_value_ratio=1.0)
    with engine.connect() as conn:
        policy = current_policy(conn, PROMOTION_START - 12 * 3600 + 120 * 60, {})  # as the traffic ended
    expected = ["v2" if in_share(c, p, live.share) else "v1" for c, p in zip(policy["campaign_id"],
                                                                             policy["audience_package"], strict=True)]
    assert policy["model_version"].tolist() == expected and set(expected) == {"v1", "v2"}
    decision = worker.tick().rollout
    assert decision.action == "widen" and decision.share_after > live.share
    with engine.connect() as conn:
        assert lr.live_launch(conn).share == decision.share_after
        assert load_calibration_prior(conn) is None  # v2 was gated without a measured calibration
    assert audit_actions(engine)[-1] == "launch.widen"
    assert worker.tick().rollout.reason == "too_soon"  # the evidence holds, but the new share is fresh
    clock.advance(1800)
    assert worker.tick().rollout.action == "widen"


def test_a_rollout_the_evidence_goes_against_is_rolled_back_by_the_worker(engine, launches, clock):
    worker = _rollout(engine, launches, clock)
    _traffic(engine, PROMOTION_START - 12 * 3600, 120, new_value_ratio=0.5)
    decision = worker.tick().rollout
    assert decision.action == "rollback" and decision.reason == "significantly_worse"
    assert (status(engine, "v1"), status(engine, "v2")) == (VersionStatus.SERVING, VersionStatus.GATED)
    with engine.connect() as conn:
        entry = repo.load_audit(conn)[-1]
        assert lr.live_launch(conn).model_version == "v1"
    assert (entry.action, entry.actor) == ("launch.rollback", "launch-rollout")
    assert worker.tick().rollout is None  # nothing rolls out any more


@pytest.mark.parametrize("kind, zh, en", [(AlertKind.MODEL_LAUNCHED, "模型版本已上线", "Model version launched"),
                                          (AlertKind.MODEL_ROLLED_BACK, "模型版本已回滚", "Model version rolled back")])
def test_launch_alerts_read_in_both_languages(kind, zh, en):
    detail = {"zh": "v2 在闸门判定“不通过”的情况下由 boss 批准上线", "en": "v2 launched by boss against a FAILING gate"}
    record = AlertRecord(alert_id=1, event_key="e1", channel="ops", kind=kind, severity="critical", campaign_id=None,
                         guard=None, condition_key="launch:2:live:1.0", status="pending", occurred_ts=1_787_000_000,
                         created_ts=1_787_000_000, next_attempt_ts=1_787_000_000,
                         payload={"launch_id": 2, "model_version": "v2", "verdict": "fail", "detail": detail})
    text = render([record], "ops-1", Style(language="both", fmt="text"))
    assert zh in text and en in text and detail["zh"] in text and detail["en"] in text
