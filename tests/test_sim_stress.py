import json
from pathlib import Path

import numpy as np
import pytest
import sim_support
from sim_support import full_kit, kit_for, small_scenario

from cli.main import main
from control.domain import GuardMode, GuardState
from sim.report import report_json, write_report
from sim.scenario import dump_scenario, load_scenario
from sim.stress import first_sustained_crossing, judge_trip, run_stress


def stress(scenario, seed, minutes=300, **kw):
    kit = kit_for(scenario.world.campaigns)
    return run_stress(scenario, seed, kit.bidders, kit.history, kit.pool, minutes=minutes, **kw)


class ScriptedGuard:
    """A stand-in guard hook: trips c01 at minute 100 (probation 150-159, failed: back at 160) and c02
    at minute 200; records its calls."""

    def __init__(self):
        self.calls = []

    def guard_states(self, now_ts, last):
        self.calls.append((now_ts, None if last is None else last.minute))
        minute = len(self.calls) - 1
        states = {}
        if minute >= 100:
            on_probation = 150 <= minute < 160
            states["c01"] = GuardState("c01", GuardMode.PROBATION if on_probation else GuardMode.TRIPPED,
                                       canary_share=0.1 if on_probation else 0.0, event_id=1)
        if minute >= 200:
            states["c02"] = GuardState("c02", GuardMode.TRIPPED, event_id=2)
        return states


def test_same_seed_same_report_byte_for_byte(tmp_path):
    scenario = small_scenario()
    a = stress(scenario, 4)
    b = stress(scenario, 4)
    assert report_json(a) == report_json(b)
    pa, pb = write_report(a, tmp_path / "a"), write_report(b, tmp_path / "b")
    for key in pa:
        assert pa[key].read_bytes() == pb[key].read_bytes(), key
    assert report_json(stress(scenario, 5)) != report_json(a)


def test_the_report_follows_the_documented_contract():
    report = stress(small_scenario(), 4)
    assert set(report) >= {"scenario", "seed", "arms", "trips", "false_trips", "loss_avoided"}
    assert set(report["arms"]) == {"model", "rule_pool"}  # no guard hook: no guarded arm
    for arm in report["arms"].values():
        assert set(arm) >= {"spend", "gmv", "roi", "profit", "by_hour"}
        assert len(arm["by_hour"]) == 24
        assert sum(h["spend"] for h in arm["by_hour"]) == pytest.approx(arm["spend"], abs=0.5)
        assert arm["roi"] == pytest.approx(arm["gmv"] / arm["spend"], abs=1e-4)
    assert report["trips"] == [] and report["false_trips"] == 0 and report["loss_avoided"] is None


def test_a_guard_hook_is_called_every_bucket_and_its_trips_are_reported():
    hook = ScriptedGuard()
    report = stress(small_scenario(), 4, guard_hook=hook)
    assert len(hook.calls) == 300
    assert hook.calls[0][1] is None and hook.calls[1][1] == 0  # gets the previous bucket's result
    assert hook.calls[1][0] - hook.calls[0][0] == 60
    assert [(t["campaign"], t["at_minute"], t["kind"]) for t in report["trips"]] == [
        ("c01", 100, "trip"), ("c01", 160, "probation_failed"), ("c02", 200, "trip")]
    assert report["probation_failures"] == 1
    assert report["held_campaign_hours"] == pytest.approx((200 + 100) / 60)
    guarded, model = report["arms"]["guarded"], report["arms"]["model"]
    assert report["loss_avoided"] == pytest.approx(guarded["profit"] - model["profit"], abs=0.01)
    # false trips: trips proper near no below-floor episode (failed probations are counted apart)
    assert report["false_trips"] == sum(1 for t in report["trips"] if t["kind"] == "trip" and t["false"])
    assert report["oracle_loss_avoided"] is None  # the oracle plays whole days only


EPISODES = np.zeros(200, dtype=bool)
EPISODES[10:30] = True   # the model's expected ROI below the floor in minutes 10-29: sustained
EPISODES[170:175] = True  # a five-minute dip


@pytest.mark.parametrize(("minute", "false", "delay"), [
    (10, False, 0), (15, False, 5), (29, False, 19),  # during the episode: from its first crossing
    (35, False, 25), (89, False, 79),                 # after it: its detection while it ended at most 60 min before
    (95, True, None),                                 # too late for the first, too early for the dip: false
    (5, False, -5),                                   # before the episode, by at most 60 min: an early trip
    (174, False, None),                               # the dip excuses the trip, but no sustained fall is near
])
def test_a_trip_is_judged_against_the_expected_roi_episode_it_detected(minute, false, delay):
    assert judge_trip(EPISODES, minute) == (false, delay)


