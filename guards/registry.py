"""The guards the worker runs. Adding one: a config dataclass + its TOML section
(guards/config.py, guard_defaults.toml), a signal function, and one line here."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from guards.config import GuardSettings, MachineConfig
from guards.machine import MachineState, Signal, step
from guards.observe import Observation
from guards.roi import roi_signal
from guards.siblings import competitor_signal, inventory_signal, low_stock_signal, pacing_signal


@dataclass(frozen=True)
class GuardKind:
    name: str
    signal: Callable[[Observation, object, MachineState], Signal]  # (observation, config, state)
    # Its signal dates its own evidence (a competitor's price, a stock reading), so the decision and
    # outcome feeds' staleness does not judge it (a paused campaign's outcomes stop; its prices do not).
    own_evidence_age: bool = False


GUARDS: dict[str, GuardKind] = {g.name: g for g in (
    GuardKind("roi", roi_signal),
    GuardKind("pacing", pacing_signal),
    GuardKind("inventory", inventory_signal),
    GuardKind("competitor", competitor_signal, own_evidence_age=True),
    GuardKind("low_stock", low_stock_signal, own_evidence_age=True),
)}


def feeds_stale_after_s(settings: GuardSettings, guards: Iterable[str]) -> int:
    """The longest staleness `guards` judge the decision and outcome feeds by (guards.observe.lookback_s)."""
    return max((settings.defaults[g].machine.stale_after_s for g in guards if not GUARDS[g].own_evidence_age),
               default=MachineConfig().stale_after_s)


def enabled(config) -> bool:
    return getattr(config, "enabled", True)


def evaluate(guard: str, state: MachineState, obs: Observation, config, now_ts: int):
    """Any registered guard's transition for one campaign."""
    return step(state, GUARDS[guard].signal(obs, config, state), config.machine, now_ts,
                guard=guard, campaign_id=obs.campaign_id)
