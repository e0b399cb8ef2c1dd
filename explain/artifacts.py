"""Models as versioned artefacts: a tree model plus its metadata.

An artefact is a folder `<models_dir>/<version>/` with the model and
`meta.json` (everything else: features with their zh/en display names and
units — the feature dictionary —, categorical levels, training window, metrics).
The model is `model.txt` (LightGBM's own text format) for kind "lightgbm",
`model.json` (XGBoost's JSON format) for kind "xgboost", or `model.joblib` for a
user's scikit-learn model (kind "sklearn"; a pickle: load only artefacts you
trust). The bid model predicts value per click in yuan, so its SHAP values are
already in yuan per click.

XGBoost regressors are read with the `xgboost-cpu` package (the same module as
`xgboost` without the GPU libraries); classifiers' objectives are refused.
scikit-learn's HistGradientBoosting models are refused (shap's additivity check
fails for them), with a message saying what to do instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

MODEL_KINDS = ("lightgbm", "sklearn", "xgboost")
# XGBoost objectives of a regressor, by how its raw output (what SHAP explains) maps to the prediction.
XGBOOST_IDENTITY_OBJECTIVES = ("reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror",
                               "reg:quantileerror")
XGBOOST_LOG_OBJECTIVES = ("reg:gamma", "reg:tweedie", "count:poisson")
# scikit-learn estimators whose trees shap.TreeExplainer explains exactly (path-dependent).
SKLEARN_TREE_MODELS = frozenset({
    "DecisionTreeRegressor", "ExtraTreeRegressor", "RandomForestRegressor", "ExtraTreesRegressor",
    "GradientBoostingRegressor",
})


class ModelMismatch(ValueError):
    """Decision rows whose features do not match the model's; names what is missing or extra."""

    def __init__(self, version: str, missing: list[str], extra: list[str]):
        self.missing = missing
        self.extra = extra
        super().__init__(f"model {version}: features missing {missing or '[]'}, extra {extra or '[]'}")


class UnsupportedModelFile(ValueError):
    """A model BidLens will not load; the message says why and what to do instead."""


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    display_zh: str
    display_en: str
    unit_zh: str = ""
    unit_en: str = ""
    # For a categorical feature: its levels; the model sees the level's index.
    categorical_levels: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        levels = data.get("categorical_levels")
        return cls(**{**data, "categorical_levels": tuple(levels) if levels is not None else None})

    def display(self, lang: str) -> str:
        return self.display_zh if lang == "zh" else self.display_en

    def unit(self, lang: str) -> str:
        return self.unit_zh if lang == "zh" else self.unit_en

    def level(self, value: float) -> str | None:
        """The categorical level a coded value stands for (None for a numeric feature)."""
        if self.categorical_levels is None:
            return None
        code = int(value)
        return self.categorical_levels[code] if 0 <= code < len(self.categorical_levels) else str(value)


