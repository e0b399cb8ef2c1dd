"""Reading and writing the store. Functions take a SQLAlchemy Connection (the
caller owns the transaction) except the batch writers, which own theirs.

Row <-> domain conversion lives here, so the rest of the code speaks in
control.domain types.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, func, insert, select, text, update

from control import rows
from control.audit import GENESIS_HASH, AuditRecord, chain
from control.clock import AcceleratedClock, Clock, system_clock
from control.domain import (
    AudiencePackage,
    AuditEntry,
    Campaign,
    ConflictError,
    GuardAction,
    GuardMode,
    GuardState,
    NotFound,
    Override,
    OverrideField,
    OverrideScope,
    OverrideStatus,
    Role,
    User,
    most_restrictive,
)
from control.policy import KillSwitch, PolicyInputs
from control.validation import Refusal
from store import schema as s

# --- campaigns and audience packages ---------------------------------------------------------

def upsert_campaigns(conn: Connection, campaigns: Iterable[Campaign]) -> None:
    for c in campaigns:
        values = {f: getattr(c, f) for f in Campaign.__slots__}
        if conn.execute(update(s.campaigns).where(s.campaigns.c.campaign_id == c.campaign_id)
                        .values(values)).rowcount == 0:
            conn.execute(insert(s.campaigns).values(values))


def load_campaigns(conn: Connection) -> dict[str, Campaign]:
    return {r.campaign_id: Campaign(**r._mapping) for r in conn.execute(select(s.campaigns))}


def upsert_audience_packages(conn: Connection, packages: Iterable[AudiencePackage]) -> None:
    for p in packages:
        values = {f: getattr(p, f) for f in AudiencePackage.__slots__}
        if conn.execute(update(s.audience_packages).where(s.audience_packages.c.code == p.code)
                        .values(values)).rowcount == 0:
            conn.execute(insert(s.audience_packages).values(values))


def load_audience_packages(conn: Connection) -> dict[str, AudiencePackage]:
    return {r.code: AudiencePackage(**r._mapping) for r in conn.execute(select(s.audience_packages))}


# --- decisions, outcomes, explanations: batch writers -----------------------------------------

# The row's fields (control.rows) and what the store adds: where the row came from and when.
DECISION_WRITE_COLUMNS = rows.names(rows.DECISION_FIELDS) + ("source", "received_ts")
OUTCOME_WRITE_COLUMNS = rows.names(rows.OUTCOME_FIELDS) + ("source",)


@dataclass(frozen=True)
class ExplanationBatch:
    """SHAP values for a batch of decisions, row-aligned with the decision frame."""

    model_version: str
    base_value: np.ndarray       # (n,) model output units before any feature
    contributions: np.ndarray    # (n, features) float32
    feature_values: np.ndarray   # (n, features) float32: what the model saw


def _column_lists(frame: pd.DataFrame, columns: Sequence[str], defaults: dict) -> list[list]:
    out = []
    n = len(frame)
    for c in columns:
        if c in frame:
            col = frame[c]
            if c == "features":
                out.append([None if v is None else json.dumps(v) for v in col.tolist()])
            elif col.dtype == object or str(col.dtype).startswith("string"):
                out.append([None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v
                            for v in col.tolist()])
            else:
                values = col.tolist()
                if col.dtype.kind == "f" and col.isna().any():
                    values = [None if v != v else v for v in values]
                out.append(values)
        else:
            out.append([defaults.get(c)] * n)
    return out


def _decision_defaults(received_ts: int, source: str) -> dict:
    return {**rows.defaults(rows.DECISION_FIELDS), "source": source, "received_ts": received_ts}


def _reserve_ids(raw, dialect: str, table: str, id_col: str, n: int) -> np.ndarray:
    """Ids for n new rows, taken inside the caller's write transaction."""
    cur = raw.cursor()
    if dialect == "sqlite":
        cur.execute(f"SELECT COALESCE(MAX({id_col}), 0) FROM {table}")
        start = cur.fetchone()[0] + 1
        return np.arange(start, start + n, dtype=np.int64)
    cur.execute(f"SELECT nextval(pg_get_serial_sequence('{table}', '{id_col}')) "
                "FROM generate_series(1, %s)", (n,))
    return np.fromiter((r[0] for r in cur.fetchall()), dtype=np.int64, count=n)


