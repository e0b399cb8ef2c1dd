"""The launch gate's pure core: the verdict against the thresholds, the lifecycle under four eyes, the
guard's prior, the guarded rollout's slots and steps."""

from __future__ import annotations

import pytest

from control import launch as lc
from control.domain import InvalidValue, Role, User
from control.gate import (
    PRIOR_MAX_ORDERS,
    ArmResult,
    CalibrationResult,
    GateFindings,
    GateThresholds,
    ObjectiveResult,
    ScenarioResult,
    Verdict,
    calibration_prior,
    reason_text,
    verdict,
)
from control.overrides import FourEyesViolation
from control.permissions import PermissionDenied
from control.rollout import (
    ROLLOUT_STEPS,
    RolloutConfig,
    VersionEvidence,
    in_share,
    next_share,
    rollout_step,
    slot_versions,
)

ENGINEER = User("eng", "Ethan", Role.ENGINEER)
MANAGER = User("boss", "Mia", Role.MANAGER)
MANAGER2 = User("boss2", "Max", Role.MANAGER)
OPERATOR = User("op", "Olivia", Role.OPERATOR)
ADMIN = User("root", "Ada", Role.ADMIN)
GOOD_CAL = CalibrationResult(0.97, 0.93, 1.01, 5000.0)


def scenario(name: str, roi: float, *, below: int = 0, profit: float = 100.0, serving: ArmResult | None = None,
             pool: ArmResult | None = None) -> ScenarioResult:
    return ScenarioResult(name, 1, 2.0, ArmResult(roi, profit, below), serving, pool)


def test_a_healthy_version_passes_and_the_818_model_fails_on_roi_and_objective():
    ok, reasons = verdict(GateFindings((scenario("normal", 2.9),), "", GOOD_CAL, ObjectiveResult(1000, 0.01, 0.02)),
                          GateThresholds())
    assert ok is Verdict.PASS and reasons == ()
    bad, reasons = verdict(GateFindings((scenario("normal", 2.1), scenario("818", 1.76)), "",
                                        CalibrationResult(0.77, 0.75, 0.79, 8000.0),
                                        ObjectiveResult(1000, 0.89, 0.91)), GateThresholds())
    assert bad is Verdict.FAIL
    codes = [r.code for r in reasons]
    assert codes == ["scenario_roi_below_floor", "objective_below_floor", "calibration_off"]
    assert reasons[0].figures["scenario"] == "818" and reasons[0].figures["roi"] == 1.76
    assert "818" in reason_text(reasons[0], "en") and "低于底线" in reason_text(reasons[0], "zh")
    assert "89%" in reason_text(reasons[1], "en")


def test_warnings_name_what_is_doubtful_and_the_thresholds_are_the_managers():
    findings = GateFindings((scenario("stockout", 2.4, below=6, profit=80.0, serving=ArmResult(2.6, 100.0, 2)),),
                            "", CalibrationResult(0.82, 0.6, 1.1, 150.0), ObjectiveResult(10, 0.0, 0.0))
    level, reasons = verdict(findings, GateThresholds())
    assert level is Verdict.WARN
    assert [r.code for r in reasons] == ["campaigns_below_floor", "profit_below_serving", "calibration_uncertain"]
    # A stricter manager: ROI must clear the floor by 0.5 -> fail.
    level, reasons = verdict(findings, GateThresholds(roi_margin=0.5))
    assert level is Verdict.FAIL and reasons[0].figures["floor"] == 2.5
    # Not stress-tested (a model with its own features): fail unless the manager allows it.
    unplayed = GateFindings((), "its features differ", GOOD_CAL, None)
    assert verdict(unplayed, GateThresholds())[0] is Verdict.FAIL
    assert verdict(unplayed, GateThresholds(require_stress=False))[0] is Verdict.WARN
    # No history: calibration not measured is a warning, never a silent pass.
    assert [r.code for r in verdict(GateFindings((scenario("normal", 3.0),)), GateThresholds())[1]] == \
        ["calibration_not_measured"]


