"""Common random numbers: every random draw of the simulator keyed by (seed, purpose, minute, slot).

A draw is one uniform turned into a sample by its distribution's inverse CDF. The uniforms come
from numpy's counter-based `Philox` generator: for each (purpose, minute) one block, key =
blake2b(seed, purpose), counter = the minute; position s of the block belongs to slot s (row s
for a (slots, k) block). Nothing is drawn from a shared stream, so a slot's draw depends only on
(seed, purpose, minute, slot) and its own parameters: two runs of the same seed differ only
where their policies (or a campaign's own budget and stock) differ, and a counterfactual such as
"this campaign on the rule pool for one minute" changes nothing else.

Inverse CDFs are exact: the discrete samplers return the smallest k with CDF(k) >= u, found from
a Cornish-Fisher guess corrected by evaluating the CDF (scipy's incomplete beta and gamma
functions: absolute error ~1e-14 for the simulator's up to ~10^4 trials); the result differs
from the true quantile only when u lies within that rounding of a CDF step (probability ~1e-14
per draw, and then by one). Inversion gives monotone coupling: from the same uniform a higher
probability (or more trials) never gives fewer successes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
from scipy.special import betainc, gammaincinv, ndtri, pdtr

_SCHEME = b"bidlens-crn-v1"  # blake2b personalisation (<= 16 bytes): a new keying scheme gets a new tag
_TO_UNIT = 2.0 ** -53


def purpose_key(seed: int, purpose: str) -> np.ndarray:
    """Philox's 128-bit key for a (seed, purpose): a hash, so purposes are independent streams."""
    digest = hashlib.blake2b(f"{int(seed)}:{purpose}".encode(), digest_size=16, person=_SCHEME).digest()
    return np.frombuffer(digest, dtype=np.uint64).copy()


class KeyedDraws:
    """Uniforms keyed by (seed, purpose, minute); position s of a block belongs to slot s."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._keys: dict[str, np.ndarray] = {}

    def uniform(self, purpose: str, minute: int, shape: int | tuple[int, ...]) -> np.ndarray:
        """A block of uniforms in (0, 1), never exactly 0 or 1 (midpoints of the 2^53 grid)."""
        key = self._keys.get(purpose)
        if key is None:
            key = self._keys[purpose] = purpose_key(self.seed, purpose)
        # The minute sits in the counter's second word: a block walks the first word, so the
        # blocks of two minutes never overlap, and a longer block starts with the shorter one.
        bits = np.random.Philox(key=key, counter=[0, int(minute), 0, 0]).random_raw(int(np.prod(shape)))
        return ((bits >> np.uint64(11)).astype(np.float64) + 0.5).reshape(shape) * _TO_UNIT


# --- inverse CDFs ---------------------------------------------------------------------------------


def _invert(u: np.ndarray, guess: np.ndarray, top: np.ndarray,
            cdf: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Smallest integer k in [0, top] with cdf(k, rows) >= u, per element, starting at `guess`.

    `cdf(k, rows)` evaluates the CDF at k for the elements `rows`; cdf(top) must be 1."""
    k = np.clip(guess, 0, top).astype(np.int64)
    rows = np.arange(len(u))
    low = cdf(k, rows) < u
    up = rows[low]
    while up.size:  # every step up passed a CDF below u: stepped-up elements are done
        k[up] += 1
        up = up[cdf(k[up], up) < u[up]]
    down = rows[~low & (k > 0)]
    while down.size:
        move = cdf(k[down] - 1, down) >= u[down]
        down = down[move]
        k[down] -= 1
        down = down[k[down] > 0]
    return k


