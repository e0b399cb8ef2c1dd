"""`bidlens guard bench`: the ideal detector it measures the guard against, and the figures it reports."""

from __future__ import annotations

import numpy as np
import pytest

from app.guard_bench import CampaignDay, DayResult, ideal_lr_path, summarise
from guards.sequential import FALSE_TRIP_BUDGET, null_tail
from sim.catalog import MINUTES_PER_DAY
from sim.oracle import ACTIONS, MODEL
from sim.stress import ArmRun

LAG_MINUTES = np.array([0, 5, 15, 30, 60, 120, 240, 480], dtype=np.float64)
LAG_CDF = np.array([0.35, 0.55, 0.69, 0.80, 0.89, 0.95, 0.98, 1.0])
AOV, CV = 200.0, 0.5   # yuan per order, order values' spread


def one_campaign_day(rng: np.random.Generator, roi: np.ndarray, spend_per_minute: float = 60.0) -> ArmRun:
    """One campaign spending `spend_per_minute` at true ROI `roi[m]`, its GMV compound Poisson (gamma order
    values) and known with the lag curve, as the simulator's arm records it."""
    spend = np.full((1, MINUTES_PER_DAY), spend_per_minute)
    orders = rng.poisson(roi * spend_per_minute / AOV)
    shape = 1.0 / CV ** 2
    values = np.zeros((len(ACTIONS) + 1, 1, MINUTES_PER_DAY))
    values_gmv = values.copy()
    values[MODEL, 0], values_gmv[MODEL, 0] = spend_per_minute, roi * spend_per_minute
    bucket = np.repeat(np.arange(MINUTES_PER_DAY), orders)  # one entry per order
    lag = LAG_MINUTES[np.minimum(np.searchsorted(LAG_CDF, rng.random(len(bucket)), side="right"), 7)]
    pairs, n = np.unique(np.c_[bucket, bucket + 1 + lag.astype(int)], axis=0, return_counts=True)
    rows = {"campaign": np.zeros(len(n)), "bucket": pairs[:, 0], "known": pairs[:, 1],
            "gmv": rng.gamma(shape * n, AOV / shape), "orders": n}
    increments = {k: v.astype(np.float64) for k, v in rows.items()}
    watermark = np.arange(MINUTES_PER_DAY)  # the feed is on time: minute m knows what became known by m
    return ArmRun(spend=spend, gmv=np.zeros((1, MINUTES_PER_DAY)), clicks=np.zeros(1), orders=np.zeros(1),
                  transitions=[], held=np.zeros((1, MINUTES_PER_DAY), dtype=bool), values_spend=values,
                  values_gmv=values_gmv, cut_factor=np.ones((1, MINUTES_PER_DAY)), increments=increments,
                  watermark=watermark)


@pytest.mark.parametrize("spend_per_minute", [60.0, 300.0])
def test_the_ideal_detector_needs_the_evidence_a_fall_brings(spend_per_minute):
    # ROI halves at minute 600. In units of effective orders (AOV x (1 + cv^2)) the evidence grows by
    # lam1 ln(lam1 / lam0) - (lam1 - lam0) per minute of fully known outcomes, lam = ROI x spend / unit: the
    # ideal needs ln(1000) of it, plus the conversion lag. At 60 yuan a minute that is over an hour.
    roi = np.where(np.arange(MINUTES_PER_DAY) < 600, 2.6, 1.3)
    day = one_campaign_day(np.random.default_rng(5), roi, spend_per_minute)
    path = ideal_lr_path(day, 0, 600, AOV, CV, (LAG_MINUTES, LAG_CDF))
    first = int(np.flatnonzero(np.nan_to_num(path, nan=-np.inf) >= np.log(1000))[0])
    unit = AOV * (1 + CV ** 2)
    lam0, lam1 = 2.6 * spend_per_minute / unit, 1.3 * spend_per_minute / unit
    expected = np.log(1000) / (lam1 * np.log(lam1 / lam0) - (lam1 - lam0))
    assert 0.5 * expected <= first - 600 <= 2 * expected + 30


def test_the_ideal_below_floor_detector_tells_a_fall_under_the_floor_from_one_just_over_it():
    # Both campaigns fall by the same share from 2.9; only one ends under the floor. Against its ROI before, the
    # ideal detector sees both falls alike; made to prove ROI below the floor (2.0), it fires only on the one
    # that ends under it, and later than the ideal does.
    rng = np.random.default_rng(3)
    minute = np.arange(MINUTES_PER_DAY)
    under, over = (np.where(minute < 600, 2.9, after) for after in (1.6, 2.3))
    fired = {}
    for name, roi in (("under", under), ("over", over)):
        day = one_campaign_day(rng, roi, 300.0)
        told = ideal_lr_path(day, 0, 600, AOV, CV, (LAG_MINUTES, LAG_CDF))
        proving = ideal_lr_path(day, 0, 600, AOV, CV, (LAG_MINUTES, LAG_CDF), null_roi=2.0)
        fired[name] = [int(np.argmax(np.nan_to_num(p, nan=-np.inf) >= np.log(1000))) or None for p in (told, proving)]
    assert fired["over"][0] is not None and fired["over"][1] is None
    assert fired["under"][0] is not None and fired["under"][1] is not None
    assert 600 < fired["under"][0] < fired["under"][1]


