"""Stored explanations: compact float32, add up to the decision, survive a model upgrade unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from control.domain import BidFormula
from explain.explainer import Explainer
from explain.store import explanation_batch, load_explanation, load_explanations, save_explanations, stack
from store import repo
from store.engine import open_store
from tests.api_support import without_launch_gate
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


MIX_FORMULA = BidFormula(2.0, 0.4, 1.6)  # the bid formula _served_mix's bidder bids with


def _served_mix(model, X: np.ndarray) -> pd.DataFrame:
    """Decisions as the effective policy serves them: model (some capped), rule pool, overrides."""
    frame = _decisions(model, X)
    value = frame["pred_value"].to_numpy()
    pacing = np.where(np.arange(len(X)) % 2 == 0, 0.8, 1.0)
    paced = value / 2.0 * pacing
    model_bid = np.clip(paced, 0.4, 1.6)
    kind = np.arange(len(X)) % 4
    frame = frame.assign(
        pacing=pacing, model_bid=model_bid,
        bid=np.select([kind == 2, kind == 3], [0.55, 1.1], model_bid),
        decided_by=np.select([kind == 2, kind == 3], ["rule_pool", "override"], "model"),
        decided_reason=np.select([kind == 2, kind == 3], ["guard:tripped;rule:R3", "override:7"], "model"),
    )
    return frame


def test_every_served_bid_breaks_down_into_steps_that_add_up_to_it(engine):
    from explain.analysis import diff_windows
    from explain.store import decision_breakdown, load_window, model_features, register_model
    model = artifact("v1", seed=1)
    X = feature_rows(300, np.random.default_rng(8))
    frame = _served_mix(model, X)
    ids = repo.write_decisions(engine, frame, received_ts=PROMOTION_START,
                               explanation=explanation_batch(Explainer(model), X, MIX_FORMULA))
    with engine.begin() as conn:
        register_model(conn, model, "/models/v1", PROMOTION_START)
        assert model_features(conn, "v1") == model.features
    capped = 0
    with engine.connect() as conn:
        for k, i in enumerate(ids):
            b = decision_breakdown(conn, int(i))
            assert abs(b.steps[-1].total - frame["bid"][k]) <= 1e-6
            assert abs(sum(s.value for s in b.steps) - frame["bid"][k]) <= 1e-6
            kinds = {s.kind for s in b.steps}
            assert abs(b.roi_steps[-1].total - (frame["pred_roi"][k] - 2.0)) <= 1e-6
            capped += "cap" in kinds
            if frame["decided_by"][k] == "rule_pool":
                assert b.steps[-1].label_en == "manual rule pool bid (guard tripped, rule R3)"
            if frame["decided_by"][k] == "override":
                assert b.steps[-1].label_en == "override #7"
        assert capped > 0
        assert decision_breakdown(conn, 999_999) is None
        window = load_window(conn, PROMOTION_START, PROMOTION_START + 150)
        later = load_window(conn, PROMOTION_START + 150, PROMOTION_START + 300, campaign_id="c1")
    assert len(window.decisions) == 150 and window.features == model.features
    raw = Explainer(model).explain(X[:150])[1]
    expected = raw / 2.0 * frame["pacing"].to_numpy()[:150, None]
    assert np.abs(window.contributions - expected).max() <= 1e-5
    assert len(diff_windows(window.contributions, later.contributions, window.features)) == 8


def test_cli_prints_a_decision_breakdown(engine, sqlite_url, monkeypatch, capsys):
    import json

    from cli.main import main
    model = artifact("v1", seed=1)
    X = feature_rows(4, np.random.default_rng(8))
    ids = repo.write_decisions(engine, _served_mix(model, X), received_ts=PROMOTION_START,
                               explanation=explanation_batch(Explainer(model), X, MIX_FORMULA))
    with engine.begin() as conn:
        from explain.store import register_model
        register_model(conn, model, "/models/v1", PROMOTION_START)
    monkeypatch.setenv("BIDLENS_DB_URL", sqlite_url)
    for user, role in (("ethan", "engineer"), ("olivia", "operator")):
        assert main(["user", "add", user, "--role", role, "--password", "correct horse battery"]) == 0
    monkeypatch.setenv("BIDLENS_PASSWORD", "correct horse battery")
    capsys.readouterr()
    assert main(["explain", "decision", str(int(ids[2])), "--lang", "en", "--json", "--user", "ethan"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["steps"][-1]["label"] == "manual rule pool bid (guard tripped, rule R3)"
    assert abs(data["steps"][-1]["total"] - 0.55) < 1e-9 and data["bid_formula"] == MIX_FORMULA.to_json()
    assert main(["explain", "decision", str(int(ids[0])), "--user", "ethan"]) == 0
    assert "出价" in capsys.readouterr().out
    assert main(["explain", "decision", "424242", "--user", "ethan"]) == 2
    drift = ["explain", "drift", "--ref-from", str(PROMOTION_START), "--ref-to", str(PROMOTION_START + 2),
             "--now-from", str(PROMOTION_START + 2), "--now-to", str(PROMOTION_START + 4), "--json"]
    assert main([*drift, "--user", "ethan"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 8
    # An operator reads the reasons in words: no steps, no yuan per reason; the drift of contributions is refused.
    assert main(["explain", "decision", str(int(ids[2])), "--lang", "en", "--json", "--user", "olivia"]) == 0
    words = json.loads(capsys.readouterr().out)
    assert "steps" not in words and words["reasons"] and not any("¥" in r for r in words["reasons"])
    assert main([*drift, "--user", "olivia"]) == 2
    assert "view_explanation_detail" in capsys.readouterr().err


def test_a_bidders_own_model_registered_from_the_cli_explains_the_decisions_it_sends(tmp_path, monkeypatch,
                                                                                      capsys, caplog):
    import dataclasses
    import json
    import time

    import xgboost as xgb

    from cli.main import main
    from tests.explain_helpers import FEATURES, NAMES, value_per_click

    monkeypatch.setenv("BIDLENS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("BIDLENS_DB_URL", raising=False)
    assert main(["init"]) == 0
    assert main(["user", "add", "ethan", "--role", "engineer", "--password", "engineer-pass"]) == 0
    monkeypatch.setenv("BIDLENS_PASSWORD", "engineer-pass")
    store = open_store(f"sqlite:///{tmp_path / 'bidlens.db'}")
    seed_campaigns(store)
    rng = np.random.default_rng(3)
    X = feature_rows(400, rng, missing=False)
    booster = xgb.train({"max_depth": 3, "nthread": 1}, xgb.DMatrix(X, label=value_per_click(X, rng),
                                                                     feature_names=NAMES), num_boost_round=20)
    booster.save_model(str(tmp_path / "bidder.json"))
    (tmp_path / "features.json").write_text(json.dumps([dataclasses.asdict(f) for f in FEATURES],
                                                       ensure_ascii=False), encoding="utf-8")
    capsys.readouterr()
    assert main(["explain", "model", "register", str(tmp_path / "bidder.json"), "--features",
                 str(tmp_path / "features.json"), "--version", "their-xgb-7", "--target-roi", "0", "--user", "ethan",
                 "--json"]) == 2  # a bid formula that cannot be is refused, naming the option
    assert "--target-roi 0.0" in capsys.readouterr().err
    assert main(["explain", "model", "register", str(tmp_path / "bidder.json"), "--features",
                 str(tmp_path / "features.json"), "--version", "their-xgb-7", "--target-roi", "2.5",
                 "--max-bid", "40", "--user", "ethan", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "xgboost"
    with store.connect() as conn:  # who registered which model, in the audit trail (issue 16)
        [entry] = [e for e in repo.load_audit(conn) if e.action == "model.register"]
    assert (entry.actor, entry.entity_id, entry.after["kind"]) == ("ethan", "their-xgb-7", "xgboost")
    assert main(["explain", "model", "list", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["model_version"] == "their-xgb-7"
    assert listed["bid_formula"] == {"target_roi": 2.5, "min_bid": 0.0, "max_bid": 40.0}

    now = int(time.time()) - 60
    value = booster.inplace_predict(X[:50])

    def rows(features):  # one decision per feature document
        return [{"campaign_id": "c1", "audience_package": "gifting", "bucket_ts": now - i,
                 "model_version": "their-xgb-7", "bid": float(min(v / 2.5, 40.0)), "budget_share": 0.05,
                 "audience_on": True,
                 "pred_ctr": 0.02, "pred_cvr": 0.03, "pred_value": float(v), "pred_roi": 2.0, "features": f}
                for i, (v, f) in enumerate(zip(value[:len(features)], features, strict=True))]

    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in rows([dict(zip(NAMES, x.tolist())) for x in X[:50]])))
    without_launch_gate(store, now)  # the bidder's version was registered, never launched through the gate
    assert main(["ingest", "decisions", str(good)]) == 0
    with store.connect() as conn:
        ids = [r[0] for r in conn.exec_driver_sql("SELECT decision_id FROM decisions ORDER BY decision_id")]
        stored = load_explanations(conn, ids)
    assert len(stored) == 50
    totals = np.array([stored[i].model_output for i in ids])
    assert np.abs(np.sort(totals) - np.sort(value)).max() <= 1e-4  # explained under the model that decided
    assert {stored[i].formula for i in ids} == {BidFormula(2.5, 0.0, 40.0)}  # recorded with each decision
    capsys.readouterr()
    assert main(["explain", "decision", str(ids[0]), "--json", "--user", "ethan"]) == 0
    explained = json.loads(capsys.readouterr().out)
    assert explained["steps"][0]["label"] == "模型基准出价"
    assert abs(explained["steps"][-1]["total"] - explained["served_bid"]) <= 1e-6
    # The panel explains the bidder's decision exactly as the CLI does (one function: app.explanations).
    from app.wiring import control_room, open_control
    from cli.explain_cmd import explanation_document
    from control.domain import Role, User
    from tests.helpers import add_users
    room = control_room(open_control())
    viewer = User("viewer", "Viewer", Role.ENGINEER)
    add_users(store, viewer)
    with store.connect() as conn:
        slot = conn.exec_driver_sql(f"SELECT campaign_id, audience_package, bucket_ts FROM decisions "
                                    f"WHERE decision_id = {ids[0]}").one()
    shown = room.explanation(viewer, *slot, "zh")
    assert json.loads(json.dumps(explanation_document(shown))) == explained

    renamed = [{("cvr_24h" if k == NAMES[0] else k): v for k, v in zip(NAMES, x.tolist())} for x in X[:5]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in rows(renamed)))
    assert main(["ingest", "decisions", str(bad)]) == 0  # stored, nothing lost, but not explained
    with store.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM decisions").scalar() == 55
        assert conn.exec_driver_sql("SELECT count(*) FROM explanations").scalar() == 50
    assert NAMES[0] in caplog.text and "cvr_24h" in caplog.text  # the missing and the extra feature named


def test_a_model_registered_after_the_api_started_is_used_without_a_restart(engine, tmp_path):
    from explain.artifacts import save_artifact
    from explain.store import explain_registered, register_model
    from tests.explain_helpers import NAMES

    model = artifact("late-1")
    X = feature_rows(20, np.random.default_rng(4), missing=False)
    rows = _decisions(model, X).assign(features=[dict(zip(NAMES, x.tolist())) for x in X])
    hook = explain_registered(engine)
    assert hook(rows) is None  # not registered yet: stored unexplained
    with engine.begin() as conn:
        register_model(conn, model, str(save_artifact(model, tmp_path / "models")), PROMOTION_START)
    batch = hook(rows)
    assert batch is not None and batch.model_version == "late-1" and batch.contributions.shape == (20, len(NAMES))
