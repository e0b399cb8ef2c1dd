"""Append-only audit trail, chained by hash.

Each entry's hash covers its own fields and the previous entry's hash, so editing,
deleting or reordering any entry breaks the chain from that entry on;
`verify_chain` names the first entry that does not match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from control.domain import AuditEntry

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An audit entry before it is chained: who did what, with the state before and after."""

    ts: int
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict | None = None
    after: dict | None = None


def canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def entry_hash(prev_hash: str, record: AuditRecord) -> str:
    payload = canonical([prev_hash, record.ts, record.actor, record.action, record.entity,
                         record.entity_id, record.before, record.after])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def chain(prev_hash: str, record: AuditRecord, entry_id: int) -> AuditEntry:
    return AuditEntry(entry_id=entry_id, ts=record.ts, actor=record.actor, action=record.action,
                      entity=record.entity, entity_id=record.entity_id, before=record.before,
                      after=record.after, prev_hash=prev_hash, hash=entry_hash(prev_hash, record))


@dataclass(frozen=True, slots=True)
class ChainReport:
    entries: int
    first_broken_id: int | None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.first_broken_id is None


def verify_chain(entries: Iterable[AuditEntry]) -> ChainReport:
    """Walk the entries in id order; report the first whose links or hash do not match."""
    prev = GENESIS_HASH
    count = 0
    for entry in entries:
        count += 1
        if entry.prev_hash != prev:
            return ChainReport(count, entry.entry_id, "prev_hash does not match the entry before it")
        record = AuditRecord(entry.ts, entry.actor, entry.action, entry.entity, entry.entity_id,
                             entry.before, entry.after)
        if entry_hash(prev, record) != entry.hash:
            return ChainReport(count, entry.entry_id, "contents do not match the stored hash")
        prev = entry.hash
    return ChainReport(count, None)
