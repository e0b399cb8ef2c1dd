"""Create or evolve the store's schema with Alembic (never create_all at import)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> list[str]:
    """Bring the schema to the newest revision; returns the revisions now applied."""
    cfg = alembic_config(engine)
    command.upgrade(cfg, "heads")
    return current_revisions(engine)


def current_revisions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(MigrationContext.configure(conn).get_current_heads())


def pending(engine: Engine) -> bool:
    script = ScriptDirectory.from_config(alembic_config(engine))
    return set(current_revisions(engine)) != set(script.get_heads())
