"""Explanation benchmarks: BidLens's exact TreeSHAP beside shap.TreeExplainer and LightGBM
pred_contrib, on the same model and rows, in the same run.

Reference model (issue 4): LightGBM, 300 trees, 31 leaves, 24 features, trained here
on synthetic data with a fixed seed (single-threaded, so it is deterministic).
Timings are medians of interleaved repeats (the machine is shared).
"""

from __future__ import annotations

import threading
import time

import lightgbm as lgb
import numpy as np

from bench.registry import BenchContext, BenchResult, benchmark
from explain.artifacts import FeatureSpec, ModelArtifact
from explain.explainer import Explainer

N_FEATURES = 24


def reference_model(trees: int, rows: int, seed: int = 42) -> tuple[lgb.Booster, np.ndarray]:
    """A bid-model-sized LightGBM regressor and a pool of rows from the same distribution."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, N_FEATURES))
    X[:, 20:] = rng.integers(0, 8, size=(rows, 4))          # coded levels (hour bands, packages...)
    X[rng.random((rows, N_FEATURES)) < 0.02] = np.nan         # some missing values
    Z = np.nan_to_num(X)
    y = (Z[:, :8] @ rng.uniform(0.2, 1.0, 8) + np.sin(Z[:, 8] * 2) + Z[:, 9] * Z[:, 10]
         + 0.3 * (Z[:, 20] == 3) + rng.normal(0, 0.3, rows))
    params = {"num_leaves": 31, "learning_rate": 0.05, "verbose": -1, "num_threads": 1, "seed": seed,
              "deterministic": True, "min_data_in_leaf": 20}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=trees), X


def _median_rate(n: int, runs: list[float]) -> float:
    return n / float(np.median(runs))


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _two_thread_pred_contrib(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    """Half the batch on each core, each call single-threaded (LightGBM releases the GIL)."""
    halves = np.array_split(X, 2)
    out: list[np.ndarray | None] = [None, None]

    def work(k):
        out[k] = booster.predict(halves[k], pred_contrib=True, num_threads=1)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.vstack(out)


def _latencies_ms(fn, rows: np.ndarray) -> np.ndarray:
    out = []
    for row in rows:
        x = row[None, :]
        start = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - start) * 1e3)
    return np.array(out)


@benchmark("explain")
def bench_explain(ctx: BenchContext) -> list[BenchResult]:
    import shap

    trees, n_rows, repeats, n_single, n_fallback = (30, 400, 2, 50, 1) if ctx.quick else (300, 8_000, 3, 400, 5)
    booster, pool = reference_model(trees, max(n_rows * 2, 4000))
    X = pool[:n_rows]
    features = tuple(FeatureSpec(f"f{i:02d}", f"特征{i}", f"feature {i}") for i in range(N_FEATURES))
    artifact = ModelArtifact(version="bench", features=features, booster=booster)

    start = time.perf_counter()
    ours = Explainer(artifact, cache_rows=0)
    build_s = time.perf_counter() - start
    tree_explainer = shap.TreeExplainer(booster)
    ours.explain(X[:5])
    tree_explainer.shap_values(X[:5])

    # Same rows, interleaved repeats: ours (2 threads), shap, pred_contrib (its default threads),
    # pred_contrib split over 2 Python threads, ours single-threaded.
    runs: dict[str, list[float]] = {k: [] for k in ("ours", "shap", "contrib", "contrib2", "ours1", "predict")}
    fast = ours._fast
    for _ in range(repeats):
        runs["ours"].append(_time(lambda: ours.explain(X)))
        runs["shap"].append(_time(lambda: tree_explainer.shap_values(X)))
        runs["contrib"].append(_time(lambda: booster.predict(X, pred_contrib=True)))
        runs["contrib2"].append(_time(lambda: _two_thread_pred_contrib(booster, X)))
        runs["ours1"].append(_time(lambda: fast.shap_values(X, n_threads=1)))
        runs["predict"].append(_time(lambda: booster.predict(X)))
    rate = {k: _median_rate(n_rows, v) for k, v in runs.items()}

    base, values = ours.explain(X)
    reference = tree_explainer.shap_values(X)
    native = booster.predict(X, pred_contrib=True)
    diff_shap = float(np.abs(values - reference).max())
    diff_native = float(np.abs(values - native[:, :-1]).max())
    additivity = float(np.abs(base + values.sum(axis=1) - booster.predict(X)).max())

    # Unique-row reuse: a bucket's batch where half the feature vectors repeat earlier ones.
    rng = np.random.default_rng(5)
    half = n_rows // 2
    duplicated = np.vstack([X[:half], X[rng.integers(0, half, n_rows - half)]])
    dedup_runs = []
    for _ in range(repeats):
        fresh = Explainer(artifact)
        dedup_runs.append(_time(lambda e=fresh: e.explain(duplicated)))

    single_rows = pool[n_rows:n_rows + n_single]
    single_ours = _latencies_ms(ours.explain, single_rows)  # the public path, cache off
    single_shap = _latencies_ms(lambda x: tree_explainer.shap_values(x), single_rows)
    single_native = _latencies_ms(lambda x: booster.predict(x, pred_contrib=True), single_rows)

    # Model-agnostic fallback on the same model, treated as a black box.
    black_box = ModelArtifact(version="bench-bb", features=features, booster=booster)
    permutation = shap.PermutationExplainer(black_box.predict,
                                            shap.maskers.Independent(pool[-200:], max_samples=100), seed=0)
    fb_rows = pool[n_rows:n_rows + n_fallback]
    fb_ms = _time(lambda: permutation(fb_rows, silent=True)) / n_fallback * 1e3
    ours_ms = 1e3 / rate["ours"]

    model = f"LightGBM {trees} trees x 31 leaves, {N_FEATURES} features, {n_rows} rows"
    common = {"model": model, "max_abs_diff_vs_shap": diff_shap, "max_abs_diff_vs_pred_contrib": diff_native,
              "additivity_max_error": additivity, "table_mib": fast.forest.table_bytes / 2**20,
              "build_s": round(build_s, 3), "repeats": repeats}
    p = np.percentile
    return [
        BenchResult("explain.throughput_vs_shap", rate["ours"], "rows/s", "shap.TreeExplainer.shap_values",
                    rate["shap"], True, notes=f"exact; max |diff| vs shap {diff_shap:.1e}", extra=common),
        BenchResult("explain.throughput_vs_pred_contrib", rate["ours"], "rows/s",
                    "LightGBM predict(pred_contrib=True)", rate["contrib"], True, extra=common),
        BenchResult("explain.pred_contrib_2_threads", rate["contrib2"], "rows/s",
                    "LightGBM predict(pred_contrib=True)", rate["contrib"], True,
                    notes="batch split over 2 Python threads, num_threads=1 each (a way measured, not kept)"),
        BenchResult("explain.throughput_1_thread", rate["ours1"], "rows/s",
                    "shap.TreeExplainer.shap_values (2 threads)", rate["shap"], True,
                    notes="BidLens on one core"),
        BenchResult("explain.half_duplicates", n_rows / float(np.median(dedup_runs)), "rows/s",
                    "shap.TreeExplainer.shap_values", rate["shap"], True,
                    notes="50% repeated feature vectors, explained once each (cold cache); shap's cost "
                          "does not depend on duplicates, so its rate on the distinct rows is the baseline"),
        BenchResult("explain.single_p50", float(p(single_ours, 50)), "ms", "shap.TreeExplainer one row p50",
                    float(p(single_shap, 50)), False,
                    extra={"p99_ms": float(p(single_ours, 99)), "shap_p99_ms": float(p(single_shap, 99)),
                           "pred_contrib_p50_ms": float(p(single_native, 50)), "rows": n_single}),
        BenchResult("explain.single_p99", float(p(single_ours, 99)), "ms", "shap.TreeExplainer one row p99",
                    float(p(single_shap, 99)), False),
        BenchResult("explain.fallback_permutation_cost", fb_ms, "ms/row", "BidLens exact TreeSHAP",
                    ours_ms, False, notes="approximate fallback for non-tree models, same model as black box"),
        BenchResult("explain.vs_plain_prediction", rate["ours"], "rows/s", "LightGBM predict (no SHAP)",
                    rate["predict"], True, notes="what an explanation costs beside a prediction"),
    ]
