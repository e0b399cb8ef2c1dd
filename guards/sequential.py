"""Sequential evidence for the ROI guard: a CUSUM of realised GMV against the floor, in bucket time.

Each decision bucket b of a campaign has spent spend_b; by the outcome feed's
watermark W, the lag curve F says a share F(W - end of b) of its GMV should be known.
At ROI rho the GMV known of b is expected to be rho x spend_b x F. GMV is compound
Poisson: a Poisson number of orders whose values spread (coefficient of variation cv);
counted in units of s = aov x (1 + cv^2) it has the variance of a Poisson count, so its
quasi-likelihood is Poisson's. The log-likelihood ratio of "ROI rho1, below the floor"
against "ROI rho0, above it" for bucket b, as known now, is

    llr_b = (gmv_b / s) ln(rho1 / rho0) - (rho1 - rho0) x spend_b x F / s

and the statistic is the CUSUM over buckets: S = max(0, max over j of the sum of llr_b
for b >= j), the evidence that ROI fell below the floor at some bucket j and stayed
there. Evidence adds up over time instead of a fixed window being re-tested every
minute. It is counted in bucket time, not in the time outcomes arrive: the late GMV of
buckets before a fall is evidence about them, not about now, so it cannot dilute the
evidence about the buckets after it (counting by arrival time, it did: a fall took
half again as long to show).

rho1 is not known in advance: S is the largest over a few alternatives
(floor x (1 - b) for each b of `below`), a mixture that is quick on deep falls and
still sees shallow ones. Its expected step is zero at rho_ref = (rho0 - rho1) /
ln(rho0 / rho1), just below the floor for rho0 = floor x (1 + above): above it S drifts
down, below it S climbs at a rate set by how far below and how much the campaign spends.
The rule breaches at S >= threshold; docs/GUARDS.md says how it was chosen and what the
best possible detector needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


def lag_share_at_end(age_since_end: np.ndarray, lag_seconds: np.ndarray, lag_cdf: np.ndarray) -> np.ndarray:
    """F: the share of a bucket's GMV the lag curve expects known, at an age counted from the bucket's
    end (a step function: cdf[k] from lag_seconds[k] on, 0 before the bucket has ended)."""
    idx = np.searchsorted(lag_seconds, age_since_end, side="right") - 1
    return np.where(idx >= 0, lag_cdf[np.clip(idx, 0, None)], 0.0)


def cusum(gmv_units: np.ndarray, exposure_units: np.ndarray, floor: np.ndarray, above: float,
          below: tuple[float, ...]) -> np.ndarray:
    """The bucket-time CUSUM per campaign (module docstring).

    `gmv_units`, `exposure_units`: campaigns x buckets in time order, GMV known / s and spend x F / s (0
    where a campaign has no outcome in a bucket); `floor` per campaign. Returns S per campaign.

    With P_k the sum of a campaign's first k llr (P_0 = 0), the largest sum over a run of its newest
    buckets is P_m - min(P_0 .. P_m-1). llr = g ln(rho1/rho0) - (rho1 - rho0) e is linear in g and
    floor x e with factors the same for every campaign, so two running sums serve all the falls."""
    n, width = gmv_units.shape
    if width == 0:
        return np.zeros(n)
    g_sum = np.cumsum(gmv_units, axis=1)
    fe_sum = np.cumsum(exposure_units * floor[:, None], axis=1)
    out = np.zeros(n)
    for b in below:
        log_ratio, spread = np.log((1.0 - b) / (1.0 + above)), (1.0 - b) - (1.0 + above)
        prefix = log_ratio * g_sum - spread * fe_sum                     # P_1 .. P_m
        lowest = np.minimum(prefix[:, :-1].min(axis=1, initial=0.0), 0.0)  # min(P_0 .. P_m-1)
        out = np.maximum(out, prefix[:, -1] - lowest)
    return np.maximum(out, 0.0)


# Peaks-over-threshold levels for `null_tail`: most healthy campaign-days' peaks lie below 4, and each level
# keeps enough peaks over it on a 60-day benchmark (MIN_EXCEEDANCES) to estimate a rate.
TAIL_LEVELS = (4.0, 4.5, 5.0)
MIN_EXCEEDANCES = 10
# The issue asks for no false trip over normal seeds 1-20 (800 campaign-days): one in 8,000 campaign-days shows
# none there with 90% probability (e^(-0.1)).
FALSE_TRIP_BUDGET = 1 / 8000


@dataclass(frozen=True)
class TailFit:
    """The exponential tail of healthy campaign-days' daily peak S beyond one level."""

    level: float
    exceedances: int
    rate_per_nat: float          # lambda: P(peak >= level + x) = P(peak >= level) e^(-lambda x)
    rate_low: float              # its lower confidence bound (the cautious side: a slower fall of the tail)
    at_threshold: float          # estimated false trips per campaign-day at the threshold, with rate_low
    threshold_for_budget: float  # the threshold whose estimate (with rate_low) is the budget


def null_tail(peaks: np.ndarray, threshold: float, budget: float = FALSE_TRIP_BUDGET, confidence: float = 0.9,
              levels: tuple[float, ...] = TAIL_LEVELS) -> list[TailFit]:
    """How often healthy campaign-days would reach S >= `threshold`, from each one's highest S of the day.

    A CUSUM's excursions above a level have an exponential tail, so beyond a level u the peaks' excess is
    exponential with rate lambda = 1 / mean excess (its maximum-likelihood estimate from the k peaks over u,
    with relative standard error 1 / sqrt(k)). Extrapolating with the lower bound of lambda answers far
    rarer events than the days measured hold (a threshold's false trips per campaign-day is well below one
    in the number of days a benchmark can play). Levels with fewer than MIN_EXCEEDANCES peaks are left out."""
    peaks = np.asarray(peaks, dtype=np.float64)
    z = NormalDist().inv_cdf(confidence)
    fits = []
    for u in levels:
        excess = peaks[peaks >= u] - u
        k = len(excess)
        if k < MIN_EXCEEDANCES or excess.mean() <= 0:
            continue
        rate = 1.0 / float(excess.mean())
        low = rate * max(1.0 - z / np.sqrt(k), 0.1)
        p_u = k / len(peaks)
        fits.append(TailFit(u, k, rate, low, p_u * float(np.exp(-low * (threshold - u))),
                            u + float(np.log(p_u / budget)) / low))
    return fits