@dataclass(frozen=True)
class ModelArtifact:
    version: str
    features: tuple[FeatureSpec, ...]
    # A LightGBM Booster (kind "lightgbm") or a fitted scikit-learn regressor (kind "sklearn").
    booster: lgb.Booster | Any = field(repr=False, compare=False)
    target: str = "value_per_click"  # yuan of GMV per click
    variant: str = "roi"             # roi | gmv (the "818" variant that maximises GMV)
    training_window: tuple[int, int] = (0, 0)  # epoch seconds [start, end)
    metrics: dict = field(default_factory=dict)
    created_ts: int = 0
    kind: str = "lightgbm"

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise UnsupportedModelFile(f"kind={self.kind!r}: must be one of {MODEL_KINDS}")
        if self.kind == "sklearn":
            refuse_unsupported_sklearn(self.booster)
        if self.kind == "xgboost":
            xgboost_objective(self.booster)  # refuses a classifier's objective

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def check_features(self, names: list[str]) -> None:
        expected = self.feature_names
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in expected]
        if missing or extra:
            raise ModelMismatch(self.version, missing, extra)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Raw model output (value per click for the bid model) for rows in feature order."""
        X = np.asarray(X, dtype=np.float64)
        if self.kind == "xgboost":
            return np.asarray(self.booster.inplace_predict(X), dtype=np.float64)
        return np.asarray(self.booster.predict(X), dtype=np.float64)

    def feature(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(f"model {self.version} has no feature {name!r}")

    def meta(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "booster"}
        data["features"] = [asdict(spec) for spec in self.features]
        return data


def refuse_unsupported_sklearn(model: object) -> None:
    name = type(model).__name__
    if name.startswith("HistGradientBoosting"):
        raise UnsupportedModelFile(
            f"{name} is refused: shap's TreeExplainer fails its own additivity check on it, so its "
            "explanations would not add up to the bid. Retrain with LightGBM (same histogram algorithm) "
            "or GradientBoostingRegressor.")
    if name.endswith("Classifier"):
        raise UnsupportedModelFile(f"{name} is a classifier; the bid model must be a regressor of value per click")
    if not hasattr(model, "predict"):
        raise UnsupportedModelFile(f"{name} has no predict(): not a fitted scikit-learn regressor")


def xgboost_objective(booster: Any) -> str:
    """The objective of an XGBoost Booster; a non-regression objective is refused."""
    name = json.loads(booster.save_config())["learner"]["objective"]["name"]
    if name not in XGBOOST_IDENTITY_OBJECTIVES + XGBOOST_LOG_OBJECTIVES:
        raise UnsupportedModelFile(f"XGBoost objective {name!r}: the bid model must be a regressor of value per "
                                   f"click ({', '.join(XGBOOST_IDENTITY_OBJECTIVES + XGBOOST_LOG_OBJECTIVES)})")
    return name


def is_exact_tree_model(artifact: ModelArtifact) -> bool:
    """True when exact path-dependent TreeSHAP applies; otherwise the explainer is approximate."""
    return artifact.kind in ("lightgbm", "xgboost") or type(artifact.booster).__name__ in SKLEARN_TREE_MODELS


def save_artifact(artifact: ModelArtifact, models_dir: str | Path) -> Path:
    folder = Path(models_dir) / artifact.version
    folder.mkdir(parents=True, exist_ok=True)
    if artifact.kind == "lightgbm":
        artifact.booster.save_model(str(folder / "model.txt"))
    elif artifact.kind == "xgboost":
        artifact.booster.save_model(str(folder / "model.json"))
    else:
        import joblib
        joblib.dump(artifact.booster, folder / "model.joblib")
    (folder / "meta.json").write_text(json.dumps(artifact.meta(), ensure_ascii=False, indent=2),
                                      encoding="utf-8")
    return folder


def load_artifact(folder: str | Path) -> ModelArtifact:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    features = tuple(FeatureSpec.from_dict(f) for f in meta.pop("features"))
    meta["training_window"] = tuple(meta["training_window"])
    kind = meta.get("kind", "lightgbm")
    if kind == "lightgbm":
        booster = lgb.Booster(model_file=str(folder / "model.txt"))
    elif kind == "xgboost":
        import xgboost as xgb
        booster = xgb.Booster(model_file=str(folder / "model.json"))
    else:
        import joblib
        booster = joblib.load(folder / "model.joblib")
    return ModelArtifact(features=features, booster=booster, **meta)


def load_user_model(model_path: str | Path, features: list[FeatureSpec], version: str,
                    **meta) -> ModelArtifact:
    """A user's own model file as an artefact: LightGBM text (`.txt`), XGBoost (`.json`/`.ubj`)
    or scikit-learn (`.joblib`/`.pkl`).

    `features` is the feature dictionary in the model's column order. The model's own
    feature count must match it; a LightGBM or XGBoost model's feature names must too
    (when the XGBoost model has them).
    """
    path = Path(model_path)
    suffix = path.suffix.lower()
    if suffix in (".json", ".ubj"):
        import xgboost as xgb
        booster = xgb.Booster(model_file=str(path))
        artifact = ModelArtifact(version=version, features=tuple(features), booster=booster, kind="xgboost", **meta)
        if booster.feature_names:
            artifact.check_features(list(booster.feature_names))
        else:
            _check_count(version, booster.num_features(), features)
        return artifact
    if suffix in (".xgb", ".model", ".bst"):
        raise UnsupportedModelFile(f"{path.name}: XGBoost's old binary format; save the model as .json or .ubj")
    if suffix == ".txt":
        booster = lgb.Booster(model_file=str(path))
        artifact = ModelArtifact(version=version, features=tuple(features), booster=booster, **meta)
        artifact.check_features(booster.feature_name())
        return artifact
    if suffix in (".joblib", ".pkl"):
        import joblib
        model = joblib.load(path)
        refuse_unsupported_sklearn(model)
        _check_count(version, getattr(model, "n_features_in_", len(features)), features)
        return ModelArtifact(version=version, features=tuple(features), booster=model, kind="sklearn", **meta)
    raise UnsupportedModelFile(f"{path.name}: unknown model file type {suffix!r}; "
                               "use .txt (LightGBM), .json/.ubj (XGBoost), .joblib or .pkl (scikit-learn)")


def _check_count(version: str, n_in: int, features: list[FeatureSpec]) -> None:
    """A model without feature names must at least take as many columns as the dictionary names."""
    if n_in != len(features):
        raise ModelMismatch(version, [f"<{n_in - len(features)} unnamed>"] if n_in > len(features) else [],
                            [f.name for f in features[n_in:]])


def feature_dictionary_from_json(path: str | Path) -> list[FeatureSpec]:
    """A feature dictionary file: a JSON list of FeatureSpec fields (name, display_zh, display_en, ...)."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    return [FeatureSpec.from_dict(r) for r in rows]
