"""The launch gate's report for one model version (docs/LAUNCH.md): what it does on the shipped
scenarios, how well its value predictions match held-out history, whether its objective respects the
floor, what drives its bids -- and the verdict (control.gate) against the manager's thresholds.

- **Stress**: each scenario (and seed) is played by the version alone, the serving version alone and
  the manual rule pool alone (a global kill switch), all on the same seed (common random numbers:
  they differ only where their policies do). The arms are independent days, so they run in worker
  processes side by side (`workers`, one per core). An arm is the simulation loop with the day's
  totals kept: unlike `sim.stress.run_arm` it does not value every alternative action each minute,
  which only a guarded run's oracle needs.
- **Objective check**: over the version's own bids in its arms, the share whose predicted ROI at the
  bid (pred_value / bid) is below the floor: a model that bids to buy GMV at a thin return shows here.
- **Calibration**: the store's decisions of the last days after the version's training window, joined
  to their outcomes, re-predicted by the version from the features stored with them: realised GMV /
  the value it predicts for the clicks (lag-corrected as the guard does), overall, per campaign and
  audience package, with a two-sided interval on the effective orders, and a reliability table.
- **Explanation summary**: global SHAP (yuan of value per click) on held-out rows (or the stress rows
  when the store has none): the features that drive its bids most, and those whose mean contribution
  differs most from the serving version's on the same rows.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from control.gate import (
    ArmResult,
    CalibrationResult,
    GateFindings,
    GateThresholds,
    ObjectiveResult,
    ScenarioResult,
    calibration_prior,
    verdict,
)
from explain.analysis import diff_windows, importance
from explain.artifacts import ModelArtifact, load_artifact
from guards.config import GuardSettings
from guards.observe import lag_share, model_calibration
from guards.roi import effective_orders, poisson_lower, poisson_upper
from sim.catalog import MINUTES_PER_DAY
from sim.scenario import Scenario, load_scenario, load_scenario_file

GATE_SCENARIOS = ("normal", "818", "price-war", "stockout", "drift")
INTERVAL = 0.95                 # the calibration's two-sided interval
HISTORY_ROWS = 200_000          # held-out slot-buckets read at most (the newest)
EXPLAIN_ROWS = 2_000            # rows explained for the summary
RATIO_BINS = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, np.inf)  # bid / (value / floor)
RELIABILITY_BINS = 10


def gate_scenarios(names: Sequence[str] = GATE_SCENARIOS) -> tuple[Scenario, ...]:
    """Shipped scenarios by name, or the team's scenario files (a name ending in .toml); a bad one is a
    ScenarioError naming the file, key and value."""
    return tuple(load_scenario_file(n) if n.endswith(".toml") else load_scenario(n) for n in names)


def playable_mismatch(artifact: ModelArtifact) -> str:
    """Why the simulator cannot play the model (empty: it can): it must take the simulator's features."""
    from sim.features import FEATURE_NAMES

    names = artifact.feature_names
    if names == list(FEATURE_NAMES):
        return ""
    missing = [n for n in FEATURE_NAMES if n not in names]
    extra = [n for n in names if n not in FEATURE_NAMES]
    return (f"its features differ from the simulator's (missing {missing}, extra {extra})" if missing or extra
            else "its features are the simulator's in another order")


# --- stress arms (run in worker processes) ------------------------------------------------------

@dataclass(frozen=True)
class ArmJob:
    scenario: Scenario
    seed: int
    minutes: int
    role: str                   # version | serving | pool
    folder: str                 # the model that plans (for the pool arm: what the pool replaces)
    data_dir: str
    pool_text: str | None       # the rule pool in force (None: the simulated company's default)
    sample_features: bool = False


def _played_scenario(scenario: Scenario, variant: str) -> Scenario:
    """The scenario played by one model all day: its variant's bid rule, no scheduled model switch."""
    return dataclasses.replace(scenario, bidder=dataclasses.replace(scenario.bidder, variant=variant),
                               events=tuple(e for e in scenario.events if e.kind != "switch_model"))


