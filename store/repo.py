"""Reading and writing the store. Functions take a SQLAlchemy Connection (the
caller owns the transaction) except the batch writers, which own theirs.

Row <-> domain conversion lives here, so the rest of the code speaks in
control.domain types.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from control import rows
from control.audit import GENESIS_HASH, AuditRecord, chain
from control.clock import AcceleratedClock, Clock, day_start, system_clock
from control.domain import (
    AudiencePackage,
    AuditEntry,
    BidFormula,
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
from control.permissions import verified
from control.policy import KillSwitch, PolicyInputs
from control.users import LoginState, SourceState, username_key
from control.validation import Refusal
from store import schema as s
from store.audit_files import signing_key

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
    formula: BidFormula | None = None  # the bid formula the decisions were served with


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


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction for batch writes (decisions, explanations, outcomes, quarantine and whatever
    completes them), committed together or not at all. SQLite takes its write lock at once, so ids
    reserved from MAX() cannot interleave with another writer's."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


# --- the live board's rollups, added to by the writers in their own transaction ------------------

def decision_sums(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each decision row's part of the board's decision sums (schema.ROLLUP_DECISION_SUMS)."""
    pool = frame["pool_pred_roi"].to_numpy(dtype=np.float64) if "pool_pred_roi" in frame else np.full(len(frame), np.nan)
    decided = frame["decided_by"].to_numpy(dtype=object) if "decided_by" in frame else np.full(len(frame), "model")
    return {"n": np.ones(len(frame)), "n_on": frame["audience_on"].to_numpy(dtype=np.float64),
            "pred_roi": frame["pred_roi"].to_numpy(dtype=np.float64), "n_pool": (pool == pool).astype(np.float64),
            "pool_pred_roi": np.nan_to_num(pool), "bid": frame["bid"].to_numpy(dtype=np.float64),
            "n_override": (decided == "override").astype(np.float64),
            "n_rule_pool": (decided == "rule_pool").astype(np.float64)}


def _upsert_sums(raw, dialect: str, table: str, keys: Sequence[str], names: Sequence[str], rows: list[tuple]) -> None:
    """Add `rows` (keys then sums, sorted by key: two writers lock the rows they share in the same order)."""
    columns = [*keys, *names]
    mark = "?" if dialect == "sqlite" else "%s"
    update_sql = ", ".join(f"{n} = {table}.{n} + excluded.{n}" for n in names)
    raw.cursor().executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))}) "
                             f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {update_sql}", rows)


