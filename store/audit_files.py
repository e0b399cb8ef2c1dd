"""The audit trail's two files outside the database: the signing key and the anchor log.

Where they are, per store, from the settings in force when a process first touches the store's audit
trail (BIDLENS_AUDIT_KEY_FILE and BIDLENS_AUDIT_ANCHOR_FILE when set; else next to a SQLite file, or in
BIDLENS_DATA_DIR for PostgreSQL, the anchor log named after the database). Every process of one store
must see the same key: the panel, the API, the worker and the CLI sign what they append.

The key is made on the first signed append (32 random bytes, hex, mode 0600) and never printed; the
anchor log is JSON Lines, one {"entry_id", "hash", "anchored_ts"} per line, appended only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import weakref
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, select

from control.audit import Anchor
from control.config import Settings, load_settings
from store import schema as s


@dataclass(frozen=True)
class AuditFiles:
    key: Path
    anchors: Path


_FILES: weakref.WeakKeyDictionary[Engine, AuditFiles] = weakref.WeakKeyDictionary()
_KEYS: dict[Path, bytes] = {}


def locate(engine: Engine, settings: Settings) -> AuditFiles:
    """Where `engine`'s store keeps its audit key and anchors under `settings`."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        base = Path(database).resolve()
        key, anchors = base.with_suffix(".audit-key"), base.with_suffix(".audit-anchors.jsonl")
    else:
        folder = Path(settings.data_dir).resolve()
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{engine.url.host}-{engine.url.port}-{database}")
        key, anchors = folder / "audit.key", folder / f"audit-anchors-{name}.jsonl"
    return AuditFiles(Path(settings.audit_key_file) if settings.audit_key_file else key,
                      Path(settings.audit_anchor_file) if settings.audit_anchor_file else anchors)


def audit_files(engine: Engine) -> AuditFiles:
    """The store's audit files, located once per engine from the environment's settings."""
    files = _FILES.get(engine)
    if files is None:
        files = _FILES[engine] = locate(engine, load_settings())
    return files


def read_key(path: Path) -> bytes | None:
    """The key, or None when it cannot be read (verification then says so; it never makes one)."""
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def signing_key(conn: Connection) -> bytes:
    """The key this store's new entries are signed with; made (0600) when the store has none yet."""
    path = audit_files(conn.engine).key
    key = _KEYS.get(path)
    if key is None:
        key = read_key(path)
        if key is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:  # O_EXCL: of two processes making it at once, one writes, both read that one
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="ascii") as f:
                    f.write(secrets.token_hex(32) + "\n")
            except FileExistsError:
                pass
            key = read_key(path)
            if key is None:
                raise RuntimeError(f"the audit key at {path} cannot be read")
        _KEYS[path] = key
    return key


def read_anchors(path: Path) -> list[Anchor]:
    """Every anchor written so far (a torn last line, from a crash mid-write, is skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    anchors = []
    for line in lines:
        try:
            doc = json.loads(line)
            anchors.append(Anchor(int(doc["entry_id"]), str(doc["hash"]), int(doc["anchored_ts"])))
        except (ValueError, KeyError, TypeError):
            continue
    return anchors


def _last_anchor(path: Path) -> Anchor | None:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(tail):
        try:
            doc = json.loads(line)
            return Anchor(int(doc["entry_id"]), str(doc["hash"]), int(doc["anchored_ts"]))
        except (ValueError, KeyError, TypeError):
            continue
    return None


def anchor(engine: Engine, now_ts: int, head: tuple[int, str] | None = None) -> Anchor | None:
    """Append the chain's end (`head`: (entry_id, hash), default the newest entry stored) to the anchor
    log when it moved since the last anchor; returns the anchor in force."""
    if head is None:
        with engine.connect() as conn:
            head = conn.execute(select(s.audit_log.c.entry_id, s.audit_log.c.hash)
                                .order_by(s.audit_log.c.entry_id.desc()).limit(1)).first()
        if head is None:
            return None
    entry_id, entry_hash = head
    path = audit_files(engine).anchors
    last = _last_anchor(path)
    if last is not None and (last.entry_id, last.hash) == (entry_id, entry_hash):
        return last
    new = Anchor(int(entry_id), entry_hash, int(now_ts))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:  # one short line per write: appends do not interleave
        f.write(json.dumps({"entry_id": new.entry_id, "hash": new.hash, "anchored_ts": new.anchored_ts}) + "\n")
    return new