def play_arm(job: ArmJob) -> dict:
    """One arm of one scenario: the day's totals as sim.stress.arm_summary reports them, and for the
    version's arm the objective check's counts (and a sample of feature rows, when asked)."""
    from control.policy import KillSwitch
    from guards.rule_pool import load_rule_pool
    from sim.bidder import Bidder
    from sim.engine import NO_KILL, Simulation
    from sim.kit import prepare
    from sim.stress import arm_summary

    artifact = load_artifact(job.folder)
    scenario = _played_scenario(job.scenario, artifact.variant)
    kit = prepare(scenario, job.data_dir, pool=load_rule_pool(job.pool_text) if job.pool_text else None)
    sim = Simulation(scenario, job.seed, {artifact.variant: Bidder(artifact, kit.history)}, kit.history,
                     pool=kit.pool)
    kill = KillSwitch(global_on=True) if job.role == "pool" else NO_KILL
    floor = scenario.bidder.floor_roi
    C = sim.C
    spend, gmv = np.zeros((C, MINUTES_PER_DAY)), np.zeros((C, MINUTES_PER_DAY))
    clicks, orders = np.zeros(C), np.zeros(C)
    counts = np.zeros(len(RATIO_BINS) - 1)
    below = bids = 0
    spend_below = spend_total = 0.0
    rng = np.random.default_rng(job.seed)
    samples = []
    while sim.minute < job.minutes:
        r = sim.step(kill_switch=kill)
        spend[:, r.minute], gmv[:, r.minute] = r.campaign_spend, r.campaign_gmv
        c = r.columns
        clicks += np.bincount(sim.campaign_of, weights=c["clicks"], minlength=C)
        orders += np.bincount(sim.campaign_of, weights=c["orders"], minlength=C)
        if job.role != "version":
            continue
        on = c["audience_on"].astype(bool)
        ratio = c["pred_value"][on] / np.maximum(c["bid"][on], 1e-9)  # predicted ROI at the bid
        bids += int(on.sum())
        below += int((ratio < floor).sum())
        spend_total += float(c["spend"].sum())
        spend_below += float(c["spend"][on][ratio < floor].sum())
        counts += np.histogram(floor / np.maximum(ratio, 1e-9), bins=RATIO_BINS)[0]
        if job.sample_features and r.minute % 30 == 0:
            samples.append(r.features[rng.choice(len(r.features), size=min(40, len(r.features)), replace=False)])
    totals = SimpleNamespace(spend=spend, gmv=gmv, clicks=clicks, orders=orders)  # what arm_summary reads
    ids = tuple(sim.catalog.campaign_ids)
    margin = np.array([x.gross_margin for x in sim.catalog.campaigns])
    summary = arm_summary(totals, margin, ids, floor)
    out = {"role": job.role, "scenario": job.scenario.name, "seed": job.seed, "floor": floor,
           "summary": {k: summary[k] for k in ("spend", "gmv", "roi", "profit", "campaigns_below_floor")},
           "by_campaign": [{"campaign": x["campaign"], "roi": x["roi"]} for x in summary["by_campaign"]]}
    if job.role == "version":
        out["objective"] = {"bids": bids, "below": below, "spend": spend_total, "spend_below": spend_below,
                            "ratio_counts": counts.tolist()}
        if samples:
            out["features"] = np.vstack(samples).tolist()
    return out


def run_arms(jobs: Sequence[ArmJob], workers: int, on_done: Callable[[int], None] | None = None) -> list[dict]:
    """Every arm, `workers` at a time in their own processes (spawned: safe from the panel's threads);
    one worker plays them in this process."""
    results: list[dict | None] = [None] * len(jobs)
    if workers <= 1:
        for i, job in enumerate(jobs):
            results[i] = play_arm(job)
            if on_done is not None:
                on_done(i + 1)
        return results
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(play_arm, job): i for i, job in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures), 1):
            results[futures[future]] = future.result()
            if on_done is not None:
                on_done(done)
    return results


def _arm(result: dict | None) -> ArmResult | None:
    if result is None:
        return None
    s = result["summary"]
    return ArmResult(s["roi"], s["profit"], s["campaigns_below_floor"])


