"""Shared helpers for the simulator tests: trained kits cached once per test process."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import replace

from sim.kit import Kit, prepare
from sim.scenario import Scenario, WorldParams, load_scenario

_DATA_DIR = tempfile.mkdtemp(prefix="bidlens-sim-tests-")


def small_scenario(campaigns: int = 6, **world) -> Scenario:
    """A small world (a few campaigns) for properties that do not need the full catalog."""
    return Scenario("small", world=replace(WorldParams(), campaigns=campaigns, **world))


@functools.cache
def kit_for(campaigns: int, catalog_seed: int = 818) -> Kit:
    scenario = Scenario("kit", world=replace(WorldParams(), campaigns=campaigns, catalog_seed=catalog_seed))
    return prepare(scenario, _DATA_DIR)


def full_kit() -> Kit:
    return kit_for(load_scenario("normal").world.campaigns)
