"""The guard in `bidlens stress`: the scenario figures the issue asks for (simulated day, slow)."""

from __future__ import annotations

import pytest

from guards.sim_driver import make_guard_driver
from sim.kit import prepare
from sim.scenario import load_scenario
from sim.stress import run_stress

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("stress")


def stress(name: str, seed: int, data_dir, minutes: int = 1440):
    scenario = load_scenario(name)
    kit = prepare(scenario, data_dir)
    driver = make_guard_driver(scenario, kit.catalog)
    report = run_stress(scenario, seed, kit.bidders, kit.history, kit.pool, guard_driver=driver, arms=(),
                        minutes=minutes)
    return report, driver


def test_818_trips_the_affected_campaigns_and_avoids_loss(data_dir):
    report, driver = stress("818", 1, data_dir, minutes=240)  # the first four hours
    first = {}
    for trip in report["trips"]:
        first.setdefault(trip["campaign"], trip["at_minute"])
    assert report["false_trips"] == 0
    # The model over-promises on every campaign from midnight (true ROI below the floor from minute
    # 0-1): the model-wide calibration check, pooled over all of them, trips every campaign within
    # the first quarter hour, half of them within 8 minutes (measured: 6-12, median 7).
    minutes = sorted(first.values())
    assert len(minutes) == len(driver.driver.campaign_ids)
    assert minutes[-1] <= 15 and minutes[len(minutes) // 2] <= 8
    assert report["arms"]["guarded"]["roi"] > 2.0
    assert report["loss_avoided"] > 0
    assert len(driver.trips) <= len(report["trips"])  # trips proper; the rest are failed probations


def test_normal_day_has_no_false_trips(data_dir):
    report, _ = stress("normal", 1, data_dir)
    assert report["false_trips"] == 0
