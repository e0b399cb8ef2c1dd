"""Bid units: steps add up exactly to the served bid, whoever decided it."""

from __future__ import annotations

import numpy as np
import pytest

from control.domain import BidFormula, DecidedBy, InvalidValue
from explain.bid_units import (
    BidContext,
    context_from_decision,
    decompose_bid,
    decompose_roi_decision,
    model_bid,
    steps_frame,
)
from explain.explainer import Explainer
from tests.explain_helpers import FEATURES, artifact, feature_rows

EXACT = 1e-6  # yuan


def _ctx(target_roi: float, pacing: float, min_bid: float, max_bid: float | None, **kw) -> BidContext:
    return BidContext(BidFormula(target_roi, min_bid, max_bid), pacing, **kw)


@pytest.fixture(scope="module")
def explained():
    model = artifact("v1", seed=1)
    X = feature_rows(2000, np.random.default_rng(21))
    base, contributions = Explainer(model).explain(X)
    return model, X, base, contributions


def _contexts(value: np.ndarray, rng: np.random.Generator) -> list[BidContext]:
    """A simulated day's mix: pacing, both caps, rule pool and override replacements."""
    out = []
    for k, v in enumerate(value):
        target_roi = float(rng.choice([1.5, 2.0, 2.5]))
        pacing = float(rng.uniform(0.5, 1.3))
        ctx = _ctx(target_roi, pacing, 0.3, 2.0, served_bid=0.0)
        bid = model_bid(v, ctx)
        kind = k % 6
        if kind == 3:
            out.append(_ctx(target_roi, pacing, 0.3, 2.0, served_bid=round(bid * 0.7, 2),
                            decided_by=DecidedBy.RULE_POOL, reason="guard:tripped", rule_id="R7"))
        elif kind == 4:
            out.append(_ctx(target_roi, pacing, 0.3, 2.0, served_bid=1.25,
                            decided_by=DecidedBy.OVERRIDE, override_ids=(12,)))
        elif kind == 5:
            out.append(_ctx(target_roi, pacing, 0.3, 2.0, served_bid=bid * 0.7, model_bid=bid,
                            decided_by=DecidedBy.GUARD, reason="guard:tripped:bid_cut"))
        else:
            out.append(_ctx(target_roi, pacing, 0.3, 2.0, served_bid=bid, model_bid=bid))
    return out


def test_steps_sum_to_the_served_bid_on_every_row(explained):
    model, X, base, contributions = explained
    value = model.predict(X)
    contexts = _contexts(value, np.random.default_rng(3))
    kinds = set()
    for k, ctx in enumerate(contexts):
        for as_step in (True, False):
            steps = decompose_bid(base, contributions[k], FEATURES, X[k], ctx, pred_value=value[k],
                                  pacing_as_step=as_step)
            assert abs(sum(s.value for s in steps) - ctx.served_bid) <= EXACT
            assert abs(steps[-1].total - ctx.served_bid) <= EXACT
            kinds.update(s.kind for s in steps)
    assert {"base", "feature", "pacing", "cap", "rule_pool", "guard", "override"} <= kinds


def test_float32_storage_rounding_is_its_own_tiny_step(explained):
    model, X, base, contributions = explained
    value = model.predict(X[:1])[0]
    ctx = _ctx(2.0, 1.0, 0.0, 100.0, served_bid=value / 2.0)
    steps = decompose_bid(base, contributions[0].astype(np.float32), FEATURES, X[0], ctx, pred_value=value)
    rounding = [s for s in steps if s.kind == "rounding"]
    assert len(rounding) <= 1 and all(abs(s.value) < 1e-5 for s in rounding)
    assert abs(steps[-1].total - ctx.served_bid) <= EXACT


def test_feature_steps_are_contributions_through_the_bid_formula(explained):
    model, X, base, contributions = explained
    value = model.predict(X[:1])[0]
    ctx = _ctx(2.5, 0.8, 0.0, 100.0, served_bid=value / 2.5 * 0.8)
    folded = decompose_bid(base, contributions[0], FEATURES, X[0], ctx, pacing_as_step=False)
    features = [s for s in folded if s.kind == "feature"]
    assert np.allclose([s.value for s in features], contributions[0] / 2.5 * 0.8)
    assert [s.name for s in features] == [f.name for f in FEATURES]
    frame = steps_frame(folded)
    assert list(frame["kind"][:2]) == ["base", "feature"]
    assert np.allclose(frame["start"] + frame["value"], frame["total"])


def test_explanation_of_another_model_is_refused(explained):
    model, X, base, contributions = explained
    ctx = _ctx(2.0, 1.0, 0.0, 100.0, served_bid=1.0)
    with pytest.raises(InvalidValue, match="another model version"):
        decompose_bid(base, contributions[0], FEATURES, X[0], ctx, pred_value=model.predict(X[:1])[0] + 0.5)


def test_model_decision_that_is_not_the_formula_is_refused(explained):
    model, X, base, contributions = explained
    with pytest.raises(InvalidValue, match="served_bid"):
        decompose_bid(base, contributions[0], FEATURES, X[0], _ctx(2.0, 1.0, 0.0, 100.0, served_bid=99.0))


@pytest.mark.parametrize("field,kwargs", [
    ("target_roi", {"target_roi": 0.0}),
    ("max_bid", {"min_bid": 3.0, "max_bid": 1.0}),
    ("override_ids", {"decided_by": DecidedBy.OVERRIDE}),
    ("pacing", {"pacing": float("nan")}),
])
def test_bad_context_names_the_field(field, kwargs):
    values = {"target_roi": 2.0, "pacing": 1.0, "min_bid": 0.1, "max_bid": 5.0, "served_bid": 1.0, **kwargs}
    with pytest.raises(InvalidValue) as err:
        _ctx(**values)
    assert err.value.field == field