@pytest.mark.parametrize("alpha", [0.1])
def test_without_a_change_the_ideal_detector_alarms_at_most_alpha_of_the_days(alpha):
    # Ville's inequality: a likelihood ratio martingale reaches 1/alpha with probability at most alpha, which is
    # what lets the benchmark compare the guard with it at the guard's own false-alarm rate.
    rng = np.random.default_rng(11)
    roi = np.full(MINUTES_PER_DAY, 2.4)
    roi[700:] = 1.6  # the alternative it is told; the data below never follow it
    alarms = 0
    for _ in range(40):
        day = one_campaign_day(rng, np.full(MINUTES_PER_DAY, 2.4))
        day.values_gmv[MODEL, 0] = roi * 60.0  # told the fall, which does not happen
        path = ideal_lr_path(day, 0, 700, AOV, CV, (LAG_MINUTES, LAG_CDF))
        alarms += bool(np.nanmax(path) >= np.log(1 / alpha))
    assert alarms <= 40 * alpha * 2  # at most alpha in expectation; twice that allows for 40 days' sampling


def _campaign(family="degraded", kind="cvr_shift", size=0.4, crossing=None, trip=None, false_trips=0, cid="c01",
              peak=0.0):
    return CampaignDay(family, 7, cid, kind, size, crossing, trip, false_trips, peak)


def _report(loss, oracle, spend_share_material=True, failures=0, held=0.0, restores=()):
    return {"loss_avoided": loss, "oracle_loss_avoided": oracle,
            "oracle_capture": round(loss / oracle, 4) if spend_share_material else None,
            "false_trips": 0, "trips": [], "restores": list(restores), "probation_failures": failures,
            "held_campaign_hours": held}


def test_the_summary_counts_capture_on_material_days_delays_against_the_ideal_and_false_trips_per_healthy_day():
    path = np.full(MINUTES_PER_DAY, np.nan)
    path[400:] = np.linspace(0, 20, MINUTES_PER_DAY - 400)
    below = np.zeros(MINUTES_PER_DAY, dtype=bool)
    below[410:] = True
    degraded = DayResult("degraded", 1, _report(800.0, 1000.0, failures=2, held=4.0,
                                                restores=[{"below_floor_plus_hysteresis": False}]),
                         [_campaign(crossing=420, trip=450, cid="c01"), _campaign(cid="c02")] +
                         [_campaign(kind="", size=0.0, cid=f"h{i}") for i in range(8)],
                         {"c01": ({"ideal": path, "ideal_below_floor": path - 3.0,
                                   "ideal_below_guard_null": path - 1.0}, below)})
    healthy = DayResult("healthy", 2, _report(0.0, 10.0, spend_share_material=False),
                        [_campaign(family="healthy", kind="", size=0.0, cid=f"g{i}", false_trips=int(i == 0))
                         for i in range(10)], {})
    result = summarise([degraded, healthy], 8.3)
    assert result["oracle_capture"] == 0.8 and result["material_days"] == 1
    assert result["oracle_capture_by_family"] == {"degraded": 0.8, "healthy": None}
    assert result["healthy_campaign_days"] == 18
    assert result["false_trips_per_100_healthy_campaign_days"] == round(100 / 18, 3)
    assert result["false_trips_per_100_healthy_family_campaign_days"] == 10.0
    assert result["false_trips_per_100_model_failure_campaign_days_above_floor"] is None  # no such day here
    # alpha = 1/18: the ideal trips where its ratio reaches ln 18 and the truth is below the floor
    ideal_minute = int(np.flatnonzero((np.nan_to_num(path, nan=-1) >= np.log(18)) & below)[0])
    assert result["detection_delay_min"]["median"] == 30.0
    assert result["detection_delay_min"]["ideal"]["median"] == float(ideal_minute - 420)
    # the ideal below-floor detector's ratio is 3 lower here: it needs ln 18 + 3
    below_minute = int(np.flatnonzero((np.nan_to_num(path, nan=-1) >= np.log(18) + 3.0) & below)[0])
    assert result["detection_delay_min"]["ideal_below_floor"]["median"] == float(below_minute - 420)
    assert result["detection_delay_min"]["ideal_below_floor"]["never"] == 0
    assert result["detection_delay_min"]["ideal_below_floor"]["ours"]["median"] == 30.0
    assert result["detection_delay_min"]["ideal_below_floor"]["ratio_p90"] == round(30 / (below_minute - 420), 2)
    assert result["missed_crossings"] == 0
    assert result["restores"] == 1 and result["restores_below_floor_plus_hysteresis"] == 0
    assert result["failed_probations_per_campaign_day"] == round(2 / 20, 4)
    assert result["failed_probations_per_held_campaign_hour"] == 0.5