def stress_findings(results: Sequence[dict]) -> tuple[tuple[ScenarioResult, ...], ObjectiveResult | None, dict]:
    """The scenario results, the objective check and its histogram, from the arms' results."""
    by = {(r["scenario"], r["seed"], r["role"]): r for r in results}
    keys = list(dict.fromkeys((r["scenario"], r["seed"]) for r in results))  # in the order played
    scenarios = tuple(ScenarioResult(name, seed, by[(name, seed, "version")]["floor"],
                                     _arm(by[(name, seed, "version")]), _arm(by.get((name, seed, "serving"))),
                                     _arm(by.get((name, seed, "pool")))) for name, seed in keys)
    objectives = [r["objective"] for r in results if r["role"] == "version"]
    if not objectives:
        return scenarios, None, {}
    bids = sum(o["bids"] for o in objectives)
    below = sum(o["below"] for o in objectives)
    spend = sum(o["spend"] for o in objectives)
    counts = np.sum([o["ratio_counts"] for o in objectives], axis=0)
    objective = ObjectiveResult(bids, below / bids if bids else 0.0,
                                sum(o["spend_below"] for o in objectives) / spend if spend else 0.0)
    edges = [f"{a:g}-{b:g}" if np.isfinite(b) else f">{a:g}" for a, b in zip(RATIO_BINS[:-1], RATIO_BINS[1:])]
    histogram = {"bins": edges, "bids": [int(c) for c in counts]}
    return scenarios, objective, histogram


# --- calibration on held-out history ------------------------------------------------------------

def calibration_interval(k: float, orders: float, cv: float, confidence: float = INTERVAL) -> tuple[float, float]:
    """Two-sided interval of a value calibration k over `orders` effective orders (compound Poisson, as
    the ROI guard's bounds: order values vary with coefficient of variation `cv`)."""
    tail = 1.0 - (1.0 - confidence) / 2
    n = effective_orders(orders, cv)
    if n <= 0:
        return 0.0, float("inf")
    return k * poisson_lower(n, tail) / n, k * poisson_upper(n, tail) / n


@dataclass(frozen=True)
class HeldOut:
    """Held-out slot-buckets with clicks: who, the outcome, the version's prediction, the features."""

    frame: pd.DataFrame   # campaign_id, audience_package, bucket_ts, clicks, gmv, orders, share_known
    X: np.ndarray         # the version's features, its column order
    window: tuple[int, int]


def _json(doc):
    return json.loads(doc) if isinstance(doc, str) else doc


def held_out_history(conn: Connection, artifact: ModelArtifact, settings: GuardSettings, days: float,
                     max_rows: int = HISTORY_ROWS) -> HeldOut | None:
    """The store's slot-buckets of the last `days` after the version's training window (the newest
    `max_rows` with clicks), with the outcome known so far and the features stored with the decision.
    Rows whose features lack one of the version's are left out. None: nothing held out."""
    newest = conn.execute(text("SELECT MAX(bucket_ts) FROM decisions")).scalar()
    if newest is None:
        return None
    start = max(int(newest - days * 86400), int(artifact.training_window[1]))
    watermark = conn.execute(text("SELECT MAX(known_ts) FROM outcomes WHERE bucket_ts >= :a"), {"a": start}).scalar()
    if watermark is None:
        return None
    rows = conn.execute(text(
        "SELECT d.campaign_id, d.audience_package, d.bucket_ts, o.clicks, o.gmv, o.orders, d.features "
        "FROM (SELECT campaign_id, audience_package, bucket_ts, SUM(clicks) AS clicks, SUM(gmv) AS gmv, "
        "SUM(orders) AS orders FROM outcomes WHERE bucket_ts >= :a AND bucket_ts <= :b "
        "GROUP BY campaign_id, audience_package, bucket_ts HAVING SUM(clicks) > 0) o "
        "JOIN decisions d ON d.campaign_id = o.campaign_id AND d.audience_package = o.audience_package "
        "AND d.bucket_ts = o.bucket_ts ORDER BY d.bucket_ts DESC, d.decision_id DESC LIMIT :n"),
        {"a": start, "b": newest, "n": max_rows}).all()
    names = artifact.feature_names
    keep, matrix = [], []
    for i, r in enumerate(rows):
        doc = _json(r.features) or {}
        if all(n in doc for n in names):
            keep.append(i)
            matrix.append([doc[n] for n in names])
    if not keep:
        return None
    frame = pd.DataFrame([rows[i][:6] for i in keep],
                         columns=["campaign_id", "audience_package", "bucket_ts", "clicks", "gmv", "orders"])
    frame = frame.drop_duplicates(["campaign_id", "audience_package", "bucket_ts"])  # a slot decided twice
    X = np.asarray(matrix, dtype=np.float64)[frame.index.to_numpy()]
    frame = frame.reset_index(drop=True).astype({"clicks": float, "gmv": float, "orders": float})
    frame["share_known"] = lag_share(int(watermark) - frame["bucket_ts"].to_numpy(), settings.observe)
    return HeldOut(frame, X, (start, int(newest)))


