"""The API benchmarks run (quick sizes) and report each figure beside a baseline from the same run."""

from __future__ import annotations

import pytest

from bench.registry import BenchContext, run


@pytest.mark.slow
def test_api_benchmarks_report_figures_and_baselines(tmp_path):
    results = {r.name: r for r in run(["api.ingest", "api.policy"], BenchContext(str(tmp_path), quick=True))}
    assert set(results) == {"api.ingest.http", "api.ingest.parquet", "api.policy.get.p50", "api.policy.get.p99",
                            "api.policy.changed.p50", "api.policy.304.p50", "api.policy.304.p99"}
    for r in results.values():
        assert r.value > 0 and r.baseline_value > 0
    assert results["api.ingest.http"].unit == "rows/s" and results["api.policy.304.p50"].unit == "ms"
