"""Common random numbers: keyed uniforms, exact inverse-CDF samplers, exact counterfactuals."""

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats
from sim_support import full_kit, kit_for, small_scenario

from control.domain import GuardMode, GuardState
from sim import crn
from sim.catalog import DAY_START_TS
from sim.engine import DECISION_COLUMNS, Simulation
from sim.scenario import load_scenario
from sim.stress import run_arm, run_stress
from sim.world import World

N = 200_000  # draws per distribution check


def within(sample: np.ndarray, mean: float, var: float, kurtosis: float, z: float = 5.0) -> tuple[bool, bool]:
    """(mean ok, variance ok): each within z standard errors of theory (SE from the theoretical
    variance and kurtosis); at N = 200,000 that is ~1.6% of the variance."""
    n = len(sample)
    mean_ok = abs(sample.mean() - mean) <= z * np.sqrt(var / n)
    var_ok = abs(sample.var(ddof=1) - var) <= z * var * np.sqrt((kurtosis - 1) / n)
    return bool(mean_ok), bool(var_ok)


def uniforms(purpose: str, n: int = N) -> np.ndarray:
    return crn.KeyedDraws(20261202).uniform(purpose, 7, n)


# --- keyed uniforms --------------------------------------------------------------------------


def test_a_uniform_is_a_function_of_seed_purpose_minute_and_position():
    a = crn.KeyedDraws(5)
    block = a.uniform("orders", 300, 480)
    assert np.array_equal(block, crn.KeyedDraws(5).uniform("orders", 300, 480))
    assert np.array_equal(a.uniform("orders", 300, 40), block[:40])   # slot s is position s, whatever the length
    assert np.array_equal(a.uniform("lag", 300, (480, 8))[:, 0], a.uniform("lag", 300, 480 * 8)[::8])
    for other in (a.uniform("orders", 301, 480), a.uniform("gmv", 300, 480), crn.KeyedDraws(6).uniform("orders", 300, 480)):
        assert not np.isin(block, other).any()
    u = uniforms("u")
    assert u.min() > 0.0 and u.max() < 1.0
    assert within(u, 0.5, 1 / 12, 1.8) == (True, True)
    assert stats.kstest(u, "uniform").pvalue > 0.001


# --- exact inverse CDFs ----------------------------------------------------------------------


def test_binomial_and_poisson_are_the_exact_inverse_cdf():
    rng = np.random.default_rng(3)
    u = uniforms("exact", 50_000)
    n = rng.integers(0, 5000, len(u))
    p = rng.uniform(0, 1, len(u))
    p[::5] = 10 ** rng.uniform(-9, -2, len(p[::5]))    # tiny probabilities (a low bid's win rate)
    p[1::5] = 1 - 10 ** rng.uniform(-9, -2, len(p[1::5]))
    assert np.array_equal(crn.binomial(u, n, p), stats.binom.ppf(u, n, p))
    lam = 10 ** rng.uniform(-4, 4, len(u))
    assert np.array_equal(crn.poisson(u, lam), stats.poisson.ppf(u, lam))
    assert np.array_equal(crn.binomial(u[:3], [0, 7, 7], [0.5, 0.0, 1.0]), [0, 0, 7])
    assert np.array_equal(crn.poisson(u[:2], [0.0, 0.0]), [0, 0])


@pytest.mark.parametrize(("n", "p"), [(30, 0.02), (400, 0.35), (3000, 0.9)])
def test_binomial_draws_have_the_binomial_mean_and_variance(n, p):
    var = n * p * (1 - p)
    kurtosis = 3 + (1 - 6 * p * (1 - p)) / var
    u = uniforms(f"binomial-{n}")
    assert within(crn.binomial(u, np.full(N, n), p).astype(float), n * p, var, kurtosis) == (True, True)
    # the tolerance cannot pass by accident: 3% more successes already fail it
    assert within(crn.binomial(u, np.full(N, n), p * 1.03).astype(float), n * p, var, kurtosis)[0] is False


@pytest.mark.parametrize("lam", [0.3, 12.0, 2500.0])
def test_poisson_draws_have_the_poisson_mean_and_variance(lam):
    u = uniforms(f"poisson-{lam}")
    assert within(crn.poisson(u, np.full(N, lam)).astype(float), lam, lam, 3 + 1 / lam) == (True, True)
    assert within(crn.poisson(u, np.full(N, lam * 1.03)).astype(float), lam, lam, 3 + 1 / lam)[0] is False