def calibration_findings(held: HeldOut | None, artifact: ModelArtifact, cv: float) -> tuple[CalibrationResult, dict]:
    """The version's value calibration on the held-out rows, overall (pooled effective orders, as the
    guard's model-wide k), per campaign and per audience package, and its reliability table."""
    if held is None:
        return CalibrationResult(None, None, None, 0.0), {}
    f = held.frame.copy()
    f["pred_value"] = np.maximum(artifact.predict(held.X), 0.0)
    f["predicted"] = f["clicks"] * f["pred_value"] * f["share_known"]
    by_campaign = f.groupby("campaign_id")[["gmv", "orders", "predicted"]].sum()
    k, orders, _ = model_calibration(by_campaign["gmv"].to_numpy(), by_campaign["orders"].to_numpy(),
                                     by_campaign["predicted"].to_numpy())
    if not np.isfinite(k):
        return CalibrationResult(None, None, None, 0.0), {}
    low, high = calibration_interval(k, orders, cv)

    def table(key: str) -> list[dict]:
        g = f.groupby(key)[["gmv", "orders", "predicted"]].sum()
        out = []
        for name, row in g.iterrows():
            kk = row["gmv"] / row["predicted"] if row["predicted"] > 0 else None
            lo, hi = calibration_interval(kk, row["orders"], cv) if kk is not None else (None, None)
            out.append({key: name, "k": _r(kk), "low": _r(lo), "high": _r(hi), "orders": round(row["orders"], 1)})
        return out

    clicks_known = f["clicks"] * f["share_known"]
    edges = np.unique(np.quantile(f["pred_value"], np.linspace(0, 1, RELIABILITY_BINS + 1)))
    f["bin"] = np.clip(np.searchsorted(edges, f["pred_value"], side="right") - 1, 0, max(len(edges) - 2, 0))
    reliability = [{"bin": int(b), "predicted": _r((g["predicted"]).sum() / (clicks_known[g.index]).sum()),
                    "realised": _r(g["gmv"].sum() / (clicks_known[g.index]).sum()), "clicks": int(g["clicks"].sum())}
                   for b, g in f.groupby("bin") if (clicks_known[g.index]).sum() > 0]
    detail = {"window": list(held.window), "rows": len(f), "by_campaign": table("campaign_id"),
              "by_package": table("audience_package"), "reliability": reliability}
    return CalibrationResult(float(k), float(low), float(high), float(orders)), detail


def _r(x, digits: int = 4):
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


# --- explanation summary --------------------------------------------------------------------------

def explanation_summary(artifact: ModelArtifact, serving: ModelArtifact | None, X: np.ndarray, top: int = 10) -> dict:
    """Global SHAP of the version on rows X (yuan of value per click): the top drivers, and the features
    whose mean contribution differs most from the serving version's on the same rows."""
    from explain.explainer import Explainer

    if not len(X):
        return {"rows": 0, "importance": [], "differs": None}
    rows = X[np.random.default_rng(0).choice(len(X), size=min(len(X), EXPLAIN_ROWS), replace=False)]
    _, contribs = Explainer(artifact).explain(rows)
    ranked = importance(contribs, artifact.features).head(top)
    out = {"rows": len(rows), "importance": ranked.round(6).to_dict(orient="records"), "differs": None}
    if serving is not None and serving.feature_names == artifact.feature_names:
        _, before = Explainer(serving).explain(rows)
        out["differs"] = diff_windows(before, contribs, artifact.features).head(top).round(6).to_dict(orient="records")
    return out


