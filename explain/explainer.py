"""Explain decisions at decision time, one Explainer per model artefact.

`Explainer(artifact).explain(X)` returns `(base_value, contributions)` with
contributions [n, features] in model output units (yuan of value per click for
the bid model) and base_value + row sum = the model's output for the row.

Which algorithm answers depends on the model:

- LightGBM: `explain.treeshap.FastTreeShap`, exact path-dependent TreeSHAP
  (equal to shap.TreeExplainer and LightGBM pred_contrib to ~1e-13), faster.
- scikit-learn tree ensembles: shap.TreeExplainer, exact (path-dependent).
- any other regressor: shap's PermutationExplainer over a background sample,
  labelled approximate (`exact` is False) and ~100x slower.

Rows are explained once: identical feature vectors in a batch are explained
once, and a bounded cache keyed by the row's bytes reuses an explanation the
same Explainer (one model version) computed before. The simulator repeats many
feature vectors across buckets, so this pays 1 / (1 - duplicate share).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from explain.artifacts import XGBOOST_LOG_OBJECTIVES, ModelArtifact, is_exact_tree_model, xgboost_objective

DEFAULT_CACHE_ROWS = 200_000
# LightGBM objectives whose raw output is the prediction itself (identity link).
IDENTITY_OBJECTIVES = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")


class Explainer:
    """SHAP for one model artefact; build once (it tabulates the trees), call per batch."""

    def __init__(self, artifact: ModelArtifact, *, background: np.ndarray | None = None,
                 cache_rows: int = DEFAULT_CACHE_ROWS, n_threads: int | None = None, seed: int = 0):
        self.artifact = artifact
        self.model_version = artifact.version
        self.n_features = len(artifact.features)
        self.cache_rows = cache_rows
        self.n_threads = n_threads
        self._cache: dict[bytes, np.ndarray] = {}
        self.link = "identity"
        if artifact.kind == "lightgbm":
            from explain.treeshap import FastTreeShap
            self._fast = FastTreeShap(artifact.booster)
            self.link = "identity" if self._fast.forest.objective in IDENTITY_OBJECTIVES else "log"
            self.base_value = self._fast.base_value
            self.method, self.exact = "treeshap", True
        elif artifact.kind == "xgboost":
            # XGBoost's own exact TreeSHAP: its bias column is the base, and base + contributions
            # is the model's raw output to float32 precision (shap's expected_value is off by ~1e-4).
            self.method, self.exact = "xgboost_treeshap", True
            self.link = "log" if xgboost_objective(artifact.booster) in XGBOOST_LOG_OBJECTIVES else "identity"
            self.base_value = float(self._xgboost_contributions(np.zeros((1, self.n_features)))[0, -1])
        elif is_exact_tree_model(artifact):
            import shap
            self._shap = shap.TreeExplainer(artifact.booster, feature_perturbation="tree_path_dependent")
            self.base_value = float(np.ravel(self._shap.expected_value)[0])
            self.method, self.exact = "shap_tree", True
        else:
            if background is None:
                raise ValueError(f"model {artifact.version} ({type(artifact.booster).__name__}) is not a tree "
                                 "model: the approximate explainer needs a background sample of rows")
            import shap
            masker = shap.maskers.Independent(np.asarray(background, dtype=np.float64), max_samples=100)
            self._shap = shap.PermutationExplainer(artifact.predict, masker, seed=seed)
            self.base_value = float(np.mean(artifact.predict(masker.data)))
            self.method, self.exact = "permutation", False

    def _xgboost_contributions(self, X: np.ndarray) -> np.ndarray:
        """XGBoost's pred_contribs: one column per feature, then the bias."""
        import xgboost as xgb
        booster = self.artifact.booster
        matrix = xgb.DMatrix(X, feature_names=booster.feature_names)
        return np.asarray(booster.predict(matrix, pred_contribs=True), dtype=np.float64)

    def _compute(self, X: np.ndarray) -> np.ndarray:
        if self.method == "treeshap":
            return self._fast.shap_values(X, n_threads=self.n_threads)
        if self.method == "xgboost_treeshap":
            return self._xgboost_contributions(X)[:, :-1]
        if self.method == "shap_tree":
            return np.asarray(self._shap.shap_values(X, check_additivity=False), dtype=np.float64)
        explanation = self._shap(X, silent=True)
        return np.asarray(explanation.values, dtype=np.float64)

    def explain(self, X: np.ndarray) -> tuple[float, np.ndarray]:
        """(base_value, contributions float64 [n, features]); base + row sum = model output."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"model {self.model_version}: rows must have {self.n_features} features "
                             f"({', '.join(self.artifact.feature_names)}), got shape {X.shape}")
        out = np.empty_like(X)
        if len(X) == 0:
            return self.base_value, out
        keys = X.view(np.dtype((np.void, X.shape[1] * 8))).ravel()
        unique_keys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        unique_values = np.empty((len(unique_keys), self.n_features))
        todo = []
        for i, key in enumerate(unique_keys.tolist()):
            hit = self._cache.get(key)
            if hit is None:
                todo.append(i)
            else:
                unique_values[i] = hit
        if todo:
            todo_idx = np.asarray(todo)
            fresh = self._compute(X[first[todo_idx]])
            unique_values[todo_idx] = fresh
            self._remember(unique_keys[todo_idx].tolist(), fresh)
        out[:] = unique_values[inverse.ravel()]
        return self.base_value, out

    def _remember(self, keys: list[bytes], values: np.ndarray) -> None:
        if self.cache_rows <= 0:
            return
        for key, row in zip(keys[-self.cache_rows:], values[-self.cache_rows:]):
            self._cache[key] = row
        while len(self._cache) > self.cache_rows:  # oldest first: dicts keep insertion order
            del self._cache[next(iter(self._cache))]

    def explain_named(self, names: Sequence[str], X: np.ndarray) -> tuple[float, np.ndarray]:
        """`explain` for columns named `names` in any order; refuses missing/extra features by name."""
        names = list(names)
        self.artifact.check_features(names)
        order = [names.index(n) for n in self.artifact.feature_names]
        return self.explain(np.asarray(X, dtype=np.float64)[:, order])
