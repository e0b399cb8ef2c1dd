import os

import pytest
import sim_support

from bench.registry import BenchContext, load_all


@pytest.mark.slow
def test_simulator_benchmarks_run_quick_and_report_against_their_baselines(tmp_path):
    sim_support.full_kit()
    os.symlink(sim_support._DATA_DIR, tmp_path / "sim-data")  # reuse the trained models
    registry = load_all()
    ctx = BenchContext(str(tmp_path), quick=True)
    day = registry["sim_day"](ctx)[0]
    assert day.unit == "slot-decisions/s" and day.value > 0 and day.baseline_value > 0
    assert day.extra["buckets"] == 60 and day.extra["slots"] == 480
    live = registry["sim_live_step"](ctx)[0]
    assert live.extra["budget_ms"] == 1000.0 and 0 < live.value < live.extra["budget_ms"]
    api = registry["sim_api_bucket"](ctx)[0]  # asserts itself that every decision was explained
    assert api.extra["buckets"] == 3 and 0 < api.value < api.extra["budget_ms"] and api.baseline_value > 0


def test_the_replay_benchmark_runs_quick(tmp_path):
    result = load_all()["sim_replay"](BenchContext(str(tmp_path), quick=True))[0]
    assert result.extra["rows"] == 100_000 and result.value > 0 and result.baseline_value > 0
    assert 0 < result.extra["impressions"] < 100_000