# --- the gate -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GateRequest:
    model_version: str
    folder: str                               # the version's artefact
    scenarios: tuple[Scenario, ...]
    seeds: tuple[int, ...] = (1,)
    minutes: int = MINUTES_PER_DAY
    history_days: float = 3.0
    workers: int = 2
    serving_version: str | None = None
    serving_folder: str | None = None
    pool_text: str | None = None


@dataclass(frozen=True)
class GateOutcome:
    report: dict
    findings: GateFindings
    prior: dict | None


def run_gate(conn_factory: Callable[[], Connection], data_dir: str, request: GateRequest,
             thresholds: GateThresholds, guard_settings: GuardSettings,
             progress: Callable[[float, str], None] | None = None) -> GateOutcome:
    """Measure everything the gate judges and judge it; `progress(share, phase)` as it goes."""
    started = time.perf_counter()
    tell = progress or (lambda share, phase: None)
    artifact = load_artifact(request.folder)
    serving = load_artifact(request.serving_folder) if request.serving_folder else None
    skipped = playable_mismatch(artifact)
    serving_note = playable_mismatch(serving) if serving is not None else "no version serves"
    jobs: list[ArmJob] = []
    if not skipped:
        for i, scenario in enumerate(request.scenarios):
            for seed in request.seeds:
                common = dict(scenario=scenario, seed=seed, minutes=request.minutes, data_dir=data_dir,
                              pool_text=request.pool_text)
                jobs.append(ArmJob(role="version", folder=request.folder, sample_features=i == 0, **common))
                if serving is not None and not serving_note:
                    jobs.append(ArmJob(role="serving", folder=request.serving_folder, **common))
                jobs.append(ArmJob(role="pool", folder=request.serving_folder if serving is not None
                                   and not serving_note else request.folder, **common))
    tell(0.02, "stress")
    results = run_arms(jobs, request.workers, lambda done: tell(0.02 + 0.83 * done / len(jobs), "stress"))
    scenarios, objective, histogram = stress_findings(results) if results else ((), None, {})
    tell(0.86, "calibration")
    cv = guard_settings.defaults["roi"].order_value_cv
    with conn_factory() as conn:
        held = held_out_history(conn, artifact, guard_settings, request.history_days)
    calibration, calibration_detail = calibration_findings(held, artifact, cv)
    tell(0.93, "explanation")
    stress_rows = next((np.asarray(r["features"]) for r in results if r.get("features")), np.zeros((0, 0)))
    rows = held.X if held is not None else stress_rows
    explanation = explanation_summary(artifact, serving, rows)
    explanation["source"] = "history" if held is not None else "stress"
    findings = GateFindings(scenarios, skipped, calibration, objective)
    outcome, reasons = verdict(findings, thresholds)
    prior = calibration_prior(calibration)
    report = {
        "model_version": request.model_version, "kind": artifact.kind, "variant": artifact.variant,
        "serving_version": request.serving_version, "serving_skipped": serving_note if serving is not None else "",
        "seeds": list(request.seeds), "minutes": request.minutes,
        "scenarios": [{"scenario": s.scenario, "seed": s.seed, "floor": s.floor,
                       "arms": {role: dataclasses.asdict(arm) for role, arm in
                                (("version", s.version), ("serving", s.serving), ("pool", s.pool)) if arm is not None},
                       "by_campaign": next(r["by_campaign"] for r in results if r["scenario"] == s.scenario
                                           and r["seed"] == s.seed and r["role"] == "version")}
                      for s in scenarios],
        "stress_skipped": skipped,
        "objective": None if objective is None else {**dataclasses.asdict(objective), "histogram": histogram},
        "calibration": {**dataclasses.asdict(calibration), **calibration_detail},
        "explanation": explanation,
        "verdict": outcome.value, "reasons": [r.as_json() for r in reasons],
        "thresholds": thresholds.as_json(), "prior": prior,
        "seconds": round(time.perf_counter() - started, 1),
    }
    tell(1.0, "done")
    return GateOutcome(report, findings, prior)


def write_report_files(report: dict, html: str, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "gate.json", "html": out / "gate.html"}
    paths["json"].write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    paths["html"].write_text(html, encoding="utf-8")
    return paths