def _sums_by(codes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct codes, sorted, and each one's column sums of `values` (n x sums)."""
    unique, inverse = np.unique(codes, return_inverse=True)
    return unique, np.column_stack([np.bincount(inverse, weights=col, minlength=len(unique)) for col in values.T])


def _add_to_rollups(raw, dialect: str, frame: pd.DataFrame, sums: dict[str, np.ndarray]) -> None:
    """Add rows' sums to the board's rollups: per campaign and five minutes, per campaign and promotion
    day, per bucket over every campaign (store.schema.board_rollups / board_series). Plain numpy: the
    simulator writes every minute, and pandas' grouping cost more than the rows."""
    names = list(sums)
    values = np.column_stack([np.asarray(sums[n], dtype=np.float64) for n in names])
    bucket = frame["bucket_ts"].to_numpy(dtype=np.int64)
    codes, campaigns = pd.factorize(frame["campaign_id"].to_numpy(dtype=object), sort=True)
    k = len(campaigns)
    for period_s, start in ((s.ROLLUP_PERIOD_S, bucket - bucket % s.ROLLUP_PERIOD_S),
                            (s.ROLLUP_DAY, day_start(bucket))):
        keys, totals = _sums_by(start * k + codes, values)
        rows = [(period_s, int(key // k), campaigns[key % k], *row)
                for key, row in zip(keys.tolist(), totals.tolist(), strict=True)]
        _upsert_sums(raw, dialect, "board_rollups", ("period_s", "period_ts", "campaign_id"), names, rows)
    keys, totals = _sums_by(bucket, values)
    _upsert_sums(raw, dialect, "board_series", ("bucket_ts",), names,
                 [(key, *row) for key, row in zip(keys.tolist(), totals.tolist(), strict=True)])


def insert_decisions(conn: Connection, frame: pd.DataFrame, *, received_ts: int, source: str = "sim",
                     explanation: ExplanationBatch | None = None) -> np.ndarray:
    """Insert validated decision rows (and their explanations) in the caller's write transaction
    (write_transaction); returns their ids. The fast path: DBAPI executemany on SQLite, COPY on PostgreSQL."""
    n = len(frame)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    for field in rows.DECISION_FIELDS:
        if field.default_from and field.name not in frame:
            frame = frame.assign(**{field.name: frame[field.default_from]})
    columns = _column_lists(frame, DECISION_WRITE_COLUMNS, _decision_defaults(received_ts, source))
    raw, dialect = conn.connection.dbapi_connection, conn.dialect.name
    ids = _reserve_ids(raw, dialect, "decisions", "decision_id", n)
    audience_on = [bool(v) for v in columns[DECISION_WRITE_COLUMNS.index("audience_on")]]
    columns[DECISION_WRITE_COLUMNS.index("audience_on")] = audience_on
    _bulk_insert(raw, dialect, "decisions", ("decision_id",) + DECISION_WRITE_COLUMNS, zip(ids.tolist(), *columns))
    _add_to_rollups(raw, dialect, frame, decision_sums(frame))
    if explanation is not None:
        _insert_explanations(raw, dialect, ids, explanation)
    return ids


def write_decisions(engine: Engine, frame: pd.DataFrame, *, received_ts: int, source: str = "sim",
                    explanation: ExplanationBatch | None = None) -> np.ndarray:
    """insert_decisions in a transaction of its own; returns the ids."""
    if len(frame) == 0:
        return np.zeros(0, dtype=np.int64)
    with write_transaction(engine) as conn:
        return insert_decisions(conn, frame, received_ts=received_ts, source=source, explanation=explanation)


EXPLANATION_WRITE_COLUMNS = ("decision_id", "model_version", "base_value", "contributions", "feature_values",
                             "target_roi", "min_bid", "max_bid")


def _insert_explanations(raw, dialect: str, ids: np.ndarray, batch: ExplanationBatch) -> None:
    contributions = np.ascontiguousarray(batch.contributions, dtype=np.float32)
    values = np.ascontiguousarray(batch.feature_values, dtype=np.float32)
    base = np.broadcast_to(np.asarray(batch.base_value, dtype=np.float64), (len(ids),))
    formula = (None, None, None) if batch.formula is None else (
        batch.formula.target_roi, batch.formula.min_bid, batch.formula.max_bid)
    rows = ((int(i), batch.model_version, float(b), contributions[k].tobytes(), values[k].tobytes(), *formula)
            for k, (i, b) in enumerate(zip(ids.tolist(), base.tolist())))
    _bulk_insert(raw, dialect, "explanations", EXPLANATION_WRITE_COLUMNS, rows)


def insert_outcomes(conn: Connection, frame: pd.DataFrame, *, source: str = "sim") -> int:
    """Insert validated outcome rows in the caller's write transaction."""
    if len(frame) == 0:
        return 0
    columns = _column_lists(frame, OUTCOME_WRITE_COLUMNS, {"source": source})
    raw, dialect = conn.connection.dbapi_connection, conn.dialect.name
    _bulk_insert(raw, dialect, "outcomes", OUTCOME_WRITE_COLUMNS, zip(*columns))
    _add_to_rollups(raw, dialect, frame, {c: frame[c].to_numpy(dtype=np.float64) for c in s.ROLLUP_OUTCOME_SUMS})
    return len(frame)


def write_outcomes(engine: Engine, frame: pd.DataFrame, *, source: str = "sim") -> int:
    """insert_outcomes in a transaction of its own."""
    if len(frame) == 0:
        return 0
    with write_transaction(engine) as conn:
        return insert_outcomes(conn, frame, source=source)


def json_document(value: object) -> object:
    """`value` as every store's JSON column takes it: numbers that are not finite (PostgreSQL's JSON has
    none, at any depth) and text that is not valid UTF-8 or holds NUL become readable text."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, (bool, np.bool_)) or value is None:
        return None if value is None else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        if "\x00" not in value and _utf8(value):
            return value
        return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if isinstance(value, dict):
        return {str(json_document(k)): json_document(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_document(v) for v in value]
    return str(value)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
def insert_feed(conn: Connection, table, fields: tuple[rows.Field, ...], frame: pd.DataFrame, *,
                received_ts: int, source: str) -> int:
    """Insert validated feed rows (competitor prices, stock: `fields` of control.rows) into `table`, in the
    caller's write transaction."""
    if len(frame) == 0:
        return 0
    records = frame[list(rows.names(fields))].to_dict("records")
    conn.execute(insert(table), [{**r, "source": source, "received_ts": received_ts} for r in records])
    return len(records)


def write_quarantine(conn: Connection, kind: str, source: str, refusals: Sequence[Refusal],
                     received_ts: int) -> int:
    if not refusals:
        return 0
    conn.execute(insert(s.quarantine), [
        {"kind": kind, "source": source, "received_ts": received_ts, "row_index": r.row_index,
         "field": r.field, "value": None if r.value is None else str(json_document(r.value)), "reason": r.reason,
         "row": json_document(r.row)}
        for r in refusals])
    return len(refusals)


# --- files: how far each one got --------------------------------------------------------------

def start_file(conn: Connection, fingerprint: str, kind: str, source: str, now_ts: int) -> tuple[int, bool]:
    """(rows an earlier run of this file already handled, whether it finished); a first run starts at 0."""
    f = s.ingest_files
    insert_or_nothing(conn, f, fingerprint=fingerprint, kind=kind, source=source, rows_done=0,
                      started_ts=now_ts, updated_ts=now_ts)
    r = conn.execute(select(f.c.rows_done, f.c.finished_ts).where(f.c.fingerprint == fingerprint,
                                                                  f.c.kind == kind)).one()
    return int(r.rows_done), r.finished_ts is not None


def advance_file(conn: Connection, fingerprint: str, kind: str, start: int, end: int, now_ts: int) -> None:
    """In a chunk's transaction: the file is done through row `end`, if it was through `start`; else
    ConflictError (another run of the same file is at work) and the chunk rolls back."""
    f = s.ingest_files
    if conn.execute(update(f).where(f.c.fingerprint == fingerprint, f.c.kind == kind, f.c.rows_done == start)
                    .values(rows_done=end, updated_ts=now_ts)).rowcount != 1:
        raise ConflictError(f"another run is ingesting the same file ({fingerprint[:12]}...); nothing stored "
                            "from this chunk")


def finish_file(conn: Connection, fingerprint: str, kind: str, rows_done: int, now_ts: int) -> None:
    f = s.ingest_files
    conn.execute(update(f).where(f.c.fingerprint == fingerprint, f.c.kind == kind, f.c.rows_done == rows_done)
                 .values(finished_ts=now_ts, updated_ts=now_ts))


# --- overrides -------------------------------------------------------------------------------

def _override_from_row(r) -> Override:
    return Override(
        override_id=r.override_id,
        scope=OverrideScope(r.campaign_id, r.audience_package),
        field=OverrideField(r.field), value=r.value, reason=r.reason,
        proposed_by=r.proposed_by, proposed_ts=r.proposed_ts, expires_ts=r.expires_ts,
        status=OverrideStatus(r.status), reviewed_by=r.reviewed_by, reviewed_ts=r.reviewed_ts,
        review_comment=r.review_comment, version=r.version, authors=tuple(r.authors or ()))


def _override_values(o: Override) -> dict:
    return {"campaign_id": o.scope.campaign_id, "audience_package": o.scope.audience_package,
            "field": o.field.value, "value": o.value, "reason": o.reason, "status": o.status.value,
            "proposed_by": o.proposed_by, "proposed_ts": o.proposed_ts, "expires_ts": o.expires_ts,
            "reviewed_by": o.reviewed_by, "reviewed_ts": o.reviewed_ts,
            "review_comment": o.review_comment, "authors": list(o.authors)}


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
                   campaign_id: str | None = None, proposed_by: str | None = None) -> list[Override]:
    q = select(s.overrides).order_by(s.overrides.c.override_id)
    if statuses is not None:
        q = q.where(s.overrides.c.status.in_([st.value for st in statuses]))
    if campaign_id is not None:
        q = q.where(s.overrides.c.campaign_id == campaign_id)
    if proposed_by is not None:
        q = q.where(s.overrides.c.proposed_by == proposed_by)
    return [_override_from_row(r) for r in conn.execute(q)]


# --- users -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class UserRecord:
    user: User
    password_hash: str
    failed_logins: int
    locked_until_ts: int

    @property
    def login_state(self) -> LoginState:
        return LoginState(self.failed_logins, self.locked_until_ts)


def insert_user(conn: Connection, user: User, password_hash: str, now_ts: int) -> None:
    conn.execute(insert(s.users).values(username=user.username, username_key=username_key(user.username),
                                        display_name=user.display_name, role=user.role.value,
                                        password_hash=password_hash, active=user.active, created_ts=now_ts))


def _user(r) -> User:
    return User(r.username, r.display_name, Role(r.role), bool(r.active), frozenset(r.grants or ()))


def _user_record(r) -> UserRecord:
    return UserRecord(_user(r), r.password_hash, r.failed_logins, r.locked_until_ts)


def get_user_record(conn: Connection, username: str) -> UserRecord | None:
    """The user of exactly this name (as stored), or None."""
    r = conn.execute(select(s.users).where(s.users.c.username == username)).first()
    return None if r is None else _user_record(r)


def find_user(conn: Connection, name: str) -> UserRecord | None:
    """The user this name means, whatever its case ("Mia" finds "mia"), or None."""
    r = conn.execute(select(s.users).where(s.users.c.username_key == username_key(name))).first()
    return None if r is None else _user_record(r)


def lock_user_for_login(conn: Connection, name: str) -> UserRecord | None:
    """find_user, with the row locked to the end of the caller's transaction (a write that changes
    nothing takes the row lock on PostgreSQL and the write lock on SQLite), so that parallel logins
    count their tries one after another."""
    s_users = s.users
    conn.execute(update(s_users).where(s_users.c.username_key == username_key(name))
                 .values(failed_logins=s_users.c.failed_logins))
    return find_user(conn, name)


def verified_actor(conn: Connection, actor: User) -> User:
    """The actor reloaded in the caller's transaction, their row locked to its end (a deactivation or a
    role change waits for the action, or the action sees it); ActorRefused if they are unknown,
    deactivated or no longer in the role they claim (control.permissions.verified)."""
    u = s.users
    conn.execute(update(u).where(u.c.username == actor.username).values(active=u.c.active))
    record = get_user_record(conn, actor.username)
    return verified(actor, record.user if record else None)


def list_users(conn: Connection) -> list[User]:
    return [_user(r) for r in conn.execute(select(s.users).order_by(s.users.c.username))]


def set_grants(conn: Connection, username: str, grants: frozenset[str]) -> None:
    conn.execute(update(s.users).where(s.users.c.username == username).values(grants=sorted(grants)))


def count_active_admins(conn: Connection) -> int:
    u = s.users
    return conn.execute(select(func.count()).select_from(u)
                        .where(u.c.role == Role.ADMIN.value, u.c.active.is_(True))).scalar()


def update_user(conn: Connection, user: User) -> None:
    """Write a user's display name, role and active flag."""
    conn.execute(update(s.users).where(s.users.c.username == user.username)
                 .values(display_name=user.display_name, role=user.role.value, active=user.active))


def set_login_state(conn: Connection, username: str, state: LoginState) -> None:
    conn.execute(update(s.users).where(s.users.c.username == username)
                 .values(failed_logins=state.failed_logins, locked_until_ts=state.locked_until_ts))


def set_password_hash(conn: Connection, username: str, password_hash: str) -> None:
    conn.execute(update(s.users).where(s.users.c.username == username)
                 .values(password_hash=password_hash, failed_logins=0, locked_until_ts=0))


def lock_login_source(conn: Connection, source: str, now_ts: int) -> SourceState:
    """The source's failed logins in its window, its row locked to the end of the caller's transaction."""
    ls = s.login_sources
    if conn.execute(update(ls).where(ls.c.source == source).values(failures=ls.c.failures)).rowcount == 0:
        insert_or_nothing(conn, ls, source=source, window_start_ts=now_ts, failures=0)  # its first try
        conn.execute(update(ls).where(ls.c.source == source).values(failures=ls.c.failures))
    r = conn.execute(select(ls).where(ls.c.source == source)).one()
    return SourceState(r.window_start_ts, r.failures)


def insert_or_nothing(conn: Connection, table, **values) -> None:
    """Insert the row unless its key exists (also when a parallel transaction inserts it first)."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(dialect_insert(table).values(**values).on_conflict_do_nothing())


def set_login_source(conn: Connection, source: str, state: SourceState) -> None:
    conn.execute(update(s.login_sources).where(s.login_sources.c.source == source)
                 .values(window_start_ts=state.window_start_ts, failures=state.failures))


# --- audit -----------------------------------------------------------------------------------

def append_audit(conn: Connection, record: AuditRecord) -> AuditEntry:
    """Chain, sign (store.audit_files.signing_key) and append one entry in the caller's transaction."""
    # One chain: writers queue here instead of forking it.
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(424242)"))
    else:  # SQLite starts a transaction at the first write, not at a read: write (nothing) first
        a = s.audit_log
        conn.execute(update(a).where(a.c.entry_id == -1).values(entry_id=a.c.entry_id))
    last = conn.execute(select(s.audit_log.c.entry_id, s.audit_log.c.hash)
                        .order_by(s.audit_log.c.entry_id.desc()).limit(1)).first()
    prev_hash, entry_id = (last.hash, last.entry_id + 1) if last else (GENESIS_HASH, 1)
    entry = chain(prev_hash, record, entry_id, signing_key(conn))
    conn.execute(insert(s.audit_log).values(
        entry_id=entry.entry_id, ts=entry.ts, actor=entry.actor, action=entry.action,
        entity=entry.entity, entity_id=entry.entity_id, before=entry.before, after=entry.after,
        prev_hash=entry.prev_hash, hash=entry.hash, key_id=entry.key_id))
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
PROMOTION_DAY_TABLES = (s.explanations, s.decisions, s.outcomes, s.board_rollups, s.board_series, s.competitor_prices,
                        s.stock_levels, s.quarantine, s.guard_trips, s.guard_events, s.guard_states, s.alert_attempts,
                        s.alert_notifications, s.alerts, s.idempotency_keys, s.ingest_files)


def clear_promotion_day(conn: Connection) -> int:
    """Delete a promotion day's traffic, guard history and alerts; returns the rows deleted.

    Users, the audit trail, overrides (their history), models, campaigns, rule pool
    versions and tokens stay.
    """
    return sum(conn.execute(table.delete()).rowcount for table in PROMOTION_DAY_TABLES)
