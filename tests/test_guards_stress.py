"""The guard in `bidlens stress`: the scenario figures the issue asks for (simulated day, slow)."""

from __future__ import annotations

import numpy as np
import pytest

from app.stress_guard import make_guard_hook
from sim.kit import prepare
from sim.scenario import load_scenario
from sim.stress import run_arm, run_stress

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("stress")


def stress(name: str, seed: int, data_dir, minutes: int = 1440):
    scenario = load_scenario(name)
    kit = prepare(scenario, data_dir)
    hook = make_guard_hook(scenario, kit.catalog)
    report = run_stress(scenario, seed, kit.bidders, kit.history, kit.pool, guard_hook=hook, arms=(),
                        minutes=minutes)
    return report, hook


def test_818_trips_the_affected_campaigns_and_avoids_loss(data_dir):
    report, hook = stress("818", 1, data_dir, minutes=240)  # the first four hours
    first = {}
    for trip in report["trips"]:
        first.setdefault(trip["campaign"], trip)
    # The model-wide calibration check trips every campaign whose calibrated ROI bound is below the floor;
    # one of them (c28, at minute 3) was still above it then (measured on the whole day: 3 false trips).
    assert report["false_trips"] <= 1
    assert {t["kind"] for t in first.values()} == {"trip"}
    # The model over-promises on every campaign from midnight (true ROI below the floor from minute
    # 0-1): the model-wide calibration check, pooled over all of them, trips most campaigns within
    # minutes (measured 2026-12-02: 35 of 40 at minutes 3-5, 34 of them within 5 minutes of their
    # first sustained crossing). The rest over-promise more than the pooled calibration shows.
    early = [t for t in first.values() if t["at_minute"] <= 11]
    assert len(early) >= 30
    assert sum(1 for t in early if t["detection_delay_min"] is not None and t["detection_delay_min"] <= 7) >= 28
    assert report["arms"]["guarded"]["roi"] > 2.0
    assert report["loss_avoided"] > 0
    trips_proper = [t for t in report["trips"] if t["kind"] == "trip"]
    assert len(hook.trips) == len(trips_proper)
    assert report["probation_failures"] == len(report["trips"]) - len(trips_proper)


@pytest.mark.parametrize("seed", [1, 3])  # seed 3 had a false trip before order values' spread was counted
def test_normal_day_has_no_false_trips(data_dir, seed):
    report, _ = stress("normal", seed, data_dir)
    assert report["false_trips"] == 0


def test_the_guarded_arm_keeps_each_campaigns_highest_evidence_of_the_day(data_dir):
    """The guard bench judges healthy campaign-days by how near their sequential evidence came to a trip."""
    scenario = load_scenario("normal")
    kit = prepare(scenario, data_dir)
    hook = make_guard_hook(scenario, kit.catalog)
    seen = np.zeros(len(kit.catalog.campaigns))

    class Watch:
        def guard_states(self, now_ts, last):
            states = hook.guard_states(now_ts, last)
            np.maximum(seen, [o.cusum for o in hook.evaluator.observed], out=seen)
            return states

    run_arm(scenario, 3, kit.bidders, kit.history, kit.pool, guard_hook=Watch(), minutes=90)
    assert np.array_equal(hook.peak_cusum, seen) and (seen > 0).any()
