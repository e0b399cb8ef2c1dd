"""End to end with the live simulator: every served decision is explained, and its steps add up."""

from __future__ import annotations

import numpy as np
import pytest
import sim_support
from sqlalchemy import select

from control.config import Settings
from explain.store import explain_hook, load_explanations
from sim.catalog import DAY_START_TS
from sim.live import register_catalog, run_live
from sim.scenario import load_scenario
from store import schema as s
from store.engine import open_store


def test_every_live_decision_is_explained_with_its_own_formula_and_the_panel_and_cli_agree(
        sqlite_url, monkeypatch, capsys):
    """The live demo day: the roi model, then the "818" gmv model (target 1.3, not the campaign's 2.0),
    campaigns on the rule pool (a kill switch) and under an override. Every served decision's steps are
    the steps of the formula it was served with and end at the served bid; the panel's explanation
    (app.room.ControlRoom) and `bidlens explain decision` say the same, step for step, in both languages."""
    import json

    from app.explanations import reference_formulas
    from app.service import Control
    from app.wiring import control_room
    from cli.explain_cmd import explanation_document
    from cli.main import main
    from control.domain import OverrideField, Role

    engine = open_store(sqlite_url)
    kit = sim_support.full_kit()
    scenario = load_scenario("demo")
    formulas = reference_formulas(scenario.bidder, kit.bidders)
    settings = Settings(data_dir=sim_support._DATA_DIR, db_url=sqlite_url)
    control = Control(engine, lambda: DAY_START_TS + 60, settings)
    manager = control.add_user(None, "manager", "主管", Role.MANAGER, "pw-manager-1")
    operator = control.add_user(None, "operator", "运营", Role.OPERATOR, "pw-operator-1")
    engineer = control.add_user(None, "engineer", "算法", Role.ENGINEER, "pw-engineer-1")  # sees the steps
    register_catalog(engine, kit, f"{sim_support._DATA_DIR}/models")
    ids = sorted(c.campaign_id for c in kit.catalog.campaigns)
    control.set_kill_switch(manager, True, "test: the pool serves one campaign", ids[0])
    proposal = control.propose_override(operator, campaign_id=ids[1], audience_package=None,
                                        field=OverrideField.BID, value=1.5, reason="test", expires_ts=DAY_START_TS + 7200)
    control.approve_override(manager, proposal.override_id, proposal.version)
    summary = run_live(engine, settings, clock=lambda: DAY_START_TS + 10**6, max_buckets=8,
                       explain=explain_hook((b.artifact for b in kit.bidders.values()), formulas),
                       scenario="demo")
    room = control_room(control)
    monkeypatch.setenv("BIDLENS_DB_URL", sqlite_url)
    monkeypatch.setenv("BIDLENS_PASSWORD", "pw-engineer-1")
    with engine.connect() as conn:
        rows = conn.execute(select(s.decisions)).mappings().all()
        assert len(rows) == summary.decisions
        stored = load_explanations(conn, [r["decision_id"] for r in rows])
    assert len(stored) == len(rows)  # every decision has its explanation, under the version that decided
    assert all(stored[r["decision_id"]].model_version == r["model_version"] for r in rows)
    assert {stored[r["decision_id"]].formula.target_roi for r in rows} == {2.0, 1.3}  # both variants played
    kinds, errors, compared = set(), [], set()
    for r in rows:
        ex = room.explainer.explain(r["decision_id"], "zh")
        assert ex.breakdown.formula == formulas[r["model_version"]]
        errors.append(abs(ex.steps[-1].total - r["bid"]))
        kinds.update(st.kind for st in ex.steps)
        assert ex.steps[0].value == pytest.approx(ex.breakdown.explanation.base_value
                                                  / formulas[r["model_version"]].target_roi)
        caps = [st for st in ex.steps if st.kind == "cap"]  # only where the formula's limit bound the bid
        assert all(r["model_bid"] in (scenario.bidder.min_bid, scenario.bidder.max_bid) for _ in caps)
        key = (r["model_version"], r["decided_by"])
        if key in compared:
            continue
        compared.add(key)
        for lang in ("zh", "en"):
            shown = room.explanation(engineer, r["campaign_id"], r["audience_package"], r["bucket_ts"], lang)
            assert main(["explain", "decision", str(r["decision_id"]), "--lang", lang, "--json",
                         "--user", "engineer"]) == 0
            assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(explanation_document(shown)))
    assert max(errors) <= 1e-6
    assert {k[1] for k in compared} == {"model", "rule_pool", "override"}
    assert {"base", "feature", "cap", "rule_pool", "override"} <= kinds  # pacing starts later in the day
    assert np.isfinite(errors).all()


def _window(kit, scenario: str, seed: int, start: int, end: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Feature rows served in minutes [start, end) of a simulated day, with each row's minute."""
    from sim.engine import Simulation
    sim = Simulation(load_scenario(scenario), seed, kit.bidders, kit.history, pool=kit.pool)
    rows, minutes, version = [], [], ""
    while sim.minute < end:
        result = sim.step()
        if result.minute >= start:
            rows.append(result.features)
            minutes.append(np.full(len(result.features), result.minute))
            version = result.model_version
    return np.vstack(rows), np.concatenate(minutes), version


def test_attribution_drift_finds_the_drift_scenarios_shift_and_not_noise():
    from explain.analysis import attribution_drift
    from explain.explainer import Explainer
    kit = sim_support.full_kit()
    normal, minutes, version = _window(kit, "normal", 1, 840, 900)
    drifted, _, drift_version = _window(kit, "drift", 1, 840, 900)
    assert version == drift_version
    artifact = next(b.artifact for b in kit.bidders.values() if b.version == version)
    explainer = Explainer(artifact)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(normal), 8000, replace=False)
    _, c_normal = explainer.explain(normal[pick])
    _, c_drift = explainer.explain(drifted[pick])
    # Same day, same seed: from noon the drift scenario's conversion falls for four packages.
    found = attribution_drift(c_normal / 2.0, c_drift / 2.0, artifact.features)
    flagged = set(found.loc[found["drifted"], "feature"])
    assert found.iloc[0]["drifted"] and found.iloc[0]["feature"] in {"recent_value_per_click", "recent_cvr"}
    # A feature whose values are the same on both days may still be flagged: path-dependent SHAP
    # gives it a share of its interactions with the features that moved. It never leads.
    names = [f.name for f in artifact.features]
    unmoved = {n for i, n in enumerate(names) if np.array_equal(normal[pick][:, i], drifted[pick][:, i])}
    shift = found.set_index("feature")["shift"].abs()
    assert all(shift[n] < shift.iloc[0] / 3 for n in flagged & unmoved), found.head(8)
    # Noise: the normal day's even minutes against its odd minutes.
    even = (minutes[pick] % 2) == 0
    noise = attribution_drift(c_normal[even] / 2.0, c_normal[~even] / 2.0, artifact.features)
    assert not noise["drifted"].any()