@pytest.mark.parametrize("shape", [4.0, 12.0, 400.0])   # one order .. a hundred orders' GMV
def test_gamma_draws_have_the_gamma_mean_and_variance(shape):
    u = uniforms(f"gamma-{shape}")
    x = crn.gamma(u, np.full(N, shape), 0.25)
    assert within(x, shape / 4, shape / 16, 3 + 6 / shape) == (True, True)
    assert stats.kstest(x, stats.gamma(shape, scale=0.25).cdf).pvalue > 0.001
    # a gamma of the wrong spread (same mean) fails the variance check
    assert within(crn.gamma(u, np.full(N, shape * 1.1), 0.25 / 1.1), shape / 4, shape / 16, 3 + 6 / shape)[1] is False
    assert np.array_equal(crn.gamma(u[:2], [0.0, 0.0]), [0.0, 0.0])


def test_the_lag_split_is_a_multinomial_of_the_shares():
    shares = np.array([0.35, 0.2, 0.14, 0.11, 0.09, 0.06, 0.03, 0.02])
    n = 9
    counts = crn.multinomial_split(crn.KeyedDraws(1).uniform("lag", 0, (N, len(shares))), np.full(N, n), shares)
    assert (counts.sum(axis=1) == n).all() and (counts >= 0).all()
    for k, s in enumerate(shares):
        var = n * s * (1 - s)
        assert within(counts[:, k].astype(float), n * s, var, 3 + (1 - 6 * s * (1 - s)) / var) == (True, True), k
    # covariance of two bins: -n s_i s_j
    cov = np.cov(counts[:, 0], counts[:, 1])[0, 1]
    assert cov == pytest.approx(-n * shares[0] * shares[1], abs=5 * np.sqrt(n * shares[0] * shares[1] / N) * 2)
    # the pooled counts of the bins: a chi-square fit to the shares
    assert stats.chisquare(counts.sum(axis=0), shares * n * N).pvalue > 0.001


def test_the_lag_splits_table_gives_what_the_sequential_binomials_give():
    shares = np.array([0.35, 0.2, 0.14, 0.11, 0.09, 0.06, 0.03, 0.02])
    rng = np.random.default_rng(8)
    n = np.concatenate([rng.integers(0, 70, 20_000), rng.integers(60, 400, 2_000)])  # across the table's edge
    u = crn.KeyedDraws(2).uniform("lag", 0, (len(n), len(shares)))
    tail = np.cumsum(shares[::-1])[::-1]
    left, expected = n.copy(), np.zeros((len(n), len(shares)), dtype=np.int64)
    for k in range(len(shares) - 1):
        expected[:, k] = crn.binomial(u[:, k], left, shares[k] / tail[k])
        left -= expected[:, k]
    expected[:, -1] = left
    assert np.array_equal(crn.multinomial_split(u, n, shares), expected)


def test_inversion_couples_monotonically():
    rng = np.random.default_rng(4)
    u = uniforms("monotone", 50_000)
    n = rng.integers(0, 2000, len(u))
    p1 = rng.uniform(0, 1, len(u))
    p2 = np.minimum(p1 + rng.uniform(0, 0.2, len(u)), 1.0)
    assert (crn.binomial(u, n, p2) >= crn.binomial(u, n, p1)).all()      # a higher win probability: never fewer wins
    assert (crn.binomial(u, n + rng.integers(0, 50, len(u)), p1) >= crn.binomial(u, n, p1)).all()
    lam = 10 ** rng.uniform(-2, 3, len(u))
    assert (crn.poisson(u, lam * 1.1) >= crn.poisson(u, lam)).all()
    a = rng.integers(1, 40, len(u)) * 4.0
    assert (crn.gamma(u, a + 4) >= crn.gamma(u, a)).all()


# --- the simulator's draws -------------------------------------------------------------------


def simulation(scenario, seed):
    kit = kit_for(scenario.world.campaigns)
    return Simulation(scenario, seed, kit.bidders, kit.history, pool=kit.pool)


def test_same_seed_and_policy_play_the_same_day_and_another_seed_does_not():
    scenario = small_scenario()
    a, b, c = simulation(scenario, 21), simulation(scenario, 21), simulation(scenario, 22)
    for name in ("ctr_day", "cvr_day", "cpi_base", "opening_stock"):
        assert np.array_equal(getattr(a.world, name), getattr(b.world, name)), name
    assert not np.array_equal(a.world.ctr_day, c.world.ctr_day)
    assert np.array_equal(World(scenario, 21).cvr_day, a.world.cvr_day)
    # a Generator (as older callers passed) keys the world by a seed drawn from it
    assert np.array_equal(World(scenario, np.random.default_rng(1)).ctr_day,
                          World(scenario, np.random.default_rng(1)).ctr_day)
    differs = set()
    for _ in range(40):
        ra, rb, rc = a.step(), b.step(), c.step()
        for column in DECISION_COLUMNS:
            assert np.array_equal(ra.columns[column], rb.columns[column]), column
        differs |= {col for col in ("auctions", "impressions", "clicks", "orders", "gmv")
                    if not np.array_equal(ra.columns[col], rc.columns[col])}
    assert differs == {"auctions", "impressions", "clicks", "orders", "gmv"}


