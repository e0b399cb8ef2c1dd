"""The bucket-time CUSUM (guards.sequential): the vectorised form is the definition, max over the runs
of each campaign's newest buckets of the summed log-likelihood ratio, whatever order the rows come in."""

from __future__ import annotations

import numpy as np

from guards.sequential import cusum_by_campaign

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


def test_the_cusum_is_its_definition_for_rows_in_any_order():
    rng = np.random.default_rng(7)
    for _ in range(40):
        n = int(rng.integers(1, 30))
        pairs = np.unique(np.c_[rng.integers(-1, n, 300), rng.integers(0, 40, 300)], axis=0)
        pairs = pairs[rng.permutation(len(pairs))]  # not in load_inputs' order: the function sorts
        codes, bucket = pairs[:, 0], pairs[:, 1]
        g = rng.poisson(2.0, len(codes)).astype(float)
        e = rng.uniform(0.0, 3.0, len(codes))
        floor = rng.uniform(1.5, 2.5, n)
        got = cusum_by_campaign(codes, bucket, g, e, floor, 0.1, BELOW, n)
        assert np.allclose(got, cusum_by_definition(codes, bucket, g, e, floor, 0.1, BELOW, n), atol=1e-9)


def test_a_campaign_without_rows_has_no_evidence():
    got = cusum_by_campaign(np.array([0, 0]), np.array([1, 2]), np.array([0.0, 0.0]), np.array([5.0, 5.0]),
                            np.array([2.0, 2.0, 2.0]), 0.1, BELOW, 3)
    assert got[1] == got[2] == 0.0 and got[0] > 0  # spend with no GMV: evidence that ROI is below the floor