def test_thresholds_refuse_bad_values_naming_the_key():
    with pytest.raises(InvalidValue) as exc:
        GateThresholds(calibration_tolerance=1.5)
    assert exc.value.field == "gate_thresholds.calibration_tolerance"
    with pytest.raises(InvalidValue, match="unknown"):
        GateThresholds.from_json({"calibration_tolerence": 0.1})
    with pytest.raises(InvalidValue, match="whole number"):
        GateThresholds(max_extra_campaigns_below_floor=2.5)
    assert GateThresholds.from_json(GateThresholds(max_objective_share=0.2).as_json()).max_objective_share == 0.2


def test_the_prior_is_the_measured_calibration_with_a_bounded_weight():
    assert calibration_prior(CalibrationResult(0.77, 0.75, 0.79, 8000.0)) == {"k": 0.77, "orders": PRIOR_MAX_ORDERS}
    assert calibration_prior(CalibrationResult(0.9, 0.5, 1.4, 40.0)) == {"k": 0.9, "orders": 40.0}
    assert calibration_prior(CalibrationResult(None, None, None, 0.0)) is None


def gated_model(name="v2", verdict_=Verdict.PASS) -> lc.ModelVersion:
    return lc.gated(lc.ModelVersion(name), gate_id=7, verdict=verdict_)


def request(model=None, **kw) -> lc.Launch:
    args = dict(launch_id=1, serving="v1", reason="better calibrated", rollout_share=1.0, now_ts=100, pending=False)
    return lc.request_launch(ENGINEER, model or gated_model(), **{**args, **kw})


def test_lifecycle_four_eyes_and_a_failing_gate_needs_a_written_reason():
    model = gated_model()
    assert model.status is lc.VersionStatus.GATED
    with pytest.raises(lc.LaunchStateError, match="gated"):
        lc.request_launch(ENGINEER, lc.ModelVersion("v3"), launch_id=1, serving=None, reason="r",
                          rollout_share=1.0, now_ts=1, pending=False)
    with pytest.raises(PermissionDenied):
        lc.request_launch(OPERATOR, model, launch_id=1, serving="v1", reason="r", rollout_share=1.0, now_ts=1,
                          pending=False)
    with pytest.raises(InvalidValue) as exc:
        request(rollout_share=1.5)
    assert exc.value.field == "rollout_share"
    launch = request()
    with pytest.raises(FourEyesViolation):
        lc.approve_launch(request(launch_id=2), User("eng", "Ethan", Role.MANAGER), 200, "", serving="v1", model=model)
    with pytest.raises(PermissionDenied):
        lc.approve_launch(launch, ENGINEER, 200, "", serving="v1", model=model)
    with pytest.raises(lc.LaunchStateError, match="serving version changed"):
        lc.approve_launch(launch, MANAGER, 200, "", serving="v0", model=model)
    live = lc.approve_launch(launch, MANAGER, 200, "", serving="v1", model=model)
    assert live.status is lc.LaunchStatus.LIVE and live.share == 1.0 and live.reviewed_by == "boss"
    assert lc.statuses_after_approval(live) == {"v2": lc.VersionStatus.SERVING, "v1": lc.VersionStatus.APPROVED}
    failing = request(gated_model(verdict_=Verdict.FAIL))
    with pytest.raises(InvalidValue) as exc:
        lc.approve_launch(failing, MANAGER, 200, "  ", serving="v1", model=gated_model(verdict_=Verdict.FAIL))
    assert exc.value.field == "comment"
    assert lc.approve_launch(failing, MANAGER, 200, "the promotion needs it; guard armed", serving="v1",
                             model=gated_model(verdict_=Verdict.FAIL)).status is lc.LaunchStatus.LIVE
    with pytest.raises(lc.LaunchStateError, match="gated again"):
        lc.approve_launch(launch, MANAGER, 200, "", serving="v1", model=lc.gated(model, 8, Verdict.PASS))


