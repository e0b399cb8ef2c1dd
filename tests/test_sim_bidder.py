import json
from pathlib import Path

import numpy as np
import sim_support
from sim_support import kit_for, small_scenario

from explain.artifacts import load_artifact
from sim.bidder import load_bidder
from sim.engine import Simulation
from sim.features import FEATURE_NAMES


def test_models_are_saved_as_versioned_artifacts_with_their_metadata():
    kit = kit_for(6)
    for variant, bidder in kit.bidders.items():
        folder = Path(sim_support._DATA_DIR) / "models" / bidder.version
        artifact = load_artifact(folder)
        assert artifact.variant == variant and artifact.target == "value_per_click"
        assert artifact.feature_names == list(FEATURE_NAMES) and 20 <= len(FEATURE_NAMES) <= 24
        spec = {f.name: f for f in artifact.features}
        assert spec["audience_package"].categorical_levels[0] == "parenting"
        assert spec["campaign"].categorical_levels == ("c01", "c02", "c03", "c04", "c05", "c06")
        assert spec["price"].unit_en == "yuan" and spec["price"].display_zh
        start, end = artifact.training_window
        assert end - start == 3 * 86400
        assert {"rmse_yuan", "r2", "rows", "train_seconds"} <= set(artifact.metrics)
        assert artifact.metrics["r2"] > 0.2
        assert json.loads((folder / "history.json").read_text())["cpc_ratio"] > 0


def test_a_loaded_bidder_predicts_what_the_trained_one_did():
    kit = kit_for(6)
    X = Simulation(small_scenario(), 1, kit.bidders, kit.history, pool=kit.pool).step().features
    for bidder in kit.bidders.values():
        again = load_bidder(Path(sim_support._DATA_DIR) / "models" / bidder.version)
        np.testing.assert_allclose(again.predict_value(X), bidder.predict_value(X))


def test_the_bid_is_predicted_value_over_target_roi_times_pacing_within_bounds():
    kit = kit_for(6)
    scenario = small_scenario()
    sim = Simulation(scenario, 1, kit.bidders, kit.history, pool=kit.pool)
    for _ in range(3):
        d = sim.step().decisions
    p = scenario.bidder
    expected = np.clip(d["pred_value"] / p.target_roi * d["pacing"], p.min_bid, p.max_bid)
    np.testing.assert_allclose(d["model_bid"], expected)
    on = d["audience_on"].to_numpy()
    assert (d["pred_roi"][on] >= p.floor_roi).all() and (d["pred_roi"][~on] < p.floor_roi).all()
    shares = d.groupby("campaign_id")["budget_share"].sum()
    assert np.all(np.isclose(shares, 1.0) | np.isclose(shares, 0.0))


def test_the_gmv_variant_overbids_the_same_slots():
    kit = kit_for(6)
    X = Simulation(small_scenario(), 1, kit.bidders, kit.history, pool=kit.pool).step().features
    roi, gmv = kit.bidders["roi"].predict_value(X), kit.bidders["gmv"].predict_value(X)
    assert gmv.mean() > 1.15 * roi.mean()
