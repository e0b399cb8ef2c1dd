"""Stored explanations: compact float32, add up to the decision, survive a model upgrade unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from explain.explainer import Explainer
from explain.store import explanation_batch, load_explanation, load_explanations, save_explanations, stack
from store import repo
from store.engine import open_store
from tests.explain_helpers import artifact, feature_rows
from tests.helpers import PROMOTION_START, seed_campaigns


@pytest.fixture
def engine(sqlite_url):
    engine = open_store(sqlite_url)
    seed_campaigns(engine)
    yield engine
    engine.dispose()


def _decisions(model, X: np.ndarray) -> pd.DataFrame:
    value = model.predict(X)
    return pd.DataFrame({
        "campaign_id": "c1", "audience_package": "gifting", "bucket_ts": PROMOTION_START + np.arange(len(X)),
        "model_version": model.version, "bid": value / 2.0, "budget_share": 0.05, "audience_on": True,
        "pred_ctr": 0.02, "pred_cvr": 0.03, "pred_value": value, "pred_roi": 2.0,
    })


def test_explanations_written_with_decisions_add_up_to_the_model_output(engine):
    model = artifact("v1", seed=1)
    X = feature_rows(500, np.random.default_rng(0))
    explainer = Explainer(model)
    ids = repo.write_decisions(engine, _decisions(model, X), received_ts=PROMOTION_START,
                               explanation=explanation_batch(explainer, X))
    with engine.connect() as conn:
        stored = load_explanations(conn, ids)
    assert len(stored) == 500
    output = model.predict(X)
    for k, i in enumerate(ids):
        e = stored[int(i)]
        assert e.model_version == "v1" and e.contributions.dtype == np.float32
        assert abs(e.model_output - output[k]) <= 1e-5 * max(1.0, abs(output[k]))
        assert np.array_equal(e.feature_values, X[k].astype(np.float32), equal_nan=True)
    base, contributions, values = stack([stored[int(i)] for i in ids])
    assert contributions.shape == (500, 8) and np.allclose(base, explainer.base_value)


def test_a_stored_explanation_survives_a_model_upgrade_unchanged(engine):
    old, new = artifact("v1", seed=1), artifact("v2", seed=2)
    X = feature_rows(50, np.random.default_rng(5))
    ids = repo.write_decisions(engine, _decisions(old, X), received_ts=PROMOTION_START)
    old_base, old_contribs = Explainer(old).explain(X)
    with engine.begin() as conn:
        assert save_explanations(conn, ids, "v1", old_base, old_contribs, X) == 50
    with engine.connect() as conn:
        before = {int(i): load_explanation(conn, int(i)) for i in ids[:5]}

    # The model is upgraded; someone re-runs the explanation step over the same decisions.
    new_base, new_contribs = Explainer(new).explain(X)
    assert np.abs(new_contribs - old_contribs).max() > 0.01
    with engine.begin() as conn:
        assert save_explanations(conn, ids, "v2", new_base, new_contribs, X) == 0
        after = load_explanations(conn, ids[:5])
    for i, e in after.items():
        assert e.model_version == "v1"
        assert np.array_equal(e.contributions, before[i].contributions)
        assert e.base_value == before[i].base_value
    with engine.connect() as conn:
        assert load_explanation(conn, 10_000_000) is None


def test_misaligned_rows_are_refused(engine):
    with engine.begin() as conn, pytest.raises(ValueError, match="row-aligned"):
        save_explanations(conn, [1, 2], "v1", 0.0, np.zeros((3, 8)), np.zeros((3, 8)))
