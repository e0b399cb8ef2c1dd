"""Why did it change, global views, drift, reasons in words, charts."""

from __future__ import annotations

import numpy as np
import pytest

from control.domain import BidFormula, DecidedBy
from explain import charts
from explain.analysis import (
    attribution_drift,
    dependence_frame,
    diff_steps,
    diff_windows,
    importance,
    importance_by_segment,
    strip_frame,
)
from explain.bid_units import BidContext, decompose_bid, model_bid, steps_frame, to_bid_units
from explain.explainer import Explainer
from explain.reasons import bid_reasons, drivers_text
from tests.explain_helpers import FEATURES, NAMES, artifact, feature_rows

PRICE = NAMES.index("competitor_price_index")


@pytest.fixture(scope="module")
def explainer():
    return Explainer(artifact("v1", seed=1))


def _bid_steps(explainer, x, pacing=1.0, **ctx):
    value = explainer.artifact.predict(x[None, :])[0]
    base, contributions = explainer.explain(x)
    formula = BidFormula(2.0, 0.1, 10.0)
    plain = BidContext(formula, pacing, served_bid=0.0)
    context = BidContext(formula, pacing, served_bid=ctx.pop("served", model_bid(value, plain)), **ctx)
    return decompose_bid(base, contributions[0], FEATURES, x, context, pred_value=value)


def test_difference_of_two_decisions_sums_to_the_bid_change_and_is_ranked(explainer):
    X = feature_rows(2, np.random.default_rng(1))
    before = _bid_steps(explainer, X[0])
    moved = X[0].copy()
    moved[PRICE] += 0.4  # competitor prices up: the bid should fall mostly because of it
    after = _bid_steps(explainer, moved, pacing=0.9, served=0.77, decided_by=DecidedBy.OVERRIDE,
                       override_ids=(3,))
    diff = diff_steps(before, after)
    assert abs(diff["delta"].sum() - (after[-1].total - before[-1].total)) <= 1e-9
    assert list(diff["rank"]) == list(range(1, len(diff) + 1))
    assert (diff["delta"].abs().diff().dropna() <= 1e-12).all()
    assert {"override", "pacing"} <= set(diff["kind"])
    price = diff[diff["name"] == "competitor_price_index"].iloc[0]
    assert price["delta"] < 0 and price["value_after"] == pytest.approx(price["value_before"] + 0.4)


def test_window_difference_and_global_views(explainer):
    rng = np.random.default_rng(2)
    X = feature_rows(3000, rng)
    _, c = explainer.explain(X)
    bid_c = to_bid_units(c, np.full(len(c), 2.0), np.full(len(c), 0.9))
    assert np.allclose(bid_c, c / 2.0 * 0.9)
    diff = diff_windows(bid_c[:1500], bid_c[1500:], FEATURES)
    assert np.allclose(diff["delta"], diff["after"] - diff["before"])
    ranking = importance(bid_c, FEATURES)
    assert ranking.iloc[0]["feature"] == "cvr_1h"  # the strongest driver of the synthetic value
    segments = np.where(X[:, 5] == 3, "送礼", "other")
    by_segment = importance_by_segment(bid_c, FEATURES, segments)
    assert set(by_segment["segment"]) == {"送礼", "other"} and len(by_segment) == 2 * len(FEATURES)
    strip = strip_frame(bid_c, X, FEATURES, np.random.default_rng(0), sample=500, segments=segments, top=4)
    assert strip["row"].nunique() == 500 and strip["feature"].nunique() == 4
    assert strip["sample_size"].iloc[0] == 500 and strip["total_rows"].iloc[0] == 3000
    dep = dependence_frame(bid_c, X, FEATURES, "competitor_price_index", np.random.default_rng(0), sample=300)
    assert len(dep) == 300 and np.corrcoef(dep["value"], dep["contribution"])[0, 1] < -0.8
    for chart in (charts.strip(strip, "zh"), charts.dependence(dep, "en"), charts.importance_bars(ranking, "en"),
                  charts.waterfall(steps_frame(_bid_steps(explainer, X[0])), "zh")):
        assert chart.to_dict()["data"]
    assert "500 / 3,000" in charts.strip(strip, "en").to_dict()["title"]


def test_drift_finds_a_planted_shift_and_not_noise(explainer):
    rng = np.random.default_rng(3)
    reference = feature_rows(2000, rng)
    now = feature_rows(2000, rng)
    now[:, PRICE] += 0.25  # competitors raised prices between the windows
    _, c_ref = explainer.explain(reference)
    _, c_now = explainer.explain(now)
    drift = attribution_drift(c_ref / 2.0, c_now / 2.0, FEATURES)
    assert drift.iloc[0]["feature"] == "competitor_price_index" and drift.iloc[0]["drifted"]
    assert drift["drifted"].sum() <= 2
    assert "drifted" in str(charts.drift(drift, "en").to_dict())
    for seed in range(5):  # same distribution twice: nothing may be flagged
        noise_rng = np.random.default_rng(100 + seed)
        _, a = explainer.explain(feature_rows(2000, noise_rng))
        _, b = explainer.explain(feature_rows(2000, noise_rng))
        assert not attribution_drift(a / 2.0, b / 2.0, FEATURES)["drifted"].any()


def test_reasons_in_both_languages_for_a_known_case():
    contributions = np.zeros(len(FEATURES))
    contributions[NAMES.index("cvr_1h")] = 0.70     # yuan of value per click -> +0.35 yuan of bid at ROI 2
    contributions[PRICE] = -0.30                    # -> -0.15 yuan
    x = np.array([0.042, 1.0, 1.31, 20, 8, 3, 50, 1])  # a "%" feature holds a share: 0.042 reads 4.2%
    base = 2.0
    value = base + contributions.sum()
    steps = decompose_bid(base, contributions, FEATURES, x,
                          BidContext(BidFormula(2.0, 0.1, 10.0), 0.8, served_bid=value / 2.0 * 0.8))
    typical = {"cvr_1h": 0.03, "competitor_price_index": 1.0}
    assert bid_reasons(steps, FEATURES, "zh", top=2, typical_values=typical) == [
        "出价上调 0.35 元：近 1 小时转化率 4.2%，高于平均",
        "出价下调 0.24 元：节奏系数 ×0.8",
    ]
    assert bid_reasons(steps, FEATURES, "en", top=3, typical_values=typical) == [
        "Bid raised by ¥0.35: conversion rate, last hour is 4.2%, above average",
        "Bid lowered by ¥0.24: pacing ×0.8",
        "Bid lowered by ¥0.15: competitor price index is 1.31, above average",
    ]
    with pytest.raises(ValueError, match="lang"):
        bid_reasons(steps, FEATURES, "fr")


def test_driver_line_for_the_guard_alert():
    reference = np.zeros((10, len(FEATURES)))
    current = np.zeros((10, len(FEATURES)))
    current[:, PRICE] = -0.31
    current[:, NAMES.index("audience")] = -0.12
    current[:, NAMES.index("hour")] = 0.05
    ranked = diff_windows(reference, current, FEATURES)
    assert drivers_text(ranked, "zh", top=2) == "竞品价格指数 \u22120.31，人群包 \u22120.12"
    assert drivers_text(ranked, "en") == "competitor price index \u22120.31, audience package \u22120.12, hour of day +0.05"
