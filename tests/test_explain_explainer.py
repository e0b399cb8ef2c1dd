"""Explainer per model artefact: exact for trees, approximate fallback labelled, refusals named."""

from __future__ import annotations

import numpy as np
import pytest

from explain.artifacts import (
    FeatureSpec,
    ModelArtifact,
    ModelMismatch,
    UnsupportedModelFile,
    load_artifact,
    load_user_model,
    save_artifact,
)
from explain.explainer import Explainer
from tests.explain_helpers import FEATURES, NAMES, artifact, feature_rows, value_per_click


@pytest.fixture(scope="module")
def model():
    return artifact("v1", seed=1)


def test_duplicates_and_cache_give_the_same_values_as_fresh_rows(model):
    rng = np.random.default_rng(4)
    X = feature_rows(400, rng)
    X = np.vstack([X, X[:200], X[::-1]])  # many repeated feature vectors
    explainer = Explainer(model)
    base, contributions = explainer.explain(X)
    fresh = model.booster.predict(X, pred_contrib=True)
    assert np.abs(contributions - fresh[:, :-1]).max() <= 1e-6
    assert np.abs(base + contributions.sum(axis=1) - model.predict(X)).max() <= 1e-6
    assert len(explainer._cache) == 400  # only unique rows were computed and kept
    again = explainer.explain(X[:10])[1]
    assert np.array_equal(again, contributions[:10])
    assert explainer.method == "treeshap" and explainer.exact and explainer.link == "identity"


def test_cache_is_bounded(model):
    explainer = Explainer(model, cache_rows=50)
    explainer.explain(feature_rows(120, np.random.default_rng(0)))
    assert len(explainer._cache) == 50


def test_feature_mismatch_is_refused_with_names(model):
    explainer = Explainer(model)
    X = feature_rows(5, np.random.default_rng(0))
    names = NAMES[:-1] + ["weather"]
    with pytest.raises(ModelMismatch) as err:
        explainer.explain_named(names, X)
    assert err.value.missing == ["promo_flag"] and err.value.extra == ["weather"]
    assert "promo_flag" in str(err.value) and "weather" in str(err.value)
    with pytest.raises(ValueError, match="rows must have 8 features"):
        explainer.explain(X[:, :7])
    shuffled = NAMES[::-1]
    _, by_name = explainer.explain_named(shuffled, X[:, ::-1])
    assert np.allclose(by_name, explainer.explain(X)[1])


def test_artifact_round_trip_keeps_dictionary_and_values(model, tmp_path):
    folder = save_artifact(model, tmp_path)
    loaded = load_artifact(folder)
    assert loaded.features == FEATURES and loaded.version == "v1" and loaded.kind == "lightgbm"
    assert loaded.feature("audience").level(3.0) == "送礼"
    X = feature_rows(50, np.random.default_rng(9))
    assert np.allclose(Explainer(loaded).explain(X)[1], Explainer(model).explain(X)[1])


def test_user_lightgbm_model_file_with_other_feature_names_is_refused(model, tmp_path):
    path = tmp_path / "user.txt"
    model.booster.save_model(str(path))
    renamed = [FeatureSpec("cvr_24h", "24 小时转化率", "conversion rate, 24 h")] + list(FEATURES[1:])
    with pytest.raises(ModelMismatch, match="cvr_24h"):
        load_user_model(path, renamed, "user-1")
    assert load_user_model(path, list(FEATURES), "user-1").version == "user-1"
    with pytest.raises(UnsupportedModelFile, match="old binary format"):
        load_user_model(tmp_path / "model.bst", list(FEATURES), "x")


