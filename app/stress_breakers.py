"""The stress report's per-breaker section: each breaker's interceptions and the loss it avoided.

Every breaker is judged alone, against the model alone, on the same seed:

1. A shadow pass plays the model arm with every sibling breaker (competitor price,
   safety stock, pacing, inventory) watching but not acting: it is the model arm
   itself (same seed, same policy), and it shows what each breaker would do there.
2. A breaker that never trips there, or trips only to alert (the safety stock's
   default), changes no traffic: its own arm *is* the model arm, so its trips are
   the shadow's and the loss it avoided is exactly 0.
3. A breaker whose trips take traffic (a pause, the pool, a bid cut) plays its own
   arm, only it on; loss avoided = that arm's profit - the model arm's profit.

The ROI guard's row reads the report's guarded arm (the ROI guard alone) the same
way: its trips, failed probations and loss avoided as sim.stress reported them.
The differences are exact counterfactuals once every random draw is keyed by
campaign and minute; until then an arm that acts also shifts the other campaigns'
draws, so `loss_avoided_tripped` (the tripped campaigns only) is given beside the total.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from app.stress_guard import SimGuardHook
from control.config import load_settings
from guards.config import GuardSettings, load_guard_settings
from guards.machine import GuardRestored, GuardTripped, ProbationFailed
from guards.registry import GUARDS, enabled
from sim.catalog import BUCKET_SECONDS, DAY_START_TS, MINUTES_PER_DAY
from sim.kit import Kit
from sim.scenario import Scenario
from sim.stress import ArmRun, run_arm

SIBLINGS = tuple(g for g in GUARDS if g != "roi")


class ShadowHook:
    """Evaluates breakers on what is served but answers no guard state: the model keeps every campaign."""

    def __init__(self, hook: SimGuardHook):
        self.hook = hook

    def guard_states(self, now_ts, last):
        self.hook.guard_states(now_ts, last)
        return {}


def _minute(ts: int) -> int:
    return (ts - DAY_START_TS) // BUCKET_SECONDS


def _events(hook: SimGuardHook, guard: str) -> list[dict]:
    kinds = {GuardTripped: "trip", GuardRestored: "restore", ProbationFailed: "announced_again"}
    return [{"campaign": e.campaign_id, "at_minute": _minute(e.ts), "kind": kinds[type(e)]}
            for e in hook.evaluator.events if e.guard == guard and type(e) in kinds]


def _profit(run: ArmRun, margin: np.ndarray) -> np.ndarray:
    return run.gmv.sum(axis=1) * margin - run.spend.sum(axis=1)


def _row(guard: str, action: str, events: list[dict], loss: float, loss_tripped: float | None, method: str) -> dict:
    trips = [e for e in events if e["kind"] == "trip"]
    return {"guard": guard, "action": action, "interceptions": len(trips),
            "restores": sum(e["kind"] == "restore" for e in events),
            "announced_again": sum(e["kind"] == "announced_again" for e in events),
            "campaigns": sorted({e["campaign"] for e in trips}),
            "loss_avoided": round(loss, 2),
            "loss_avoided_tripped": None if loss_tripped is None else round(loss_tripped, 2),
            "method": method, "events": events}


def roi_row(report: dict, hook: SimGuardHook | None = None) -> dict | None:
    """The ROI guard's row from the report's guarded arm (None without one)."""
    if report.get("loss_avoided") is None:
        return None
    trips = report["trips"]
    events = [{"campaign": t["campaign"], "at_minute": t["at_minute"],
               "kind": "trip" if t["kind"] == "trip" else "announced_again"} for t in trips]
    if hook is not None:
        events += [e for e in _events(hook, "roi") if e["kind"] == "restore"]
    return _row("roi", "pool", sorted(events, key=lambda e: (e["at_minute"], e["campaign"])),
                report["loss_avoided"], None, "guarded_arm")


def breakers_section(report: dict, scenario: Scenario, seed: int, kit: Kit, *,
                     breakers: Sequence[str] = SIBLINGS, settings: GuardSettings | None = None,
                     minutes: int = MINUTES_PER_DAY, roi_hook: SimGuardHook | None = None,
                     on_minute: Callable[[float], None] | None = None) -> list[dict]:
    """One row per breaker (the ROI guard's first, when the report has its guarded arm): interceptions,
    restores, announcements again, the campaigns, loss avoided and how it was found (module docstring)."""
    unknown = sorted(set(breakers) - set(SIBLINGS))
    if unknown:
        raise ValueError(f"unknown breaker(s) {unknown}: known {list(SIBLINGS)}")
    settings = settings or load_guard_settings(load_settings().guard_config)
    ids = [c.campaign_id for c in kit.catalog.campaigns]
    margin = np.array([c.gross_margin for c in kit.catalog.campaigns])
    chosen = [b for b in breakers if enabled(settings.defaults[b])]
    shadow = SimGuardHook(kit.catalog, settings, tuple(chosen))
    progress = _Progress(shadow, on_minute, 0, 1 + len(chosen), minutes)
    model = run_arm(scenario, seed, kit.bidders, kit.history, kit.pool, guard_hook=ShadowHook(progress),
                    minutes=minutes)
    model_profit = _profit(model, margin)  # the model arm's, to the yuan (the shadow pass is that arm)
    rows = [] if (roi := roi_row(report, roi_hook)) is None else [roi]
    for i, guard in enumerate(chosen, start=1):
        events = _events(shadow, guard)
        tripped = {e["campaign"] for e in events if e["kind"] == "trip"}
        actions = {settings.for_campaign(guard, c).machine.action for c in tripped}
        action = settings.defaults[guard].machine.action
        if not tripped or actions == {"alert"}:
            rows.append(_row(guard, action, events, 0.0, 0.0, "model_arm"))
            continue
        own = SimGuardHook(kit.catalog, settings, (guard,))
        run = run_arm(scenario, seed, kit.bidders, kit.history, kit.pool,
                      guard_hook=_Progress(own, on_minute, i, 1 + len(chosen), minutes), minutes=minutes)
        diff = _profit(run, margin) - model_profit
        mask = np.isin(ids, sorted(tripped))
        rows.append(_row(guard, action, _events(own, guard), float(diff.sum()), float(diff[mask].sum()),
                         "own_arm"))
    return rows


class _Progress:
    """Reports how far the section has played (arm i of n) to `on_minute`, passing the hook's answers on."""

    def __init__(self, hook, on_minute, arm: int, arms: int, minutes: int):
        self.hook, self.on_minute, self.arm, self.arms, self.minutes = hook, on_minute, arm, arms, minutes

    def guard_states(self, now_ts, last):
        if self.on_minute is not None:
            self.on_minute((self.arm + min(1.0, _minute(now_ts) / self.minutes)) / self.arms)
        return self.hook.guard_states(now_ts, last)

    @property
    def evaluator(self):
        return self.hook.evaluator
