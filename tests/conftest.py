"""Shared fixtures: real SQLite files, a real PostgreSQL server, a manual clock.

PostgreSQL: BIDLENS_TEST_PG_URL if set, else a throwaway server started here with
initdb/pg_ctl. Missing PostgreSQL fails the run in CI (CI=true) and skips the
PostgreSQL tests, with the reason printed, elsewhere.
"""

from __future__ import annotations

import itertools
import os

import pytest
from sqlalchemy import create_engine, text

from app.service import Control
from control.clock import ManualClock
from control.config import Settings
from store.engine import open_store
from store.pgtemp import PostgresUnavailable, temporary_postgres

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PROMOTION_START = 1_786_982_400  # 2026-08-18 00:00 Asia/Shanghai


def missing(reason: str):
    """Fail in CI, skip (printing why) elsewhere."""
    if IN_CI:
        pytest.fail(f"required for CI: {reason}")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server():
    url = os.environ.get("BIDLENS_TEST_PG_URL")
    if url:
        yield url
        return
    try:
        with temporary_postgres() as url:
            yield url
    except PostgresUnavailable as exc:
        missing(f"PostgreSQL unavailable: {exc}")


_db_numbers = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server, tmp_path, monkeypatch):
    """A fresh, empty database on the test server, its audit key and anchors in the test's folder."""
    monkeypatch.setenv("BIDLENS_AUDIT_KEY_FILE", str(tmp_path / "pg-audit.key"))
    monkeypatch.setenv("BIDLENS_AUDIT_ANCHOR_FILE", str(tmp_path / "pg-audit-anchors.jsonl"))
    name = f"bidlens_t{os.getpid()}_{next(_db_numbers)}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'bidlens.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    """The same test on a real SQLite file and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bidlens.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def clock():
    return ManualClock(PROMOTION_START)


@pytest.fixture
def engine(store_url):
    engine = open_store(store_url)
    yield engine
    engine.dispose()


@pytest.fixture
def control(engine, clock):
    return Control(engine, clock, Settings())
