"""The reference bidder: a LightGBM value-per-click model turned into decisions.

Per slot and bucket:
- bid = clip(pred_value / target_roi * pacing, min_bid, max_bid), where pred_value
  is the model's predicted GMV per click in yuan and pacing (per campaign, <= 1)
  slows a campaign that spends ahead of the day's traffic;
- pred_roi = pred_value / expected price paid at that bid (the bid times the
  slot's observed paid/bid ratio);
- audience package on when pred_roi >= the floor (the roi variant) -- the gmv
  variant keeps every package on;
- budget share: the campaign's budget split across its packages in proportion to
  predicted ROI times recent reach (the marginal return of a yuan there).

The "gmv" variant is the "818" model: trained on GMV credited with assisted
orders and bidding to buy GMV at a thin return (`gmv_target_roi`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explain.artifacts import ModelArtifact, load_artifact
from sim.features import History
from sim.scenario import BidderParams

HISTORY_FILE = "history.json"


@dataclass(frozen=True)
class Plan:
    """A bidder's decisions for every slot of one bucket, (S,) arrays."""

    model_version: str
    bid: np.ndarray
    budget_share: np.ndarray
    audience_on: np.ndarray
    pred_ctr: np.ndarray
    pred_cvr: np.ndarray
    pred_value: np.ndarray
    pred_roi: np.ndarray
    pacing: np.ndarray


def budget_shares(weight: np.ndarray, campaign_of: np.ndarray, n_campaigns: int) -> np.ndarray:
    """Normalise non-negative slot weights to shares summing to 1 within each campaign (or 0)."""
    total = np.bincount(campaign_of, weights=weight, minlength=n_campaigns)[campaign_of]
    return np.where(total > 0, weight / np.where(total > 0, total, 1.0), 0.0)


class Bidder:
    """A trained model artifact plus the bid rule of its variant."""

    def __init__(self, artifact: ModelArtifact, history: History):
        self.artifact = artifact
        self.history = history
        self.variant = artifact.variant
        self._predict = artifact.booster.predict

    @property
    def version(self) -> str:
        return self.artifact.version

    def predict_value(self, X: np.ndarray) -> np.ndarray:
        # LightGBM on one thread (the reference models); a user's XGBoost or scikit-learn model as it predicts.
        raw = self._predict(X, num_threads=1) if self.artifact.kind == "lightgbm" else self.artifact.predict(X)
        return np.maximum(raw, 0.0)

    def decide(self, X: np.ndarray, *, params: BidderParams, pacing: np.ndarray, paid_ratio: np.ndarray,
               campaign_of: np.ndarray, recent_ctr: np.ndarray, recent_reach: np.ndarray,
               avg_order_value: np.ndarray) -> Plan:
        pred_value = self.predict_value(X)
        target = params.gmv_target_roi if self.variant == "gmv" else params.target_roi
        bid = np.clip(pred_value / target * pacing, params.min_bid, params.max_bid)
        pred_roi = pred_value / np.maximum(bid * paid_ratio, 1e-6)
        # The gmv variant buys every package; the roi variant drops those below the floor.
        on = np.ones(len(bid), dtype=bool) if self.variant == "gmv" else pred_roi >= params.floor_roi
        weight = np.where(on, pred_roi * recent_reach, 0.0)
        share = budget_shares(weight, campaign_of, int(campaign_of.max()) + 1)
        pred_cvr = np.clip(pred_value / np.maximum(avg_order_value, 1e-6), 0.0, 1.0)
        return Plan(self.version, bid, share, on, np.clip(recent_ctr, 0, 1), pred_cvr, pred_value,
                    pred_roi, pacing)


def load_bidder(folder: str | Path) -> Bidder:
    """A bidder from a model folder written by sim.train (model.txt, meta.json, history.json)."""
    folder = Path(folder)
    history = History.from_json(json.loads((folder / HISTORY_FILE).read_text(encoding="utf-8")))
    return Bidder(load_artifact(folder), history)