def test_rollback_is_one_step_and_needs_something_to_go_back_to():
    live = lc.approve_launch(request(), MANAGER, 200, "", serving="v1", model=gated_model())
    back = lc.rollback(live, ENGINEER, 300, "calibration drifted")
    assert back.status is lc.LaunchStatus.ROLLED_BACK
    assert lc.statuses_after_rollback(back) == {"v2": lc.VersionStatus.GATED, "v1": lc.VersionStatus.SERVING}
    with pytest.raises(PermissionDenied):
        lc.rollback(live, OPERATOR, 300, "no")
    first = lc.approve_launch(request(serving=None), MANAGER, 200, "", serving=None, model=gated_model())
    with pytest.raises(lc.LaunchStateError, match="nothing"):
        lc.rollback(first, MANAGER, 300, "r")
    with pytest.raises(lc.LaunchStateError, match="serving"):
        lc.retire(lc.ModelVersion("v2", lc.VersionStatus.SERVING), MANAGER)
    assert lc.retire(gated_model(), MANAGER).status is lc.VersionStatus.RETIRED
    with pytest.raises(lc.LaunchStateError, match="retired"):
        lc.gated(lc.ModelVersion("v9", lc.VersionStatus.RETIRED), 1, Verdict.PASS)


def test_withdraw_and_reject():
    launch = request()
    assert lc.withdraw_launch(launch, ENGINEER, 150).status is lc.LaunchStatus.WITHDRAWN
    with pytest.raises(PermissionDenied):
        lc.withdraw_launch(launch, User("eng2", "E2", Role.ENGINEER), 150)
    assert lc.reject_launch(launch, MANAGER2, 150, "calibration too thin").status is lc.LaunchStatus.REJECTED
    with pytest.raises(lc.LaunchStateError, match="already"):
        request(pending=True)


def test_a_rollout_share_is_a_fixed_subset_of_slots_that_grows():
    slots = [(f"c{c:02d}", p) for c in range(40) for p in ("pets", "beauty", "gifting", "moving")]
    counts = []
    previous = set()
    for share in ROLLOUT_STEPS:
        inside = {s for s in slots if in_share(*s, share)}
        assert previous <= inside  # a slot never goes back to the old version as the share grows
        previous = inside
        counts.append(len(inside))
    assert counts[-1] == len(slots) and 0 < counts[1] < counts[3] < len(slots)
    assert abs(counts[3] / len(slots) - 0.5) < 0.1
    versions = slot_versions([c for c, _ in slots], [p for _, p in slots], "v2", "v1", 0.25)
    assert set(versions) == {"v1", "v2"} and (versions == "v2").sum() == counts[2]
    assert next_share(0.05) == 0.1 and next_share(0.5) == 1.0 and next_share(0.07) == 0.1


def test_the_rollout_widens_on_evidence_holds_without_it_and_rolls_back_a_worse_version():
    prev = VersionEvidence(0.96, 0.92, 1.0, 4000.0)
    config = RolloutConfig(tolerance=0.15, min_orders=100, min_step_s=1800)
    assert rollout_step(0.1, 0, 600, VersionEvidence(0.9, 0.5, 1.4, 40.0), prev, config).action == "hold"
    assert rollout_step(0.1, 0, 600, VersionEvidence(0.95, 0.9, 1.0, 900.0), prev, config).reason == "too_soon"
    widen = rollout_step(0.1, 0, 2000, VersionEvidence(0.95, 0.9, 1.0, 900.0), prev, config)
    assert (widen.action, widen.share_after) == ("widen", 0.25)
    worse = rollout_step(0.1, 0, 600, VersionEvidence(0.6, 0.55, 0.66, 900.0), prev, config)
    assert (worse.action, worse.share_after) == ("rollback", 0.0)  # no need to wait to go back
    unclear = rollout_step(0.1, 0, 2000, VersionEvidence(0.8, 0.7, 0.92, 300.0), prev, config)
    assert unclear.action == "hold" and unclear.reason == "undecided"
