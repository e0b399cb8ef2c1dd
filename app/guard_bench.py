"""`bidlens guard bench`: the ROI guard judged on days drawn from documented families (sim.families).

Each day is played as `bidlens stress` plays it (common random numbers): the model
alone, the model under the guard, and the oracle (sim.oracle). Over all days:

- **oracle capture**: the guard's loss avoided / the oracle's, summed over the days
  where the oracle avoids a material loss (more than 1% of the day's spend), overall
  and per family;
- **detection delay** of each degraded campaign whose true (expected) trailing-hour ROI
  stays below the floor for at least 15 minutes: from that crossing to the guard's
  trip (median, p90), for falls of 30% or more and for all; beside it the **ideal
  detector**, told the true size and time of the change: from the change on, it weighs
  the true path of the campaign's ROI against "no change" (its ROI over the hour
  before) on the same evidence (the GMV known of each bucket, bucket time), and trips
  at the first minute the likelihood ratio reaches ln(1/alpha) while the true ROI is
  below the floor. alpha is the guard's own false-trip rate per healthy campaign-day
  (counted, or where none were counted, the null tail's cautious estimate below): under
  no change the ratio reaches ln(1/alpha) with probability at most alpha, so it raises
  no more false alarms than the guard;
  beside it two ideal detectors told the same but made to prove the fall below a level
  (the null is the nearest path that never goes below it): **below the floor**, the best
  any detector can do that trips a campaign sitting at the floor (healthy, by the
  issue's definition) with probability at most alpha, and **below the guard's null**
  (floor x (1 + cusum_above), the level the guard's CUSUM keeps safe at alpha), the best
  a detector with the guard's own contract can do. A campaign that falls from 3.0 to 2.3
  has changed as much as one that falls to 1.9; only these must tell them apart, as a
  guard must;
- **false trips** per 100 healthy campaign-days (campaigns whose true ROI never goes
  below the floor), on the healthy families and on the untouched campaigns of the
  other days; apart, on whole-model-failure days, the campaigns whose own ROI stays
  above the floor (the pooled calibration rule may take them with the rest);
- **the null tail**: each healthy campaign-day's highest sequential evidence S, how many
  came within reach of the guard's threshold, and the false trips per campaign-day the
  tail of those peaks predicts at it, a rate far below what the days can count
  (guards.sequential.null_tail), with the threshold the budget of one in 8,000 allows;
- **restores** with the model's true ROI below floor + hysteresis, and **failed
  probations** per campaign-hour the guard held.

Days are drawn from `seed` (default 1). The guard's settings were chosen on days drawn
with seeds 9000-9015 (docs/GUARDS.md, "Benchmark"); a report quotes other seeds.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from app.stress_guard import make_guard_hook
from guards.config import load_guard_settings
from guards.sequential import FALSE_TRIP_BUDGET, lag_share_at_end, null_tail
from sim.catalog import MINUTES_PER_DAY
from sim.families import HEALTHY_FAMILIES, Day, draw_days
from sim.kit import prepare
from sim.oracle import MODEL
from sim.stress import ArmRun, first_sustained_crossing, play_stress, stress_report, true_roi

LARGE_FALL = 0.3  # the figures are for degradations of 30% or more


@dataclass(frozen=True)
class CampaignDay:
    """One campaign on one benchmark day, judged."""

    family: str
    day_seed: int
    campaign_id: str
    kind: str                  # the degradation (sim.families.Degradation.kind), "" when untouched
    size: float
    crossing: int | None       # first minute of its first sustained below-floor episode (true ROI)
    trip: int | None           # the guard's first trip at or after crossing - 60 (or any, untouched)
    false_trips: int
    peak_cusum: float = 0.0    # the highest sequential evidence S the guard saw for it that day


@dataclass(frozen=True)
class DayResult:
    family: str
    day_seed: int
    report: dict               # the stress report without the per-hour and per-campaign tables
    campaigns: list[CampaignDay]
    # degraded campaign -> (each ideal detector's log-likelihood ratio per minute from its change (IDEALS),
    # whether its true expected ROI that minute is below the floor)
    ideal: dict[str, tuple[dict[str, np.ndarray], np.ndarray]]


IDEALS = ("ideal", "ideal_below_floor", "ideal_below_guard_null")


def _lag(settings) -> tuple[np.ndarray, np.ndarray]:
    o = settings.observe
    return np.asarray(o.lag_minutes, dtype=np.float64), np.asarray(o.lag_cdf, dtype=np.float64)


def ideal_lr_path(model: ArmRun, c: int, change_at: int, aov: float, cv: float, lag: tuple[np.ndarray, np.ndarray],
                  null_roi: float | None = None) -> np.ndarray:
    """The ideal detector's log-likelihood ratio per minute from `change_at`: the campaign's true expected ROI
    path against its ROI over the hour before the change, on the GMV known of each bucket since the change.
    With `null_roi` (the floor: the ideal below-floor detector) the null is the nearest path that never goes
    below it, max(rho_b, null_roi): only buckets whose true ROI is under the floor add evidence.

    At watermark w it is the sum over buckets b in [change_at, w) of (gmv known of b / s) ln(rho_b / rho0)
    - (rho_b - rho0) spend_b F(w - end of b) / s (guards.sequential's step with the true rho_b): the first
    part a running sum over increments in the order they become known, the second a convolution with F."""
    scale = aov * (1.0 + cv * cv)
    spend_exp, gmv_exp = model.values_spend[MODEL, c], model.values_gmv[MODEL, c]
    before = slice(max(0, change_at - 60), max(change_at, 1))
    spend = model.spend[c, change_at:]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = gmv_exp[change_at:] / spend_exp[change_at:]
    if null_roi is None:
        rho0 = np.full_like(rho, gmv_exp[before].sum() / max(spend_exp[before].sum(), 1e-9))
    else:
        rho0 = np.fmax(rho, null_roi)
    ok = (rho > 0) & (spend > 0) & (rho0 > 0)
    log_ratio = np.where(ok, np.log(np.where(ok, rho, 1.0) / rho0), 0.0)
    drift = np.where(ok, (rho - rho0) * spend / scale, 0.0)
    lag_minutes, lag_cdf = lag
    n = MINUTES_PER_DAY - change_at
    share = lag_share_at_end(np.arange(n) * 60.0, lag_minutes * 60, lag_cdf)  # F at age a minutes after the end
    expected = np.convolve(drift, share)[:n]        # [k]: sum over b <= k of drift_b F(k - b)
    inc = model.increments
    mine = (inc["campaign"] == c) & (inc["bucket"] >= change_at)
    known = inc["known"][mine]
    order = np.argsort(known, kind="stable")
    weight = (inc["gmv"][mine] / scale * log_ratio[inc["bucket"][mine].astype(int) - change_at])[order]
    seen = np.r_[0.0, np.cumsum(weight)]
    w = np.minimum(model.watermark[change_at:].astype(int), MINUTES_PER_DAY)
    out = np.full(MINUTES_PER_DAY, np.nan)
    has = w > change_at                               # some bucket since the change has ended
    out[change_at:][has] = (seen[np.searchsorted(known[order], w[has], side="right")]
                            - expected[w[has] - 1 - change_at])
    return out


def play_day(day: Day, data_dir: str) -> DayResult:
    """Play one benchmark day and judge every campaign of it."""
    kit = prepare(day.scenario, data_dir)
    settings = load_guard_settings(os.environ.get("BIDLENS_GUARD_CONFIG", ""))
    roi = settings.defaults["roi"]
    hook = make_guard_hook(day.scenario, kit.catalog)
    played = play_stress(day.scenario, day.seed, kit.bidders, kit.history, kit.pool, guard_hook=hook,
                         arms=("model",))
    report = stress_report(played, roi.hysteresis)
    model = played.reference
    below = true_roi(model) < played.floor
    affected = {d.campaign_id: d for d in day.affected}
    lag = _lag(settings)
    campaigns, paths = [], {}
    aov = {c.campaign_id: c.avg_order_value for c in kit.catalog.campaigns}
    with np.errstate(invalid="ignore", divide="ignore"):
        instant_below = model.values_gmv[MODEL] < played.floor * model.values_spend[MODEL]
    for i, cid in enumerate(played.campaign_ids):
        crossing = first_sustained_crossing(below[i])
        trips = [t for t in report["trips"] if t["campaign"] == cid and t["kind"] == "trip"]
        after = [t["at_minute"] for t in trips if crossing is None or t["at_minute"] >= crossing - 60]
        degradation = affected.get(cid)
        if degradation is not None and crossing is not None and degradation.kind != "model":
            told = (model, i, degradation.at_minute, aov[cid], roi.order_value_cv, lag)
            nulls = (None, played.floor, played.floor * (1.0 + roi.cusum_above))
            paths[cid] = ({name: ideal_lr_path(*told, null_roi=null) for name, null in zip(IDEALS, nulls)},
                          instant_below[i])
        campaigns.append(CampaignDay(day.family, day.seed, cid, degradation.kind if degradation else "",
                                     degradation.size if degradation else 0.0, crossing,
                                     min(after) if after else None, sum(t["false"] for t in trips),
                                     float(hook.peak_cusum[i])))
    slim = {k: v for k, v in report.items() if k not in ("arms",)}
    slim["arms"] = {a: {k: v for k, v in d.items() if k not in ("by_hour", "by_campaign")}
                    for a, d in report["arms"].items()}
    return DayResult(day.family, day.seed, slim, campaigns, paths)


def _ideal_trip(path: np.ndarray, true_below: np.ndarray, threshold: float) -> int | None:
    hits = np.flatnonzero((np.nan_to_num(path, nan=-np.inf) >= threshold) & true_below)
    return int(hits[0]) if len(hits) else None


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "median": None, "p90": None}
    return {"n": len(values), "median": round(float(np.median(values)), 1),
            "p90": round(float(np.percentile(values, 90)), 1)}


def summarise(days: list[DayResult], cusum_threshold: float) -> dict:
    """The benchmark's figures over all days (module docstring); `cusum_threshold`: the guard's, which the
    healthy campaign-days' peak evidence is judged against (guards.sequential.null_tail)."""
    healthy = [c for d in days for c in d.campaigns if c.crossing is None and c.kind == ""]
    healthy_family = [c for c in healthy if c.family in HEALTHY_FAMILIES]
    spared = [c for d in days for c in d.campaigns if c.crossing is None and c.kind == "model"]
    false_rate = sum(c.false_trips > 0 for c in healthy) / max(len(healthy), 1)
    tail = _null_tail([c.peak_cusum for c in healthy], cusum_threshold)
    # The ideals get the guard's false-alarm rate: counted where the days can count it, else the tail's
    # estimate of it (cautious, so it errs towards a faster ideal), else one in the days measured.
    predicted = tail["false_trips_per_campaign_day"]
    alpha = max(false_rate, predicted if predicted is not None else 1.0 / max(len(healthy), 1))
    threshold = float(np.log(1.0 / alpha))
    crossings: list[Crossing] = []
    for d in days:
        for c in d.campaigns:
            if c.crossing is None or c.kind == "" or c.kind == "model":
                continue
            paths, below = d.ideal.get(c.campaign_id, ({}, None))
            trips = {name: _ideal_trip(path, below, threshold) for name, path in paths.items()}
            crossings.append(Crossing(c.size, None if c.trip is None else c.trip - c.crossing,
                                      {name: None if trips.get(name) is None else trips[name] - c.crossing
                                       for name in IDEALS}))
    large = [x for x in crossings if x.size >= LARGE_FALL]
    material = [d for d in days if d.report["oracle_capture"] is not None]

    def capture(subset: list[DayResult]) -> float | None:
        avoided = sum(d.report["loss_avoided"] for d in subset)
        oracle = sum(d.report["oracle_loss_avoided"] for d in subset)
        return round(avoided / oracle, 4) if oracle > 0 else None

    families = sorted({d.family for d in days})
    restores = [r for d in days for r in d.report["restores"]]
    held = sum(d.report["held_campaign_hours"] for d in days)
    return {
        "days": len(days), "families": {f: sum(d.family == f for d in days) for f in families},
        "degraded_campaign_days": sum(c.kind != "" for d in days for c in d.campaigns),
        "healthy_campaign_days": len(healthy),
        "oracle_capture": capture(material),
        "oracle_capture_by_family": {f: capture([d for d in material if d.family == f]) for f in families},
        "material_days": len(material),
        "detection_delay_min": _delays(large),
        "detection_delay_min_all": _delays(crossings),
        "missed_crossings": sum(x.ours is None for x in crossings),
        "false_trips_per_100_healthy_campaign_days": round(100 * false_rate, 3),
        "false_trips_per_100_healthy_family_campaign_days": round(
            100 * sum(c.false_trips > 0 for c in healthy_family) / max(len(healthy_family), 1), 3),
        # On a whole-model failure every campaign is affected; those whose own ROI stays above the floor are
        # healthy by the truth, and the pooled calibration rule may take them with the rest.
        "false_trips_per_100_model_failure_campaign_days_above_floor": round(
            100 * sum(c.false_trips > 0 for c in spared) / len(spared), 3) if spared else None,
        "model_failure_campaign_days_above_floor": len(spared),
        "ideal_alpha": float(f"{alpha:.3g}"),
        "cusum_null_tail": tail,
        "restores": len(restores),
        "restores_judged": [{"family": d.family, "seed": d.day_seed, **r} for d in days for r in d.report["restores"]],
        "restores_below_floor_plus_hysteresis": sum(r["below_floor_plus_hysteresis"] for r in restores),
        "failed_probations_per_campaign_day": round(
            sum(d.report["probation_failures"] for d in days) / max(sum(len(d.campaigns) for d in days), 1), 4),
        "failed_probations_per_held_campaign_hour": round(
            sum(d.report["probation_failures"] for d in days) / held, 4) if held else 0.0,
        "per_day": [{"family": d.family, "seed": d.day_seed, "loss_avoided": d.report["loss_avoided"],
                     "oracle_loss_avoided": d.report["oracle_loss_avoided"], "oracle_capture": d.report["oracle_capture"],
                     "false_trips": d.report["false_trips"], "trips": sum(t["kind"] == "trip" for t in d.report["trips"])}
                    for d in days],
    }


def _null_tail(peaks: list[float], threshold: float) -> dict:
    """The healthy campaign-days' peak evidence: how many reached each level, and the tail's estimate of the
    false trips per campaign-day at the threshold and of the threshold the budget allows (the most cautious
    of the fits, guards.sequential.null_tail)."""
    fits = null_tail(np.asarray(peaks), threshold)
    return {"campaign_days": len(peaks), "threshold": threshold, "budget_per_campaign_day": FALSE_TRIP_BUDGET,
            "reached": {str(level): sum(p >= level for p in peaks) for level in (4.0, 5.0, 6.0, threshold)},
            "false_trips_per_campaign_day": max((f.at_threshold for f in fits), default=None),
            "threshold_for_budget": round(max(f.threshold_for_budget for f in fits), 2) if fits else None,
            "fits": [{"level": f.level, "exceedances": f.exceedances, "rate_per_nat": round(f.rate_per_nat, 3),
                      "rate_low": round(f.rate_low, 3), "false_trips_per_campaign_day": f.at_threshold,
                      "threshold_for_budget": round(f.threshold_for_budget, 2)} for f in fits]}


@dataclass(frozen=True)
class Crossing:
    """A degraded campaign's sustained crossing: minutes from it to our trip and to each ideal's (None: never)."""

    size: float
    ours: int | None
    ideals: dict[str, int | None]


def _delays(crossings: list[Crossing]) -> dict:
    """Our delays (over the crossings we and the ideal both tripped) and, per ideal detector, its delays
    beside ours over the crossings both tripped, the ratio of the quantiles, the crossings it never trips and
    those it trips and we never do."""
    def paired(name: str) -> tuple[list[int], list[int]]:
        both = [x for x in crossings if x.ours is not None and x.ideals[name] is not None]
        return [x.ours for x in both], [x.ideals[name] for x in both]

    figures = {}
    for name in IDEALS:
        ours, ideal = paired(name)
        figures[name] = {**_quantiles(ideal), "never": sum(x.ideals[name] is None for x in crossings),
                         "ours_never": sum(x.ours is None and x.ideals[name] is not None for x in crossings),
                         "ours": _quantiles(ours), "ratio_median": _ratio(ours, ideal, 50),
                         "ratio_p90": _ratio(ours, ideal, 90)}
    return {**figures["ideal"]["ours"], **figures, "crossings": len(crossings),
            "never": sum(x.ours is None for x in crossings)}


def _ratio(ours: list[float], ideal: list[float], q: int) -> float | None:
    if not ours:
        return None
    a, b = float(np.percentile(ours, q)), float(np.percentile(ideal, q))
    return round(a / b, 2) if b > 0 else None


def run_bench(n_days: int, seed: int, data_dir: str, workers: int = 2) -> dict:
    """Draw `n_days` days from `seed`, play them (in `workers` processes), and summarise."""
    days = draw_days(seed, n_days)
    prepare(days[0].scenario, data_dir)  # train the bundled models once, before the workers need them
    if workers <= 1:
        played = [play_day(day, data_dir) for day in days]
    else:  # spawned, not forked: a forked child inherits LightGBM's OpenMP pool locked and hangs
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            played = list(pool.map(play_day, days, [data_dir] * len(days)))
    threshold = load_guard_settings(os.environ.get("BIDLENS_GUARD_CONFIG", "")).defaults["roi"].cusum_threshold
    return {"seed": seed, **summarise(played, threshold)}