def test_campaigns_a_failing_model_spares_count_their_false_trips_apart():
    failing = DayResult("model_failure", 3, _report(5e6, 5e6),
                        [_campaign(family="model_failure", kind="model", size=1.0, cid="m1", false_trips=1),
                         _campaign(family="model_failure", kind="model", size=1.0, cid="m2"),
                         _campaign(family="model_failure", kind="model", size=1.0, cid="m3", crossing=0, trip=2)], {})
    healthy = DayResult("healthy", 2, _report(0.0, 10.0, spend_share_material=False),
                        [_campaign(family="healthy", kind="", size=0.0, cid=f"g{i}") for i in range(4)], {})
    result = summarise([failing, healthy], 8.3)
    assert result["model_failure_campaign_days_above_floor"] == 2
    assert result["false_trips_per_100_model_failure_campaign_days_above_floor"] == 50.0
    assert result["healthy_campaign_days"] == 4 and result["false_trips_per_100_healthy_campaign_days"] == 0.0


def test_the_null_tail_extrapolates_rare_false_trips_from_the_peaks_on_the_cautious_side():
    """Peaks with a known exponential tail, P(peak >= h) = e^(-1.5 h): each fit finds the rate, and its
    estimates at a threshold far beyond the peaks measured err towards more false trips, never fewer."""
    rate = 1.5
    peaks = np.random.default_rng(3).exponential(1 / rate, 200_000)
    fits = null_tail(peaks, threshold=8.3)
    assert [f.level for f in fits] == [4.0, 4.5, 5.0]
    for f in fits:
        assert f.exceedances == int((peaks >= f.level).sum())
        assert abs(f.rate_per_nat - rate) < 0.2 * rate and f.rate_low < f.rate_per_nat
        assert f.at_threshold >= np.exp(-rate * 8.3)
        assert np.log(1 / FALSE_TRIP_BUDGET) / rate <= f.threshold_for_budget < np.log(1 / FALSE_TRIP_BUDGET) / rate + 2
    assert null_tail(np.full(500, 3.0), threshold=8.3) == []  # no peak reaches a level: nothing to fit


def test_the_summary_reports_how_near_healthy_campaign_days_came_to_the_threshold():
    peaks = np.random.default_rng(5).exponential(1 / 1.5, 4000) + 2.0
    healthy = DayResult("healthy", 2, _report(0.0, 10.0, spend_share_material=False),
                        [_campaign(family="healthy", kind="", size=0.0, cid=f"g{i}", peak=float(p))
                         for i, p in enumerate(peaks)], {})
    tail = summarise([healthy], 8.3)["cusum_null_tail"]
    assert tail["campaign_days"] == 4000 and tail["threshold"] == 8.3
    assert tail["reached"]["4.0"] == int((peaks >= 4).sum()) and tail["reached"]["8.3"] == int((peaks >= 8.3).sum())
    fits = null_tail(peaks, 8.3)
    assert len(fits) == 3
    assert tail["false_trips_per_campaign_day"] == max(f.at_threshold for f in fits)
    assert tail["threshold_for_budget"] == round(max(f.threshold_for_budget for f in fits), 2)


def test_the_ideals_get_the_guards_false_alarm_rate_the_tail_predicts_when_no_false_trip_is_counted():
    peaks = np.random.default_rng(7).exponential(1 / 2.0, 4000) + 2.0
    healthy = DayResult("healthy", 2, _report(0.0, 10.0, spend_share_material=False),
                        [_campaign(family="healthy", kind="", size=0.0, cid=f"g{i}", peak=float(p))
                         for i, p in enumerate(peaks)], {})
    path = np.full(MINUTES_PER_DAY, np.nan)
    path[400:] = np.linspace(0, 20, MINUTES_PER_DAY - 400)
    below = np.zeros(MINUTES_PER_DAY, dtype=bool)
    below[410:] = True
    ideals = {"ideal": path, "ideal_below_floor": path - 3.0, "ideal_below_guard_null": path - 1.0}
    degraded = DayResult("degraded", 1, _report(800.0, 1000.0),
                         [_campaign(crossing=420, trip=450, cid="c01"), _campaign(crossing=420, cid="c02")],
                         {"c01": (ideals, below), "c02": (ideals, below)})
    result = summarise([healthy, degraded], 8.3)
    predicted = result["cusum_null_tail"]["false_trips_per_campaign_day"]
    assert predicted < 1 / 4000  # the tail says rarer than the days could count
    assert result["ideal_alpha"] == float(f"{predicted:.3g}")
    ideal_minute = int(np.flatnonzero((np.nan_to_num(path, nan=-1) >= np.log(1 / predicted)) & below)[0])
    delays = result["detection_delay_min"]
    assert delays["ideal"]["median"] == float(ideal_minute - 420)
    # c02 the ideals trip and the guard never does: counted, not hidden by pairing the crossings both trip
    assert delays["never"] == 1 and delays["ideal"]["ours_never"] == 1
    assert delays["ideal_below_guard_null"]["ours_never"] == 1