def poisson(u: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Poisson(lam) by inversion, int64; 1-D arrays."""
    u, lam = np.asarray(u, dtype=np.float64), np.asarray(lam, dtype=np.float64)
    out = np.zeros(len(u), dtype=np.int64)
    live = np.flatnonzero(lam > 0)
    if not live.size:
        return out
    uu, mu = u[live], lam[live]
    z = ndtri(uu)
    # Cornish-Fisher guess (continuity-corrected), only the search's starting point
    guess = np.ceil(mu + np.sqrt(mu) * z + (z * z - 1.0) / 6.0 - 0.5)
    top = np.full(len(uu), np.iinfo(np.int64).max)  # the search stops where the CDF reaches u < 1
    out[live] = _invert(uu, guess, top, lambda k, r: pdtr(k, mu[r]))
    return out


def _binomial_cdf(k: np.ndarray, n: np.ndarray, q: np.ndarray) -> np.ndarray:
    """P(Binomial(n, 1 - q) <= k) for 0 <= k, 0 < q < 1: I_q(n - k, k + 1), 1 from k = n on.
    (scipy's betaincc with p itself is 6x slower here; taking q = 1 - p costs at most ~1e-16
    absolute in p, so ~n * 1e-16 in the CDF.)"""
    below = k < n
    return np.where(below, betainc(np.where(below, n - k, 1.0), k + 1.0, q), 1.0)


def binomial(u: np.ndarray, n: np.ndarray, p: np.ndarray | float) -> np.ndarray:
    """Binomial(n, p) by inversion, int64; 1-D arrays (p may be a scalar), n >= 0, p in [0, 1]."""
    u = np.asarray(u, dtype=np.float64)
    n = np.asarray(n).astype(np.int64, copy=False)
    p = np.broadcast_to(np.asarray(p, dtype=np.float64), n.shape)
    out = np.where(p >= 1.0, n, 0)
    live = np.flatnonzero((n > 0) & (p > 0.0) & (p < 1.0))
    if not live.size:
        return out
    uu, nn, pp = u[live], n[live], p[live]
    nf, qq = nn.astype(np.float64), 1.0 - pp
    z = ndtri(uu)
    guess = np.ceil(nf * pp + np.sqrt(nf * pp * qq) * z + (1.0 - 2.0 * pp) * (z * z - 1.0) / 6.0 - 0.5)
    out[live] = _invert(uu, guess, nn, lambda k, r: _binomial_cdf(k, nf[r], qq[r]))
    return out


def gamma(u: np.ndarray, shape: np.ndarray, scale: float | np.ndarray = 1.0) -> np.ndarray:
    """Gamma(shape, scale) by inversion (0 where shape is 0)."""
    u, shape = np.broadcast_arrays(np.asarray(u, dtype=np.float64), np.asarray(shape, dtype=np.float64))
    out = np.zeros(u.shape)
    live = shape > 0
    if live.any():
        out[live] = gammaincinv(shape[live], u[live])
    return out * scale


def normal(u: np.ndarray) -> np.ndarray:
    """Standard normal by inversion."""
    return ndtri(u)


def _conditional_shares(shares: np.ndarray) -> np.ndarray:
    """share_k / (shares of bins k and after), for every bin but the last."""
    tail = np.cumsum(shares[::-1])[::-1]
    return np.minimum(shares[:-1] / np.where(tail[:-1] > 0, tail[:-1], 1.0), 1.0)


_SPLIT_TABLE_MAX = 64   # counts up to this use the split's CDF table; larger ones search the CDF
_split_tables: dict[tuple[float, ...], np.ndarray] = {}


def _split_table(cond: np.ndarray) -> np.ndarray:
    """(bins - 1, M + 1, M + 1) CDF of Binomial(m, cond_k) at j, M = _SPLIT_TABLE_MAX: the same
    values binomial() compares u with, so looking a draw up here gives the same count."""
    key = tuple(cond.tolist())
    table = _split_tables.get(key)
    if table is None:
        M = _SPLIT_TABLE_MAX
        m, j = np.meshgrid(np.arange(M + 1, dtype=np.float64), np.arange(M + 1, dtype=np.float64), indexing="ij")
        table = np.empty((len(cond), M + 1, M + 1))
        for k, c in enumerate(cond):
            if c <= 0.0:
                table[k] = 1.0
            elif c >= 1.0:
                table[k] = (j >= m).astype(np.float64)
            else:
                table[k] = _binomial_cdf(j, m, np.full(m.shape, 1.0 - c))
        _split_tables[key] = table
    return table


def multinomial_split(u: np.ndarray, n: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """(len(n), len(shares)) counts of a Multinomial(n, shares) draw, as sequential conditional
    binomials: bin k gets Binomial(what is left, share_k / the shares of bins k and after), the
    last bin what is left. `u` (len(n), len(shares)): one uniform per bin (the last one unused).
    Counts up to _SPLIT_TABLE_MAX are inverted from a precomputed CDF table (the orders of one
    slot and minute nearly always are): the same result as binomial(), without its search."""
    n = np.asarray(n, dtype=np.int64)
    shares = np.asarray(shares, dtype=np.float64)
    L = len(shares)
    out = np.zeros((len(n), L), dtype=np.int64)
    cond = _conditional_shares(shares)
    table = _split_table(cond)
    left = n.copy()
    rows = np.flatnonzero(left > 0)
    for k in range(L - 1):
        if not rows.size:
            break
        cnt = left[rows]
        small = cnt <= _SPLIT_TABLE_MAX
        got = np.empty(len(rows), dtype=np.int64)
        if small.any():
            width = int(cnt[small].max()) + 1   # F(j) = 1 from j = count on: a crossing always exists
            cdf = table[k, cnt[small], :width]
            got[small] = np.argmax(cdf >= u[rows[small], k][:, None], axis=1)
        if not small.all():
            got[~small] = binomial(u[rows[~small], k], cnt[~small], cond[k])
        out[rows, k] = got
        left[rows] -= got
        rows = rows[left[rows] > 0]
    out[rows, L - 1] = left[rows]
    return out