def test_a_trip_far_from_any_episode_is_false_even_where_the_campaign_crossed_at_another_hour():
    below = np.zeros(1440, dtype=bool)
    below[0:2] = True  # two minutes at midnight
    assert judge_trip(below, 845) == (True, None)
    assert judge_trip(np.zeros(1440, dtype=bool), 3) == (True, None)


def test_the_first_sustained_crossing_skips_short_dips():
    below = np.zeros(300, dtype=bool)
    below[5:12] = True
    below[40:100] = True
    assert first_sustained_crossing(below) == 40
    assert first_sustained_crossing(np.zeros(300, dtype=bool)) is None


def test_the_cli_runs_a_users_scenario_file_and_prints_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BIDLENS_DATA_DIR", sim_support._DATA_DIR)
    path = tmp_path / "mine.toml"
    path.write_text(dump_scenario(small_scenario()), encoding="utf-8")
    assert main(["stress", "--scenario-file", str(path), "--seed", "2", "--guard", "off", "--minutes", "120",
                 "--out", str(tmp_path / "out"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scenario"] == "small" and report["seed"] == 2
    assert report["minutes"] == 120 and report["arms"]["model"]["by_hour"][5]["spend"] == 0
    assert (tmp_path / "out" / "report.html").read_text(encoding="utf-8").count("<h1>") == 1
    assert (tmp_path / "out" / "by_hour.csv").read_text().splitlines()[0] == "arm,hour,spend,gmv,roi,profit"


def test_a_scenario_name_never_leads_the_report_out_of_the_data_folder(tmp_path, monkeypatch, capsys):
    """Issue 16: a scenario name with `../` wrote the stress report outside the data folder."""
    import dataclasses

    from sim.report import report_dir

    assert report_dir("/d", "../../etc/cron.d", 2) == Path("/d/reports/stress-etc-cron-d-2")
    assert report_dir("/d", "..", 1) == Path("/d/reports/stress-scenario-1")
    assert report_dir("/d", "大促 818", 1) == Path("/d/reports/stress-大促-818-1")
    monkeypatch.setenv("BIDLENS_DATA_DIR", sim_support._DATA_DIR)
    escape = f"../../../../{tmp_path.name}-escaped"  # four levels up from DATA_DIR/reports/stress-..
    path = tmp_path / "evil.toml"
    path.write_text(dump_scenario(dataclasses.replace(small_scenario(), name=escape)), encoding="utf-8")
    assert main(["stress", "--scenario-file", str(path), "--seed", "3", "--guard", "off", "--minutes", "30",
                 "--json"]) == 0
    capsys.readouterr()
    inside = report_dir(sim_support._DATA_DIR, escape, 3)
    assert (inside / "report.json").exists() and inside.parent == Path(sim_support._DATA_DIR).resolve() / "reports"
    assert not (Path(sim_support._DATA_DIR).resolve() / "reports" / f"stress-{escape}-3").resolve().exists()


def test_the_cli_refuses_a_bad_scenario_file_before_running(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[world]\nsurprise = 1\n', encoding="utf-8")
    assert main(["stress", "--scenario-file", str(path)]) == 2
    assert "world.surprise = 1" in capsys.readouterr().err


@pytest.mark.slow
def test_818_calibration_model_about_1_8_rule_pool_about_2_3():
    kit = full_kit()
    report = run_stress(load_scenario("818"), 1, kit.bidders, kit.history, kit.pool)
    assert report["arms"]["model"]["roi"] == pytest.approx(1.8, abs=0.1)
    assert report["arms"]["rule_pool"]["roi"] == pytest.approx(2.3, abs=0.1)
    assert report["arms"]["model"]["profit"] < report["arms"]["rule_pool"]["profit"]


@pytest.mark.slow
def test_normal_day_keeps_the_great_majority_of_campaigns_above_the_floor():
    kit = full_kit()
    report = run_stress(load_scenario("normal"), 1, kit.bidders, kit.history, kit.pool, arms=("model",))
    model = report["arms"]["model"]
    assert model["campaigns_below_floor"] <= 0.1 * len(model["by_campaign"])
    assert model["roi"] > 2.0
