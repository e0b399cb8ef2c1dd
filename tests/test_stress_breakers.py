"""The stress report's per-breaker section: each breaker alone against the model arm, same seed."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from app.stress_breakers import SIBLINGS, ShadowHook, breakers_section
from app.stress_guard import SimGuardHook, make_guard_hook
from guards.config import parse_guard_settings
from sim.report import breakers_frame, write_report
from sim.scenario import Event
from sim.stress import run_arm, run_stress
from tests.sim_support import kit_for, small_scenario

MINUTES = 240


def scenario():
    """Six campaigns with a month of stock; c01's competitors cut prices 30% from 00:30 to 02:00, c02 sells out
    from 01:00 to 02:30."""
    return replace(small_scenario(stock_days=30.0), events=(
        Event("competitor_price_drop", 30, until_minute=120, campaigns=("c01",), drop=0.3),
        Event("stockout", 60, until_minute=150, campaigns=("c02",))))


@pytest.fixture(scope="module")
def section():
    kit = kit_for(6)
    hook = make_guard_hook(scenario(), kit.catalog)
    report = run_stress(scenario(), 3, kit.bidders, kit.history, kit.pool, guard_hook=hook, arms=("model",),
                        minutes=MINUTES)
    rows = breakers_section(report, scenario(), 3, kit, minutes=MINUTES, roi_hook=hook)
    return report, {r["guard"]: r for r in rows}


@pytest.mark.slow
def test_each_breaker_trips_and_restores_on_its_own_evidence(section):
    _, rows = section
    assert list(rows) == ["roi", *SIBLINGS]
    competitor = rows["competitor"]
    trips = [(e["campaign"], e["at_minute"], e["kind"]) for e in competitor["events"]]
    assert trips[0] == ("c01", 32, "trip") and trips[-1][::2] == ("c01", "restore") and 120 < trips[-1][1] < 130
    assert (competitor["interceptions"], competitor["restores"], competitor["method"]) == (1, 1, "own_arm")
    low = rows["low_stock"]
    assert [(e["campaign"], e["at_minute"], e["kind"]) for e in low["events"]] == [
        ("c02", 62, "trip"), ("c02", 151, "restore")]
    # An alert changes no traffic: its arm is the model arm, the loss it avoided exactly 0.
    assert (low["action"], low["method"], low["loss_avoided"]) == ("alert", "model_arm", 0.0)


@pytest.mark.slow
def test_the_shadow_pass_is_the_model_arm_to_the_yuan_and_an_own_arm_is_compared_with_it(section):
    report, rows = section
    kit = kit_for(6)
    settings = parse_guard_settings()
    shadow = run_arm(scenario(), 3, kit.bidders, kit.history, kit.pool, minutes=MINUTES,
                     guard_hook=ShadowHook(SimGuardHook(kit.catalog, settings, SIBLINGS)))
    margin = [c.gross_margin for c in kit.catalog.campaigns]
    profit = float((shadow.gmv.sum(axis=1) * margin - shadow.spend.sum(axis=1)).sum())
    assert profit == pytest.approx(report["arms"]["model"]["profit"], abs=0.01)
    own = run_arm(scenario(), 3, kit.bidders, kit.history, kit.pool, minutes=MINUTES,
                  guard_hook=SimGuardHook(kit.catalog, settings, ("competitor",)))
    own_profit = float((own.gmv.sum(axis=1) * margin - own.spend.sum(axis=1)).sum())
    assert rows["competitor"]["loss_avoided"] == pytest.approx(own_profit - profit, abs=0.01)
    assert rows["roi"]["loss_avoided"] == report["loss_avoided"]


@pytest.mark.slow
def test_the_report_files_carry_the_section(section, tmp_path):
    report, rows = section
    report = {**report, "breakers": list(rows.values())}
    paths = write_report(report, tmp_path)
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["breakers"][1]["guard"] == "pacing"
    assert list(breakers_frame(report)["guard"]) == ["roi", *SIBLINGS]
    assert "Breakers 熔断器" in paths["html"].read_text(encoding="utf-8")
    assert paths["breakers_csv"].exists()


def test_an_unknown_breaker_is_refused():
    with pytest.raises(ValueError, match="unknown breaker"):
        breakers_section({"loss_avoided": None}, scenario(), 1, kit_for(6), breakers=("roi",))