def _bulk_insert(raw, dialect: str, table: str, columns: Sequence[str], rows: Iterable[tuple]) -> None:
    cur = raw.cursor()
    if dialect == "sqlite":
        marks = ",".join("?" * len(columns))
        cur.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", rows)
    else:
        with cur.copy(f"COPY {table} ({','.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _begin_write(raw, dialect: str) -> None:
    # SQLite: take the write lock up front, so reserving ids and inserting cannot interleave.
    raw.cursor().execute("BEGIN IMMEDIATE" if dialect == "sqlite" else "BEGIN")


def write_decisions(engine: Engine, frame: pd.DataFrame, *, received_ts: int, source: str = "sim",
                    explanation: ExplanationBatch | None = None) -> np.ndarray:
    """Insert validated decision rows (and their explanations) in one transaction; returns their ids.

    The fast path: DBAPI executemany on SQLite, COPY on PostgreSQL.
    """
    n = len(frame)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    for field in rows.DECISION_FIELDS:
        if field.default_from and field.name not in frame:
            frame = frame.assign(**{field.name: frame[field.default_from]})
    columns = _column_lists(frame, DECISION_WRITE_COLUMNS, _decision_defaults(received_ts, source))
    dialect = engine.dialect.name
    raw = engine.raw_connection()
    try:
        if dialect == "sqlite":
            raw.driver_connection.isolation_level = None  # we issue BEGIN ourselves
        _begin_write(raw, dialect)
        ids = _reserve_ids(raw, dialect, "decisions", "decision_id", n)
        audience_on = [bool(v) for v in columns[DECISION_WRITE_COLUMNS.index("audience_on")]]
        columns[DECISION_WRITE_COLUMNS.index("audience_on")] = audience_on
        _bulk_insert(raw, dialect, "decisions", ("decision_id",) + DECISION_WRITE_COLUMNS,
                     zip(ids.tolist(), *columns))
        if explanation is not None:
            _insert_explanations(raw, dialect, ids, explanation)
        raw.cursor().execute("COMMIT")
    except BaseException:
        raw.cursor().execute("ROLLBACK")
        raise
    finally:
        if dialect == "sqlite":
            raw.driver_connection.isolation_level = ""
        raw.close()
    return ids


def _insert_explanations(raw, dialect: str, ids: np.ndarray, batch: ExplanationBatch) -> None:
    contributions = np.ascontiguousarray(batch.contributions, dtype=np.float32)
    values = np.ascontiguousarray(batch.feature_values, dtype=np.float32)
    base = np.broadcast_to(np.asarray(batch.base_value, dtype=np.float64), (len(ids),))
    rows = ((int(i), batch.model_version, float(b), contributions[k].tobytes(), values[k].tobytes())
            for k, (i, b) in enumerate(zip(ids.tolist(), base.tolist())))
    _bulk_insert(raw, dialect, "explanations",
                 ("decision_id", "model_version", "base_value", "contributions", "feature_values"), rows)


def write_outcomes(engine: Engine, frame: pd.DataFrame, *, source: str = "sim") -> int:
    if len(frame) == 0:
        return 0
    columns = _column_lists(frame, OUTCOME_WRITE_COLUMNS, {"source": source})
    dialect = engine.dialect.name
    raw = engine.raw_connection()
    try:
        if dialect == "sqlite":
            raw.driver_connection.isolation_level = None
        _begin_write(raw, dialect)
        _bulk_insert(raw, dialect, "outcomes", OUTCOME_WRITE_COLUMNS, zip(*columns))
        raw.cursor().execute("COMMIT")
    except BaseException:
        raw.cursor().execute("ROLLBACK")
        raise
    finally:
        if dialect == "sqlite":
            raw.driver_connection.isolation_level = ""
        raw.close()
    return len(frame)


def write_quarantine(conn: Connection, kind: str, source: str, refusals: Sequence[Refusal],
                     received_ts: int) -> int:
    if not refusals:
        return 0
    conn.execute(insert(s.quarantine), [
        {"kind": kind, "source": source, "received_ts": received_ts, "row_index": r.row_index,
         "field": r.field, "value": None if r.value is None else str(r.value), "reason": r.reason,
         "row": json.loads(json.dumps(r.row, default=str))}
        for r in refusals])
    return len(refusals)


# --- overrides -------------------------------------------------------------------------------

def _override_from_row(r) -> Override:
    return Override(
        override_id=r.override_id,
        scope=OverrideScope(r.campaign_id, r.audience_package),
        field=OverrideField(r.field), value=r.value, reason=r.reason,
        proposed_by=r.proposed_by, proposed_ts=r.proposed_ts, expires_ts=r.expires_ts,
        status=OverrideStatus(r.status), reviewed_by=r.reviewed_by, reviewed_ts=r.reviewed_ts,
        review_comment=r.review_comment, version=r.version)


def _override_values(o: Override) -> dict:
    return {"campaign_id": o.scope.campaign_id, "audience_package": o.scope.audience_package,
            "field": o.field.value, "value": o.value, "reason": o.reason, "status": o.status.value,
            "proposed_by": o.proposed_by, "proposed_ts": o.proposed_ts, "expires_ts": o.expires_ts,
            "reviewed_by": o.reviewed_by, "reviewed_ts": o.reviewed_ts,
            "review_comment": o.review_comment}


def override_document(o: Override) -> dict:
    """The override as the audit trail records it."""
    return {"override_id": o.override_id, **_override_values(o), "version": o.version}


def next_override_id(conn: Connection) -> int:
    return (conn.execute(select(func.max(s.overrides.c.override_id))).scalar() or 0) + 1


def insert_override(conn: Connection, o: Override) -> Override:
    conn.execute(insert(s.overrides).values(override_id=o.override_id, version=1, **_override_values(o)))
    return get_override(conn, o.override_id)


def update_override(conn: Connection, o: Override, expected_version: int) -> Override:
    """Write `o` only if the stored row is still at `expected_version`; else ConflictError."""
    result = conn.execute(
        update(s.overrides)
        .where(s.overrides.c.override_id == o.override_id, s.overrides.c.version == expected_version)
        .values(version=expected_version + 1, **_override_values(o)))
    if result.rowcount != 1:
        current = get_override(conn, o.override_id)
        raise ConflictError(
            f"override {o.override_id} was changed by someone else (now version {current.version}, "
            f"status {current.status.value}); reload and try again")
    return get_override(conn, o.override_id)


def get_override(conn: Connection, override_id: int) -> Override:
    row = conn.execute(select(s.overrides).where(s.overrides.c.override_id == override_id)).first()
    if row is None:
        raise NotFound(f"override {override_id} does not exist")
    return _override_from_row(row)


def list_overrides(conn: Connection, statuses: Iterable[OverrideStatus] | None = None,
                   campaign_id: str | None = None) -> list[Override]:
    q = select(s.overrides).order_by(s.overrides.c.override_id)
    if statuses is not None:
        q = q.where(s.overrides.c.status.in_([st.value for st in statuses]))
    if campaign_id is not None:
        q = q.where(s.overrides.c.campaign_id == campaign_id)
    return [_override_from_row(r) for r in conn.execute(q)]


# --- users -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class UserRecord:
    user: User
    password_hash: str
    failed_logins: int
    locked_until_ts: int


def insert_user(conn: Connection, user: User, password_hash: str, now_ts: int) -> None:
    conn.execute(insert(s.users).values(username=user.username, display_name=user.display_name,
                                        role=user.role.value, password_hash=password_hash,
                                        active=user.active, created_ts=now_ts))


def get_user_record(conn: Connection, username: str) -> UserRecord | None:
    r = conn.execute(select(s.users).where(s.users.c.username == username)).first()
    if r is None:
        return None
    return UserRecord(User(r.username, r.display_name, Role(r.role), bool(r.active)),
                      r.password_hash, r.failed_logins, r.locked_until_ts)


def list_users(conn: Connection) -> list[User]:
    return [User(r.username, r.display_name, Role(r.role), bool(r.active))
            for r in conn.execute(select(s.users).order_by(s.users.c.username))]


def set_login_state(conn: Connection, username: str, failed_logins: int, locked_until_ts: int) -> None:
    conn.execute(update(s.users).where(s.users.c.username == username)
                 .values(failed_logins=failed_logins, locked_until_ts=locked_until_ts))


def set_password_hash(conn: Connection, username: str, password_hash: str) -> None:
    conn.execute(update(s.users).where(s.users.c.username == username)
                 .values(password_hash=password_hash, failed_logins=0, locked_until_ts=0))


# --- audit -----------------------------------------------------------------------------------

def append_audit(conn: Connection, record: AuditRecord) -> AuditEntry:
    """Chain and append one entry in the caller's transaction."""
    if conn.dialect.name == "postgresql":
        # One chain: writers queue here instead of forking it.
        conn.execute(text("SELECT pg_advisory_xact_lock(424242)"))
    last = conn.execute(select(s.audit_log.c.entry_id, s.audit_log.c.hash)
                        .order_by(s.audit_log.c.entry_id.desc()).limit(1)).first()
    prev_hash, entry_id = (last.hash, last.entry_id + 1) if last else (GENESIS_HASH, 1)
    entry = chain(prev_hash, record, entry_id)
    conn.execute(insert(s.audit_log).values(
        entry_id=entry.entry_id, ts=entry.ts, actor=entry.actor, action=entry.action,
        entity=entry.entity, entity_id=entry.entity_id, before=entry.before, after=entry.after,
        prev_hash=entry.prev_hash, hash=entry.hash))
    return entry


def load_audit(conn: Connection, *, since_ts: int | None = None, actor: str | None = None,
               entity: str | None = None, limit: int | None = None) -> list[AuditEntry]:
    q = select(s.audit_log).order_by(s.audit_log.c.entry_id)
    if since_ts is not None:
        q = q.where(s.audit_log.c.ts >= since_ts)
    if actor:
        q = q.where(s.audit_log.c.actor == actor)
    if entity:
        q = q.where(s.audit_log.c.entity == entity)
    if limit:
        q = q.limit(limit)
    return [AuditEntry(**r._mapping) for r in conn.execute(q)]


# --- flags: kill switch and other small documents ---------------------------------------------

KILL_SWITCH_KEY = "kill_switch"


def get_flag(conn: Connection, key: str, default: object = None) -> tuple[object, int]:
    """(value, version); version 0 when the flag was never set."""
    r = conn.execute(select(s.control_flags).where(s.control_flags.c.key == key)).first()
    return (r.value, r.version) if r else (default, 0)


def set_flag(conn: Connection, key: str, value: object, actor: str, now_ts: int,
             expected_version: int | None = None) -> int:
    _, version = get_flag(conn, key)
    if expected_version is not None and expected_version != version:
        raise ConflictError(f"{key} was changed by someone else (now version {version}); reload")
    if version == 0:
        conn.execute(insert(s.control_flags).values(key=key, value=value, version=1,
                                                     updated_ts=now_ts, updated_by=actor))
    else:
        result = conn.execute(update(s.control_flags)
                              .where(s.control_flags.c.key == key, s.control_flags.c.version == version)
                              .values(value=value, version=version + 1, updated_ts=now_ts,
                                      updated_by=actor))
        if result.rowcount != 1:
            raise ConflictError(f"{key} was changed by someone else; reload")
    return version + 1


def load_kill_switch(conn: Connection) -> KillSwitch:
    value, _ = get_flag(conn, KILL_SWITCH_KEY, {"global": False, "campaigns": []})
    return KillSwitch(bool(value.get("global")), frozenset(value.get("campaigns", [])))


# --- guard states as the effective policy sees them -------------------------------------------

def load_guard_states(conn: Connection) -> dict[str, GuardState]:
    def state(r) -> GuardState:
        doc = r.state or {}
        return GuardState(r.campaign_id, GuardMode(r.mode), float(doc.get("canary_share", 0.0)), r.event_id,
                          GuardAction(doc.get("action", GuardAction.POOL.value)), float(doc.get("bid_factor", 1.0)))

    return most_restrictive(state(r) for r in conn.execute(select(s.guard_states)))


def load_policy_inputs(conn: Connection) -> PolicyInputs:
    """Everything the effective policy reads from the store: approved overrides, guard states, kill switch.

    The one loader: the policy API, the live board, the simulator's live runner and Control read it here."""
    return PolicyInputs(tuple(list_overrides(conn, [OverrideStatus.APPROVED])), load_guard_states(conn),
                        load_kill_switch(conn))


# --- the demo's promotion clock, shared by every process of the demo ----------------------------

DEMO_CLOCK_KEY = "demo_clock"
PROMOTION_DAY_KEY = "promotion_day"  # {"start_ts", "end_ts"}: the day a demo (or an operator) started


def promotion_day_end(conn: Connection) -> int | None:
    """When the current promotion day ends (the guard worker stops then), or None: no end set."""
    day, _ = get_flag(conn, PROMOTION_DAY_KEY)
    end = (day or {}).get("end_ts") if isinstance(day, dict) else None
    return int(end) if end is not None else None


def store_clock(conn: Connection) -> Clock:
    """The promotion clock when a demo has anchored one in the store, else real time."""
    anchor, _ = get_flag(conn, DEMO_CLOCK_KEY)
    return AcceleratedClock.from_anchor(anchor) if anchor else system_clock


# Tables that hold one promotion day's traffic and what the guard and alerts made of it.
PROMOTION_DAY_TABLES = (s.explanations, s.decisions, s.outcomes, s.quarantine, s.guard_trips, s.guard_events,
                        s.guard_states, s.alert_attempts, s.alert_notifications, s.alerts, s.idempotency_keys)


def clear_promotion_day(conn: Connection) -> int:
    """Delete a promotion day's traffic, guard history and alerts; returns the rows deleted.

    Users, the audit trail, overrides (their history), models, campaigns, rule pool
    versions and tokens stay.
    """
    return sum(conn.execute(table.delete()).rowcount for table in PROMOTION_DAY_TABLES)