class OneMinute:
    """A guard hook that puts one campaign in `state` for one minute, and nothing else."""

    def __init__(self, state: GuardState, minute: int):
        self.state, self.minute = state, minute

    def guard_states(self, now_ts, last):
        return {self.state.campaign_id: self.state} if now_ts == DAY_START_TS + 60 * self.minute else {}


def per_minute(scenario, seed, kit, minutes, hook=None):
    """(campaigns, minutes) spend, clicks, orders and GMV of an arm, and the arm's run."""
    C = scenario.world.campaigns
    out = {k: np.zeros((C, minutes)) for k in ("spend", "clicks", "orders", "gmv")}

    def record(r):
        campaign_of = np.arange(len(r.columns["campaign_id"])) * C // len(r.columns["campaign_id"])  # campaign-major
        for k in out:
            out[k][:, r.minute] = np.bincount(campaign_of, weights=r.columns[k], minlength=C)

    run = run_arm(scenario, seed, kit.bidders, kit.history, kit.pool, guard_hook=hook, on_bucket=record,
                  minutes=minutes)
    return out, run


def assert_only_campaign_differs(scenario, seed, kit, state, minute, minutes):
    ids = kit.catalog.campaign_ids
    c = ids.index(state.campaign_id)
    plain, plain_run = per_minute(scenario, seed, kit, minutes)
    moved, moved_run = per_minute(scenario, seed, kit, minutes, OneMinute(state, minute))
    others = np.arange(len(ids)) != c
    for k in plain:   # every other campaign: bit-identical, minute by minute, all day
        assert np.array_equal(plain[k][others], moved[k][others]), k
        assert np.array_equal(plain[k][c, :minute], moved[k][c, :minute]), k   # and the campaign before it
    assert not np.array_equal(plain["spend"][c, minute], moved["spend"][c, minute])  # the minute did change
    margin = np.array([x.gross_margin for x in kit.catalog.campaigns])
    profit = {name: r.gmv.sum(axis=1) * margin - r.spend.sum(axis=1)
              for name, r in (("plain", plain_run), ("moved", moved_run))}
    diff = profit["moved"] - profit["plain"]
    assert (diff[others] == 0.0).all()
    assert diff.sum() == diff[c]   # guarded - model profit is exactly the campaign's own difference
    assert diff[c] != 0.0
    return diff[c]


@pytest.mark.parametrize("state", [GuardState("c03", GuardMode.TRIPPED, event_id=1),
                                   GuardState("c03", GuardMode.PROBATION, canary_share=0.3, event_id=1)],
                         ids=["tripped", "probation"])
def test_one_campaign_on_the_pool_for_one_minute_changes_nothing_else(state):
    scenario = small_scenario()
    assert_only_campaign_differs(scenario, 9, kit_for(scenario.world.campaigns), state, 60, 150)


def test_818_one_campaign_tripped_for_one_minute_loss_avoided_is_its_own_difference():
    """The issue's check on the full 818 catalog: c05 on the rule pool at minute 90 only."""
    scenario, kit = load_scenario("818"), full_kit()
    state = GuardState("c05", GuardMode.TRIPPED, event_id=1)
    own = assert_only_campaign_differs(scenario, 1, kit, state, 90, 180)
    report = run_stress(scenario, 1, kit.bidders, kit.history, kit.pool, guard_hook=OneMinute(state, 90),
                        arms=("model",), minutes=180)
    model, guarded = (report["arms"][a]["by_campaign"] for a in ("model", "guarded"))
    assert [row for row in model if row["campaign"] != "c05"] == [row for row in guarded if row["campaign"] != "c05"]
    assert report["loss_avoided"] == pytest.approx(own, abs=0.011)   # the report rounds each arm to the fen


def test_traffic_does_not_depend_on_the_policy():
    scenario = replace(small_scenario(), name="crn")
    a, b = simulation(scenario, 3), simulation(scenario, 3)
    for m in range(12):
        guards = {"c02": GuardState("c02", GuardMode.TRIPPED)} if m == 5 else {}
        ra, rb = a.step(), b.step(guards=guards)
        assert np.array_equal(ra.columns["auctions"], rb.columns["auctions"])   # traffic never moves
