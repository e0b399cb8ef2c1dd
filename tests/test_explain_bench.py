"""The explain benchmark runs (quick sizes) and reports exact values beside its baselines."""

from __future__ import annotations

import pytest

from bench.registry import BenchContext, run


@pytest.mark.slow
def test_quick_explain_benchmark_reports_ratios_and_exactness(tmp_path):
    results = {r.name: r for r in run(["explain"], BenchContext(str(tmp_path), quick=True))}
    headline = results["explain.throughput_vs_shap"]
    assert headline.extra["max_abs_diff_vs_shap"] <= 1e-6
    assert headline.extra["max_abs_diff_vs_pred_contrib"] <= 1e-6
    assert headline.extra["additivity_max_error"] <= 1e-6
    for r in results.values():
        assert r.value > 0 and r.baseline_value > 0 and r.baseline
    assert {"explain.single_p50", "explain.single_p99", "explain.fallback_permutation_cost",
            "explain.half_duplicates", "explain.pred_contrib_2_threads"} <= set(results)
