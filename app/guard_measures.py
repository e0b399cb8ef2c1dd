"""How well the ROI guard does, as measured: the newest stress reports (`bidlens stress`, the stress
page) and guard benchmarks (`bidlens guard bench`) under DATA_DIR/reports, for the guard page.

The figures are the reports' own (docs/SIMULATOR.md, docs/GUARDS.md); nothing is recomputed here.
A report that cannot be read is skipped with its reason, never shown half.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StressMeasure:
    """One stress run's guard against the oracle (a perfect guard on the same day)."""

    scenario: str
    seed: int
    written_ts: int                     # when the report was written (its file's time)
    loss_avoided: float | None          # the guarded arm's profit minus the model's, yuan
    oracle_loss_avoided: float | None   # the oracle's
    oracle_capture: float | None        # None: the oracle found no material loss (a healthy day)
    false_trips: int
    probation_failures: int


@dataclass(frozen=True)
class BenchMeasure:
    """One guard benchmark over days drawn from the documented families."""

    seed: int
    days: int
    written_ts: int
    oracle_capture: float | None
    delay_median_min: float | None      # degradations of 30% or more, from the first sustained crossing
    delay_p90_min: float | None
    ideal_median_min: float | None      # the ideal detector told the change (same false-alarm rate)
    ideal_p90_min: float | None
    ideal_below_floor_p90_min: float | None  # told the change, but it must prove ROI below the floor
    false_trips_per_100: float | None   # per 100 healthy campaign-days
    predicted_false_trips_per_10000: float | None  # at the threshold, from the tail of healthy days' peak evidence
    restores_below: int                 # restores with the model's true ROI below floor + hysteresis
    failed_probations_per_campaign_day: float | None


@dataclass(frozen=True)
class GuardMeasures:
    stress: list[StressMeasure]         # newest first
    bench: list[BenchMeasure]           # newest first


def _read(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("guard measures: %s skipped (%s)", path, exc)
        return None
    return doc if isinstance(doc, dict) else None


def _stress(path: Path, doc: dict) -> StressMeasure | None:
    if "guarded" not in (doc.get("arms") or {}):
        return None  # a run without the guard says nothing about it
    return StressMeasure(str(doc.get("scenario", "")), int(doc.get("seed", 0)), int(path.stat().st_mtime),
                         doc.get("loss_avoided"), doc.get("oracle_loss_avoided"), doc.get("oracle_capture"),
                         int(doc.get("false_trips", 0)), int(doc.get("probation_failures", 0)))


def _bench(path: Path, doc: dict) -> BenchMeasure:
    delay = doc.get("detection_delay_min") or {}
    return BenchMeasure(int(doc.get("seed", 0)), int(doc.get("days", 0)), int(path.stat().st_mtime),
                        doc.get("oracle_capture"), delay.get("median"), delay.get("p90"),
                        (delay.get("ideal") or {}).get("median"), (delay.get("ideal") or {}).get("p90"),
                        (delay.get("ideal_below_floor") or {}).get("p90"),
                        doc.get("false_trips_per_100_healthy_campaign_days"), _per_10000(doc),
                        int(doc.get("restores_below_floor_plus_hysteresis", 0)),
                        doc.get("failed_probations_per_campaign_day"))


def _per_10000(doc: dict) -> float | None:
    rate = (doc.get("cusum_null_tail") or {}).get("false_trips_per_campaign_day")
    return None if rate is None else 10_000 * rate


def guard_measures(data_dir: str | Path, limit: int = 10) -> GuardMeasures:
    """The newest `limit` stress reports and benchmarks under `data_dir`/reports."""
    reports = Path(data_dir) / "reports"
    newest = lambda paths: sorted(paths, key=lambda p: p.stat().st_mtime, reverse=True)  # noqa: E731
    stress = []
    for path in newest(reports.glob("stress-*/report.json")):
        doc = _read(path)
        measure = _stress(path, doc) if doc is not None else None
        if measure is not None:
            stress.append(measure)
        if len(stress) == limit:
            break
    bench = []
    for path in newest(reports.glob("guard-bench-*.json"))[:limit]:
        doc = _read(path)
        if doc is not None:
            bench.append(_bench(path, doc))
    return GuardMeasures(stress, bench)
