"""Guarded rollout: a launched version serves a share of the slots first, beside the previous version,
and widens only when the evidence says it is at least as good.

- Which slots: a deterministic hash of the slot (campaign x audience package) below the share, so a
  slot stays with one version as the share grows (the share's slots are a subset of the next share's)
  and every panel, API process and the worker agree without storing an assignment.
- What "as good" means: the version's value calibration (realised GMV / the value it predicted for the
  clicks it bought, the guard's k) is not significantly lower than the previous version's on its own
  slots, within the gate's tolerance. The bounds are computed by the caller (compound Poisson, as the
  ROI guard's, app.launch); this module only decides.
- `rollout_step` is pure: widen to the next step, hold, or roll back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ROLLOUT_STEPS = (0.05, 0.1, 0.25, 0.5, 1.0)


def slot_position(campaign_id: str, audience_package: str) -> float:
    """The slot's fixed place in [0, 1): it is in a rollout share s when its place is below s."""
    digest = hashlib.sha256(f"{campaign_id}\x1f{audience_package}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def in_share(campaign_id: str, audience_package: str, share: float) -> bool:
    return slot_position(campaign_id, audience_package) < share


def slot_versions(campaign_ids: Sequence[str], packages: Sequence[str], version: str, previous: str | None,
                  share: float) -> np.ndarray:
    """Per slot, the version that decides it: `version` for the slots in its share, else `previous`."""
    inside = np.array([in_share(c, p, share) for c, p in zip(campaign_ids, packages, strict=True)], dtype=bool)
    out = np.full(len(inside), previous, dtype=object)
    out[inside] = version
    return out


def next_share(share: float) -> float:
    return next((s for s in ROLLOUT_STEPS if s > share + 1e-12), 1.0)


@dataclass(frozen=True)
class VersionEvidence:
    """One version's value calibration on its own slots since the rollout began: k with its one-sided
    bounds and the effective orders behind it (k None: no clicks yet)."""

    k: float | None
    low: float | None
    high: float | None
    orders: float


@dataclass(frozen=True)
class RolloutConfig:
    tolerance: float = 0.15     # the gate's calibration tolerance: how much lower k may be
    min_orders: float = 100.0   # effective orders the new version needs before a step
    min_step_s: int = 1800      # the least time at a share before it widens


@dataclass(frozen=True)
class RolloutDecision:
    action: str                 # widen | hold | rollback
    share_after: float
    reason: str
    figures: dict


def rollout_step(share: float, since_ts: int, now_ts: int, new: VersionEvidence, previous: VersionEvidence,
                 config: RolloutConfig = RolloutConfig()) -> RolloutDecision:
    """Widen, hold or roll back the share. The bar is the previous version's calibration (at most 1:
    under-promising is not a fault to match) less the tolerance. Roll back when the new version's
    upper bound is below it (significantly worse); widen when its lower bound reaches it, with enough
    evidence and time at the share; else hold."""
    bar_base = 1.0 if previous.k is None else min(1.0, previous.k)
    bar = bar_base * (1.0 - config.tolerance)
    figures = {"share": share, "k": new.k, "low": new.low, "high": new.high, "orders": new.orders,
               "previous_k": previous.k, "bar": round(bar, 4)}
    if new.k is None or new.orders < config.min_orders:
        return RolloutDecision("hold", share, "not_enough_evidence", figures)
    if new.high is not None and new.high < bar:
        return RolloutDecision("rollback", 0.0, "significantly_worse", figures)
    if now_ts - since_ts < config.min_step_s:
        return RolloutDecision("hold", share, "too_soon", figures)
    if new.low is not None and new.low >= bar:
        return RolloutDecision("widen", next_share(share), "at_least_as_good", figures)
    return RolloutDecision("hold", share, "undecided", figures)
