"""Wiring: the one place that builds the application's parts from the settings.

The panel, the CLI and the API get their `Control`, `GuardService`, bounds,
clock and rule pool from here, so they enforce the same limits on the same
store at the same time.
"""

from __future__ import annotations

from sqlalchemy import Engine

from app.current_policy import rule_pool_provider
from app.room import ControlRoom
from app.service import Control
from control.clock import Clock
from control.config import Settings, load_settings
from guards.alert_bridge import enqueue_guard_alert
from guards.alerts import enqueue_alert
from guards.config import GuardSettings, load_guard_settings
from guards.pool_store import load_active_pool
from guards.rule_pool import PoolBounds, hour_of
from guards.service import GuardService
from store import repo
from store.engine import open_store


def pool_bounds(settings: Settings) -> PoolBounds:
    """The rule pool's bid limits: the same absolute cap and multiple as an override's."""
    return PoolBounds(max_bid=settings.max_bid, max_multiplier=settings.max_bid_multiple)


def open_engine(settings: Settings | None = None) -> Engine:
    """The configured store, migrated to the newest schema."""
    return open_store((settings or load_settings()).database_url)


def store_clock(engine: Engine) -> Clock:
    """Now on the store's clock: the demo's promotion clock once a demo anchored one, else real time.

    Read on every call, so a process started before the demo follows the demo's time."""
    def now() -> int:
        with engine.connect() as conn:
            return repo.store_clock(conn)()
    return now


def fixed_store_clock(engine: Engine) -> Clock:
    """The store's clock as it is now (one read): for a process that starts after the demo anchored it."""
    with engine.connect() as conn:
        return repo.store_clock(conn)


def open_control(settings: Settings | None = None) -> Control:
    """The control core on the configured store, on the store's clock (the demo's promotion time if set);
    its alerts (kill switch, overrides) go to the outbox."""
    settings = settings or load_settings()
    engine = open_engine(settings)
    return Control(engine, fixed_store_clock(engine), settings, alert_sink=enqueue_alert)


def file_guard_settings(settings: Settings) -> GuardSettings:
    """The guard configuration file's settings (BIDLENS_GUARD_CONFIG over the shipped defaults)."""
    return load_guard_settings(settings.guard_config)


def guard_service(control: Control, guard_settings: GuardSettings | None = None) -> GuardService:
    """The guards' permission-checked operations on Control's store and clock; alerts enqueued as the
    worker does."""
    return GuardService(control.engine, control.clock, guard_settings or file_guard_settings(control.settings),
                        pool_bounds(control.settings), alert_sink=enqueue_guard_alert)


def control_room(control: Control) -> ControlRoom:
    """The panel's door to the core, on Control's store and clock."""
    settings = file_guard_settings(control.settings)
    return ControlRoom(control, guard_service(control, settings), settings)


def store_rule_pool():
    """The rule pool in force on the store, answering per slot at its bucket's hour (for the policy API)."""
    return rule_pool_provider(load_active_pool, hour_of)