def _decision(formula: BidFormula, value: float, pacing: float, **row) -> dict:
    bid = formula.bid(value, pacing)
    return {"pred_value": value, "pacing": pacing, "model_bid": bid, "bid": bid, "decided_by": "model",
            "decided_reason": "model", **row}


def test_the_818_model_is_explained_with_its_own_target_and_no_invented_step(explained):
    """The gmv ("818") model bids value / 1.3: divided by the campaign's 2.0 instead, the model bid sat
    above the formula and a "min bid 8.21" step was invented to make the sum come out."""
    model, X, base, contributions = explained
    value = model.predict(X[:1])[0]
    formula = BidFormula(1.3, 0.2, 60.0)
    ctx = context_from_decision(_decision(formula, value, 0.97), formula)
    steps = decompose_bid(base, contributions[0], FEATURES, X[0], ctx, pred_value=value)
    assert [st.kind for st in steps if st.kind not in ("feature", "rounding")] == ["base", "pacing"]
    assert steps[0].value == pytest.approx(base / 1.3)
    assert steps[-1].total == pytest.approx(formula.bid(value, 0.97), abs=EXACT)
    with pytest.raises(InvalidValue) as err:  # the same decision under another formula is refused, not patched
        decompose_bid(base, contributions[0], FEATURES, X[0], context_from_decision(
            _decision(formula, value, 0.97), BidFormula(2.0, 0.2, 60.0)), pred_value=value)
    assert err.value.field == "model_bid" and "target ROI 2" in err.value.reason


def test_a_bid_rounded_to_the_cent_is_its_own_step_and_caps_are_the_formulas(explained):
    model, X, base, contributions = explained
    value = model.predict(X[:1])[0]
    formula = BidFormula(2.0, 0.2, value / 2.0 * 0.5)  # the cap binds
    row = _decision(formula, value, 1.0)
    row["model_bid"] = row["bid"] = round(row["model_bid"], 2)
    steps = decompose_bid(base, contributions[0], FEATURES, X[0], context_from_decision(row, formula),
                          pred_value=value)
    kinds = [st.kind for st in steps]
    assert "cap" in kinds and steps[kinds.index("cap")].label("zh") == f"最高出价 {formula.max_bid:.2f} 元"
    assert abs(steps[-1].total - row["bid"]) <= EXACT
    assert kinds[-1] == "rounding" or abs(row["bid"] - formula.max_bid) < 1e-12


def test_a_guards_bid_cut_and_pause_are_steps_in_words(explained):
    model, X, base, contributions = explained
    value = model.predict(X[:1])[0]
    formula = BidFormula(2.0, 0.2, 60.0)
    row = _decision(formula, value, 1.0)
    cut = dict(row, bid=row["model_bid"] * 0.7, decided_by="guard", decided_reason="guard:tripped:bid_cut")
    steps = decompose_bid(base, contributions[0], FEATURES, X[0], context_from_decision(cut, formula), pred_value=value)
    assert steps[-1].kind == "guard" and steps[-1].label("zh") == "守护降价 ×0.70"
    assert abs(steps[-1].total - cut["bid"]) <= EXACT
    pause = dict(row, decided_by="guard", decided_reason="guard:tripped:pause")
    steps = decompose_bid(base, contributions[0], FEATURES, X[0], context_from_decision(pause, formula),
                          pred_value=value)
    assert (steps[-1].kind, steps[-1].value) == ("guard", 0.0) and "人群包关闭" in steps[-1].label("zh")
    pool = dict(row, bid=1.1, decided_by="rule_pool", decided_reason="guard:tripped")
    steps = decompose_bid(base, contributions[0], FEATURES, X[0], context_from_decision(pool, formula),
                          pred_value=value)
    assert steps[-1].label("zh") == "人工规则池出价（守护熔断中）" and "guard:" not in steps[-1].label("en")


def test_audience_and_budget_decisions_decompose_predicted_roi_against_the_floor(explained):
    model, X, base, contributions = explained
    value = model.predict(X)
    for k in range(200):
        pred_roi = value[k] / 0.9  # value per click over an expected cost per click of 0.9 yuan
        steps = decompose_roi_decision(base, contributions[k], FEATURES, X[k], pred_value=value[k],
                                       pred_roi=pred_roi, reference=2.0, reference_zh="ROI 下限 2.0",
                                       reference_en="ROI floor 2.0")
        assert abs(steps[-2].total - pred_roi) <= EXACT
        assert abs(steps[-1].total - (pred_roi - 2.0)) <= EXACT
        assert steps[-1].kind == "threshold" and steps[-1].label("en") == "ROI floor 2.0"


def test_a_negative_model_output_floored_at_zero_is_its_own_step():
    contributions = np.zeros(len(FEATURES))
    contributions[2] = -1.5  # competitor prices drive the raw output below zero
    base = 0.5
    ctx = _ctx(2.0, 1.0, 0.2, 60.0, served_bid=0.2)  # value 0 -> the minimum bid
    steps = decompose_bid(base, contributions, FEATURES, np.zeros(len(FEATURES)), ctx, pred_value=0.0)
    floor = [st for st in steps if st.kind == "floor"]
    assert len(floor) == 1 and floor[0].value == pytest.approx(0.5)  # (0 - (-1.0)) / 2
    assert [st.kind for st in steps][-1] == "cap" and abs(steps[-1].total - 0.2) <= EXACT
