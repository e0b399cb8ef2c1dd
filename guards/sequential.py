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

import numpy as np


def lag_share_at_end(age_since_end: np.ndarray, lag_seconds: np.ndarray, lag_cdf: np.ndarray) -> np.ndarray:
    """F: the share of a bucket's GMV the lag curve expects known, at an age counted from the bucket's
    end (a step function: cdf[k] from lag_seconds[k] on, 0 before the bucket has ended)."""
    idx = np.searchsorted(lag_seconds, age_since_end, side="right") - 1
    return np.where(idx >= 0, lag_cdf[np.clip(idx, 0, None)], 0.0)


def cusum_by_campaign(codes: np.ndarray, bucket: np.ndarray, gmv_units: np.ndarray, exposure_units: np.ndarray,
                      floor: np.ndarray, above: float, below: tuple[float, ...], n: int) -> np.ndarray:
    """The bucket-time CUSUM per campaign (module docstring).

    Per campaign x bucket row: its campaign code, bucket, GMV known / s and spend x F / s; `floor` per
    campaign. Returns S (n,), 0 for a campaign without rows.

    With a campaign's buckets in time order and P_k the sum of its first k llr (P_0 = 0), the largest
    sum over a run of its newest buckets is P_m - min(P_0 .. P_m-1): running sums and one segment
    reduction per fall over all campaigns at once, no loop over campaigns."""
    ok = codes >= 0
    codes, bucket, g, e = codes[ok], bucket[ok], gmv_units[ok], exposure_units[ok]
    out = np.zeros(n)
    if not len(codes):
        return out
    step = np.diff(codes)
    if not ((step > 0) | ((step == 0) & (np.diff(bucket) > 0))).all():  # load_inputs' order is usually this
        order = np.lexsort((bucket, codes))
        codes, g, e = codes[order], g[order], e[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)] - 1
    sizes = np.diff(np.r_[starts, len(codes)])
    # llr = g ln(rho1/rho0) - (rho1 - rho0) e is linear in g and floor x e, whose ratio and difference
    # factors are the same for every campaign: two running sums serve all the falls.
    fe = floor[codes] * e
    g_sum, fe_sum = np.cumsum(g), np.cumsum(fe)
    g_prefix = g_sum - np.repeat(np.r_[0.0, g_sum][starts], sizes)   # within each campaign, inclusive
    fe_prefix = fe_sum - np.repeat(np.r_[0.0, fe_sum][starts], sizes)
    g_before, fe_before = g_prefix - g, fe_prefix - fe                # the sums before each bucket
    campaigns = codes[starts]
    for b in below:
        log_ratio, spread = np.log((1.0 - b) / (1.0 + above)), (1.0 - b) - (1.0 + above)
        before = log_ratio * g_before - spread * fe_before              # P_k-1 for this fall
        best = (log_ratio * g_prefix[ends] - spread * fe_prefix[ends]) - np.minimum.reduceat(before, starts)
        out[campaigns] = np.maximum(out[campaigns], best)
    return np.maximum(out, 0.0)
