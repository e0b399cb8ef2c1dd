"""Everything a simulation needs besides the scenario: trained bidders, history, rule pool.

Models live under <data_dir>/models/<version>/ and are trained on first use
(about 10 s on 2 cores), then loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from guards.rule_pool import RulePool, load_rule_pool
from sim.bidder import Bidder
from sim.catalog import Catalog, build_catalog
from sim.features import History
from sim.scenario import Scenario
from sim.train import RULE_POOL_FILE, ensure_models


@dataclass(frozen=True)
class Kit:
    catalog: Catalog
    bidders: dict[str, Bidder]
    history: History
    pool: RulePool


def models_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "models"


def load_default_pool() -> RulePool:
    return load_rule_pool(RULE_POOL_FILE.read_text(encoding="utf-8"))


def prepare(scenario: Scenario, data_dir: str | Path, pool: RulePool | None = None) -> Kit:
    catalog = build_catalog(scenario.world.campaigns, scenario.world.catalog_seed)
    bidders = ensure_models(catalog, models_dir(data_dir))
    return Kit(catalog, bidders, bidders["roi"].history, pool or load_default_pool())
