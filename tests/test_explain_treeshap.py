"""Exact TreeSHAP: agrees with LightGBM pred_contrib and shap.TreeExplainer, adds up to the prediction."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from explain.treeshap import FastTreeShap, UnsupportedModel
from tests.explain_helpers import NAMES, feature_rows, train_booster

TOL = 1e-6


def _check_against_lightgbm(booster: lgb.Booster, X: np.ndarray, **kwargs) -> np.ndarray:
    fast = FastTreeShap(booster, **kwargs)
    ours = fast.shap_values(X)
    native = booster.predict(X, pred_contrib=True)
    assert np.abs(ours - native[:, :-1]).max() <= TOL
    assert np.abs(fast.base_value - native[:, -1]).max() <= TOL
    assert np.abs(fast.base_value + ours.sum(axis=1) - booster.predict(X)).max() <= TOL
    return ours


@pytest.fixture(scope="module")
def booster():
    return train_booster(seed=3, trees=80, leaves=31)


@pytest.fixture(scope="module")
def rows():
    X = feature_rows(3000, np.random.default_rng(11))
    X[:50, 0] = np.nan        # a feature never missing in training
    X[50:60] = X[60:70]       # duplicates
    X[70, :] = 0.0
    return X


def test_agrees_with_pred_contrib_and_shap_on_every_row(booster, rows):
    import shap
    ours = _check_against_lightgbm(booster, rows)
    reference = shap.TreeExplainer(booster).shap_values(rows)
    assert np.abs(ours - reference).max() <= TOL


def test_on_the_fly_leaves_equal_tabulated_ones(booster, rows):
    tabulated = FastTreeShap(booster).shap_values(rows)
    on_the_fly = FastTreeShap(booster, max_table_depth=0).shap_values(rows)
    assert FastTreeShap(booster, max_table_depth=0).forest.table_bytes == 0
    assert np.abs(tabulated - on_the_fly).max() <= 1e-10


def test_threads_and_blocks_do_not_change_values(booster, rows):
    fast = FastTreeShap(booster)
    a = fast.shap_values(rows, n_threads=1, block=1)
    b = fast.shap_values(rows, n_threads=2, block=7)
    assert np.array_equal(a, b)


def test_zero_as_missing_and_native_categorical_models(rows):
    zero_missing = train_booster(seed=5, zero_as_missing=True)
    _check_against_lightgbm(zero_missing, rows)
    categorical = train_booster(seed=6, categorical_feature=[NAMES.index("audience")],
                                cat_smooth=1, min_data_per_group=5)
    assert any(t["tree_structure"].get("decision_type") == "==" or "==" in str(t)
               for t in categorical.dump_model()["tree_info"])
    odd = rows.copy()
    odd[:40, 5] = np.array([-1.0, 7.0, np.nan, 40.0] * 10)  # unseen, negative, missing categories
    _check_against_lightgbm(categorical, odd)


def test_constant_trees_count_in_the_base_value():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 3))
    booster = lgb.train({"num_leaves": 4, "verbose": -1, "num_threads": 1, "min_data_in_leaf": 150},
                        lgb.Dataset(X, np.full(200, 3.0) + (X[:, 0] > 0)), num_boost_round=5)
    _check_against_lightgbm(booster, X)


def test_multiclass_models_are_refused():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1},
                        lgb.Dataset(X, rng.integers(0, 3, 300)), num_boost_round=2)
    with pytest.raises(UnsupportedModel, match="multi-class"):
        FastTreeShap(booster)


def test_wrong_width_is_refused(booster):
    with pytest.raises(ValueError, match=r"X must be \[n, 8\]"):
        FastTreeShap(booster).shap_values(np.zeros((2, 7)))


def test_concurrent_callers_from_threads_get_correct_values(booster, rows):
    from concurrent.futures import ThreadPoolExecutor
    fast = FastTreeShap(booster)
    expected = fast.shap_values(rows[:300])
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda k: fast.shap_values(rows[:300]), range(8)))
    assert all(np.array_equal(r, expected) for r in results)
