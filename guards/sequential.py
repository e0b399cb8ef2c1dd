"""Sequential evidence for the ROI guard: a CUSUM of realised GMV against the floor.

A campaign's GMV arrives in increments (conversion lag). Between two looks at the
outcome feed -- its watermark moving from Wp to W -- the GMV that became known is
compared with what the campaign would have brought by then at ROI rho:

    rho x exposure,   exposure = sum over buckets b of spend_b x (F(W - b) - F(Wp - b))

F is the lag curve (share of a bucket's GMV known at an age). GMV is compound
Poisson: a Poisson number of orders whose values spread (coefficient of variation
cv); counted in units of s = aov x (1 + cv^2) it has the variance of a Poisson count,
so its quasi-likelihood is Poisson's. The log-likelihood ratio of "ROI rho1, below the
floor" against "ROI rho0, above it" for one look is

    llr = (gmv / s) ln(rho1 / rho0) - (rho1 - rho0) x exposure / s

and the CUSUM S = max(0, S + llr) accumulates it: evidence adds up over time instead
of a fixed window being re-tested every minute, and a healthy stretch (llr < 0) brings
S back to 0, so old evidence does not hide a new fall. Its expected step is zero at
rho_ref = (rho0 - rho1) / ln(rho0 / rho1), just below the floor for margins around it:
above rho_ref S drifts down, below it S climbs at a rate set by how far below and by
how much the campaign spends. The rule breaches at S >= h; h sets the false-alarm
rate (docs/GUARDS.md: how it was chosen, and what the best possible detector needs).
"""

from __future__ import annotations

import numpy as np


def cusum_step(previous: np.ndarray, gmv: np.ndarray, exposure: np.ndarray, scale: np.ndarray,
               rho0: np.ndarray, rho1: np.ndarray) -> np.ndarray:
    """S after one look, per campaign: max(0, S + llr). `scale` is s = aov x (1 + cv^2)."""
    safe = np.where(scale > 0, scale, 1.0)
    llr = (gmv / safe) * np.log(rho1 / rho0) - (rho1 - rho0) * exposure / safe
    llr = np.where(scale > 0, llr, 0.0)
    return np.maximum(0.0, previous + llr)


def reference_roi(rho0: float, rho1: float) -> float:
    """The ROI at which the CUSUM's expected step is zero: it climbs below, falls above."""
    return (rho0 - rho1) / np.log(rho0 / rho1)


def lag_share_gain(bucket_ts: np.ndarray, watermark_before: int, watermark_now: int,
                   lag_seconds: np.ndarray, lag_cdf: np.ndarray) -> np.ndarray:
    """F(W - b) - F(Wp - b) per bucket: the share of each bucket's GMV that became known between the two
    watermarks (F a step function: cdf[k] from lag_seconds[k] on; 0 before the bucket starts)."""
    def share(age: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(lag_seconds, age, side="right") - 1
        return np.where(idx >= 0, lag_cdf[np.clip(idx, 0, None)], 0.0)

    b = np.asarray(bucket_ts, dtype=np.float64)
    return share(watermark_now - b) - share(watermark_before - b)
