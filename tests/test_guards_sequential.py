"""The bucket-time CUSUM (guards.sequential): the vectorised form is the definition, max over the runs
of each campaign's newest buckets of the summed log-likelihood ratio."""

from __future__ import annotations

import numpy as np

from guards.sequential import cusum

BELOW = (0.075, 0.2, 0.35, 0.5)


def cusum_by_definition(codes, bucket, g, e, floor, above, below, n) -> np.ndarray:
    out = np.zeros(n)
    for c in range(n):
        mine = np.flatnonzero(codes == c)
        mine = mine[np.argsort(bucket[mine])]
        for b in below:
            rho0, rho1 = floor[c] * (1 + above), floor[c] * (1 - b)
            llr = g[mine] * np.log(rho1 / rho0) - (rho1 - rho0) * e[mine]
            runs = [llr[j:].sum() for j in range(len(llr))]  # each run of the newest buckets
            out[c] = max(out[c], max(runs, default=0.0))
    return out


def table(codes, bucket, values, n, width) -> np.ndarray:
    out = np.zeros((n, width))
    out[codes, bucket] = values
    return out


def test_the_cusum_is_its_definition():
    rng = np.random.default_rng(7)
    for _ in range(40):
        n, width = int(rng.integers(1, 30)), 40
        pairs = np.unique(np.c_[rng.integers(0, n, 300), rng.integers(0, width, 300)], axis=0)
        codes, bucket = pairs[:, 0], pairs[:, 1]  # buckets without outcomes are 0 in the tables
        g = rng.poisson(2.0, len(codes)).astype(float)
        e = rng.uniform(0.0, 3.0, len(codes))
        floor = rng.uniform(1.5, 2.5, n)
        got = cusum(table(codes, bucket, g, n, width), table(codes, bucket, e, n, width), floor, 0.1, BELOW)
        assert np.allclose(got, cusum_by_definition(codes, bucket, g, e, floor, 0.1, BELOW, n), atol=1e-9)


def test_a_campaign_without_outcomes_has_no_evidence():
    g, e = np.zeros((3, 2)), np.zeros((3, 2))
    e[0] = 5.0  # spend with no GMV: evidence that ROI is below the floor
    got = cusum(g, e, np.array([2.0, 2.0, 2.0]), 0.1, BELOW)
    assert got[1] == got[2] == 0.0 and got[0] > 0