def _training(n=600):
    rng = np.random.default_rng(7)
    X = feature_rows(n, rng, missing=False)
    return X, value_per_click(X, rng)


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_model_is_explained_exactly_and_keeps_its_format(tmp_path, suffix):
    import shap
    import xgboost as xgb
    X, y = _training()
    names = [f.name for f in FEATURES]
    booster = xgb.train({"max_depth": 3, "eta": 0.3, "objective": "reg:squarederror", "nthread": 1},
                        xgb.DMatrix(X, label=y, feature_names=names), num_boost_round=30)
    path = tmp_path / f"user{suffix}"
    booster.save_model(str(path))
    user = load_user_model(path, list(FEATURES), "xgb-1")
    explainer = Explainer(user)
    base, contributions = explainer.explain(X[:100])
    assert (explainer.exact, explainer.method, explainer.link) == (True, "xgboost_treeshap", "identity")
    # XGBoost predicts in float32: the decomposition adds up to its prediction to that precision.
    assert np.abs(base + contributions.sum(axis=1) - user.predict(X[:100])).max() <= 1e-4
    reference = shap.TreeExplainer(booster).shap_values(X[:100])  # an independent exact TreeSHAP
    assert np.abs(contributions - reference).max() <= 1e-4
    reloaded = load_artifact(save_artifact(user, tmp_path / "models"))
    assert reloaded.kind == "xgboost" and np.allclose(reloaded.predict(X[:5]), user.predict(X[:5]))
    renamed = [FeatureSpec("cvr_24h", "24 小时转化率", "conversion rate, 24 h")] + list(FEATURES[1:])
    with pytest.raises(ModelMismatch, match="cvr_24h"):
        load_user_model(path, renamed, "xgb-2")


def test_xgboost_classifier_objective_is_refused(tmp_path):
    import xgboost as xgb
    X, y = _training(200)
    booster = xgb.train({"objective": "binary:logistic", "nthread": 1},
                        xgb.DMatrix(X, label=(y > np.median(y)).astype(float)), num_boost_round=3)
    path = tmp_path / "clf.json"
    booster.save_model(str(path))
    with pytest.raises(UnsupportedModelFile, match="binary:logistic"):
        load_user_model(path, list(FEATURES), "clf")

def test_sklearn_tree_model_is_explained_exactly(tmp_path):
    import joblib
    import shap
    from sklearn.ensemble import GradientBoostingRegressor
    X, y = _training()
    gbr = GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0).fit(X, y)
    path = tmp_path / "gbr.joblib"
    joblib.dump(gbr, path)
    user = load_user_model(path, list(FEATURES), "gbr-1")
    explainer = Explainer(user)
    base, contributions = explainer.explain(X[:100])
    assert explainer.exact and explainer.method == "shap_tree"
    assert np.abs(base + contributions.sum(axis=1) - gbr.predict(X[:100])).max() <= 1e-6
    reference = shap.TreeExplainer(gbr).shap_values(X[:100])
    assert np.abs(contributions - reference).max() <= 1e-6
    reloaded = load_artifact(save_artifact(user, tmp_path / "models"))
    assert reloaded.kind == "sklearn" and np.allclose(reloaded.predict(X[:5]), gbr.predict(X[:5]))


def test_hist_gradient_boosting_is_refused_with_the_reason(tmp_path):
    import joblib
    from sklearn.ensemble import HistGradientBoostingRegressor
    X, y = _training(300)
    path = tmp_path / "hgb.joblib"
    joblib.dump(HistGradientBoostingRegressor(max_iter=5).fit(X, y), path)
    with pytest.raises(UnsupportedModelFile, match="additivity"):
        load_user_model(path, list(FEATURES), "hgb-1")


def test_non_tree_model_gets_the_approximate_fallback_which_still_adds_up():
    from sklearn.linear_model import Ridge
    X, y = _training(300)
    ridge = Ridge(alpha=1.0).fit(X, y)
    user = ModelArtifact(version="ridge-1", features=FEATURES, booster=ridge, kind="sklearn")
    with pytest.raises(ValueError, match="background"):
        Explainer(user)
    explainer = Explainer(user, background=X[:100], seed=3)
    base, contributions = explainer.explain(X[200:210])
    assert not explainer.exact and explainer.method == "permutation"
    assert np.abs(base + contributions.sum(axis=1) - ridge.predict(X[200:210])).max() <= 1e-6
    # For a linear model the exact values are coef * (x - mean of background).
    exact = ridge.coef_ * (X[200:210] - X[:100].mean(axis=0))
    assert np.abs(contributions - exact).max() <= 1e-6


def test_log_link_models_are_labelled_so_bid_units_are_not_misread():
    tweedie = artifact("tw-1", seed=2, objective="tweedie", trees=10)
    explainer = Explainer(tweedie)
    assert explainer.link == "log"
    X = feature_rows(20, np.random.default_rng(0))
    base, contributions = explainer.explain(X)
    # Contributions explain the raw (log) score, not value per click.
    raw = tweedie.booster.predict(X, raw_score=True)
    assert np.abs(base + contributions.sum(axis=1) - raw).max() <= 1e-6
