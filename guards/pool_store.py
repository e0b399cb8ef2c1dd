"""Rule pool versions in the store (table rule_pool_versions), validated before they go live.

A submitted pool is parsed and validated against the campaigns and audience
packages in the store. Valid: it becomes the active version and the previous
one is superseded. Invalid: it is kept as `refused` with the problems (rule and
field named) and the last valid version stays in force. Both are audited.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select, update

from control.audit import AuditRecord
from control.domain import InvalidValue
from guards.rule_pool import PoolBounds, PoolProblem, RulePool, load_rule_pool, validate_rule_pool
from store import repo
from store import schema as s

ACTIVE, SUPERSEDED, REFUSED = "active", "superseded", "refused"


@dataclass(frozen=True, slots=True)
class PoolVersion:
    version: int
    status: str
    created_ts: int
    created_by: str
    error: str
    source: str


def check_pool(conn: Connection, text: str, bounds: PoolBounds) -> tuple[RulePool | None, list[PoolProblem]]:
    """Parse and validate `text` against the store's campaigns and audience packages."""
    try:
        pool = load_rule_pool(text)
    except InvalidValue as exc:
        return None, [PoolProblem("parse", exc.field, exc.value, exc.reason)]
    campaigns = sorted(repo.load_campaigns(conn))
    packages = sorted(repo.load_audience_packages(conn))
    return pool, validate_rule_pool(pool, campaigns, packages, bounds)


def submit_pool(conn: Connection, text: str, actor: str, now_ts: int, bounds: PoolBounds) -> PoolVersion:
    """Store `text` as a new version: active if valid, refused (with the problems) if not."""
    pool, problems = check_pool(conn, text, bounds)
    version = (conn.execute(select(func.max(s.rule_pool_versions.c.version))).scalar() or 0) + 1
    before = active_version(conn)
    error = "; ".join(str(p) for p in problems)
    status = REFUSED if problems else ACTIVE
    if status == ACTIVE:
        conn.execute(update(s.rule_pool_versions).where(s.rule_pool_versions.c.status == ACTIVE)
                     .values(status=SUPERSEDED))
    conn.execute(insert(s.rule_pool_versions).values(version=version, created_ts=now_ts, created_by=actor,
                                                     source=text, status=status, error=error))
    repo.append_audit(conn, AuditRecord(
        now_ts, actor, "rule_pool.activate" if status == ACTIVE else "rule_pool.refuse", "rule_pool",
        str(version), {"active_version": before.version if before else None},
        {"version": version, "status": status, "rules": len(pool.rules) if pool else None,
         "problems": [str(p) for p in problems][:50]}))
    return PoolVersion(version, status, now_ts, actor, error, text)


def _row(r) -> PoolVersion:
    return PoolVersion(r.version, r.status, r.created_ts, r.created_by, r.error, r.source)


def active_version(conn: Connection) -> PoolVersion | None:
    r = conn.execute(select(s.rule_pool_versions).where(s.rule_pool_versions.c.status == ACTIVE)
                     .order_by(s.rule_pool_versions.c.version.desc()).limit(1)).first()
    return _row(r) if r else None


def load_active_pool(conn: Connection) -> tuple[int, RulePool] | None:
    """The pool in force and its version, or None when no valid pool was ever submitted."""
    found = active_version(conn)
    return (found.version, load_rule_pool(found.source)) if found else None


def list_versions(conn: Connection) -> list[PoolVersion]:
    return [_row(r) for r in conn.execute(select(s.rule_pool_versions)
                                          .order_by(s.rule_pool_versions.c.version))]
