"""The guards the worker runs. Adding one: a config dataclass + its TOML section
(guards/config.py, guard_defaults.toml), a signal function, and one line here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from guards.machine import MachineState, Signal, step
from guards.observe import Observation
from guards.roi import roi_signal
from guards.siblings import inventory_signal, pacing_signal


@dataclass(frozen=True)
class GuardKind:
    name: str
    signal: Callable[[Observation, object], Signal]


GUARDS: dict[str, GuardKind] = {g.name: g for g in (
    GuardKind("roi", roi_signal),
    GuardKind("pacing", pacing_signal),
    GuardKind("inventory", inventory_signal),
)}


def enabled(config) -> bool:
    return getattr(config, "enabled", True)


def evaluate(guard: str, state: MachineState, obs: Observation, config, now_ts: int):
    """Any registered guard's transition for one campaign."""
    return step(state, GUARDS[guard].signal(obs, config), config.machine, now_ts,
                guard=guard, campaign_id=obs.campaign_id)
