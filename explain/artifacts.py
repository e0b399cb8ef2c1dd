"""Models as versioned artefacts: a LightGBM booster plus its metadata.

An artefact is a folder `<models_dir>/<version>/` with `model.txt` (LightGBM's
own text format) and `meta.json` (everything else). The bid model predicts
value per click in yuan, so its SHAP values are already in yuan per click.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightgbm as lgb


class ModelMismatch(ValueError):
    """Decision rows whose features do not match the model's; names what is missing or extra."""

    def __init__(self, version: str, missing: list[str], extra: list[str]):
        self.missing = missing
        self.extra = extra
        super().__init__(f"model {version}: features missing {missing or '[]'}, extra {extra or '[]'}")


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    display_zh: str
    display_en: str
    unit_zh: str = ""
    unit_en: str = ""
    # For a categorical feature: its levels; the model sees the level's index.
    categorical_levels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ModelArtifact:
    version: str
    features: tuple[FeatureSpec, ...]
    booster: lgb.Booster = field(repr=False, compare=False)
    target: str = "value_per_click"  # yuan of GMV per click
    variant: str = "roi"             # roi | gmv (the "818" variant that maximises GMV)
    training_window: tuple[int, int] = (0, 0)  # epoch seconds [start, end)
    metrics: dict = field(default_factory=dict)
    created_ts: int = 0

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def check_features(self, names: list[str]) -> None:
        expected = self.feature_names
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in expected]
        if missing or extra:
            raise ModelMismatch(self.version, missing, extra)

    def meta(self) -> dict:
        data = asdict(self)
        data.pop("booster")
        return data


def save_artifact(artifact: ModelArtifact, models_dir: str | Path) -> Path:
    folder = Path(models_dir) / artifact.version
    folder.mkdir(parents=True, exist_ok=True)
    artifact.booster.save_model(str(folder / "model.txt"))
    (folder / "meta.json").write_text(json.dumps(artifact.meta(), ensure_ascii=False, indent=2),
                                      encoding="utf-8")
    return folder


def load_artifact(folder: str | Path) -> ModelArtifact:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    features = tuple(
        FeatureSpec(**{**f, "categorical_levels": tuple(f["categorical_levels"])
                       if f.get("categorical_levels") is not None else None})
        for f in meta.pop("features"))
    meta["training_window"] = tuple(meta["training_window"])
    booster = lgb.Booster(model_file=str(folder / "model.txt"))
    return ModelArtifact(features=features, booster=booster, **meta)
