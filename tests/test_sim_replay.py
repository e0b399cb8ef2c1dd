import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.main import main
from control.domain import InvalidValue
from sim.replay import ReplayConfig, replay

# A hand-made log; `my_bid` is what the test bidder bids. Worked by hand for episodes of 3
# auctions, budget 3.0 per episode, max bid 2.5:
#   ge: r0 tie 1.0>=1.0 wins (left 2.0); r1 bid capped to 2.5 then to the 2.0 left < 2.5 loses;
#       r2 2.0>=1.5 wins (left 0.5) | r3 capped 2.5 < 3.0 loses (max bid); r4 tie wins (left 1.0);
#       r5 min(1.0, 1.0) >= 0.8 wins | r6 bid 0 loses.
#       -> wins r0 r2 r4 r5: cost 1+1.5+2+0.8 = 5.3, clicks 1+0+1+1 = 3, value 4+0+6+2 = 12
#   gt: r0 tie loses; r1 2.5 > 2.5 no; r2 wins (left 1.5) | r3 no; r4 tie no; r5 1.0 > 0.8 wins | r6 no.
#       -> wins r2 r5: cost 2.3, clicks 1, value 2
LOG = pd.DataFrame({
    "market_price": [1.0, 2.5, 1.5, 3.0, 2.0, 0.8, 0.1],
    "click":        [1, 1, 0, 1, 1, 1, 1],
    "value":        [4.0, 9.0, 0.0, 7.0, 6.0, 2.0, 5.0],
    "my_bid":       [1.0, 4.0, 2.0, 5.0, 2.0, 1.0, 0.0],
})
CONFIG = dict(budget_per_episode=3.0, episode_size=3, max_bid=2.5)


def logged_bid(batch: pd.DataFrame) -> np.ndarray:
    return batch["my_bid"].to_numpy()


@pytest.mark.parametrize("chunk_rows", [7, 2, 1])
def test_hand_worked_log_ge(tmp_path, chunk_rows):
    path = tmp_path / "log.csv"
    LOG.to_csv(path, index=False)
    result = replay(path, logged_bid, ReplayConfig(**CONFIG, chunk_rows=chunk_rows)).as_json()
    o = result["overall"]
    assert (o["auctions"], o["impressions"], o["clicks"]) == (7, 4, 3)
    assert o["cost"] == pytest.approx(5.3) and o["value"] == pytest.approx(12.0)
    assert o["roi"] == pytest.approx(12 / 5.3, abs=1e-6) and o["win_rate"] == pytest.approx(4 / 7, abs=1e-6)
    assert o["cpm"] == pytest.approx(5.3 / 4 * 1000) and o["ecpc"] == pytest.approx(5.3 / 3)
    assert [(e["episode"], e["impressions"], round(e["cost"], 6)) for e in result["episodes"]] == [
        (0, 2, 2.5), (1, 2, 2.8), (2, 0, 0.0)]


def test_hand_worked_log_gt(tmp_path):
    path = tmp_path / "log.parquet"
    LOG.to_parquet(path)
    o = replay(path, logged_bid, ReplayConfig(**CONFIG, win_rule="gt")).as_json()["overall"]
    assert (o["impressions"], o["clicks"]) == (2, 1)
    assert o["cost"] == pytest.approx(2.3) and o["value"] == pytest.approx(2.0)


def naive_replay(price, bid, episode, budget, max_bid, gt):
    """The rules one auction at a time, as written in the docs."""
    left, wins = {}, []
    for p, b, e in zip(price, bid, episode, strict=True):
        remaining = left.setdefault(e, budget)
        b = min(b, max_bid, remaining)
        won = b > p if gt else b >= p
        if won:
            left[e] = remaining - p
        wins.append(won)
    return np.array(wins)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 50)), min_size=1, max_size=60),
       st.integers(1, 8), st.integers(5, 120), st.booleans(), st.integers(1, 7))
def test_the_vectorised_replay_equals_the_rules_applied_one_auction_at_a_time(tmp_path_factory, rows, size,
                                                                             budget, gt, chunk):
    price = np.array([r[0] / 10 for r in rows])
    bid = np.array([r[1] / 10 for r in rows])
    log = pd.DataFrame({"market_price": price, "click": 1, "my_bid": bid})
    path = tmp_path_factory.mktemp("p") / "log.csv"
    log.to_csv(path, index=False)
    config = ReplayConfig(budget_per_episode=budget / 10, episode_size=size, max_bid=3.0,
                          win_rule="gt" if gt else "ge", chunk_rows=chunk)
    got = replay(path, logged_bid, config).overall
    expected = naive_replay(price, bid, np.arange(len(rows)) // size, budget / 10, 3.0, gt)
    assert got.impressions == int(expected.sum())
    assert got.cost == pytest.approx(float(price[expected].sum()))


def test_budgets_reset_per_hour_when_the_log_has_timestamps(tmp_path):
    log = pd.DataFrame({"market_price": [1.0] * 4, "click": 0, "my_bid": 5.0,
                        "timestamp": [0, 10, 3600, 3700]})
    path = tmp_path / "log.csv"
    log.to_csv(path, index=False)
    result = replay(path, logged_bid, ReplayConfig(budget_per_episode=1.0, episode_by="hour")).as_json()
    assert result["overall"]["impressions"] == 2 and len(result["episodes"]) == 2


def test_a_log_without_market_prices_is_refused(tmp_path):
    path = tmp_path / "log.csv"
    pd.DataFrame({"click": [1]}).to_csv(path, index=False)
    with pytest.raises(InvalidValue, match="market_price"):
        replay(path, logged_bid, ReplayConfig())


def test_the_cli_replays_with_a_users_module_function(tmp_path, monkeypatch, capsys):
    (tmp_path / "mybidder.py").write_text("def bid(batch):\n    return batch['my_bid'].to_numpy()\n")
    LOG.to_csv(tmp_path / "log.csv", index=False)
    monkeypatch.chdir(tmp_path)
    code = main(["replay", "log.csv", "--bidder", "mybidder:bid", "--budget-per-episode", "3",
                 "--episode-size", "3", "--max-bid", "2.5", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["overall"]["impressions"] == 4 and data["episode_by"] == "auctions"


def test_the_reference_bidder_bids_pctr_times_predicted_value_over_the_target(tmp_path):
    import sim_support

    from sim.engine import Simulation
    from sim.replay import reference_bidder

    kit = sim_support.full_kit()
    result = Simulation(sim_support.load_scenario("normal"), 1, kit.bidders, kit.history, pool=kit.pool).step()
    log = pd.DataFrame(result.features, columns=list(result.feature_names))
    log["pctr"] = 0.02
    bids = reference_bidder(sim_support._DATA_DIR)(log)
    np.testing.assert_allclose(bids, 0.02 * result.decisions["pred_value"].to_numpy() / 2.0)
