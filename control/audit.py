"""Append-only audit trail: chained, signed, anchored outside the store.

Each entry's hash covers its own fields and the previous entry's hash, so editing, deleting or
reordering any entry breaks the chain from that entry on. Since issue 16 the hash is an HMAC-SHA256
under a key kept outside the database (store.audit_files), so whoever can write the database but not
read the key cannot recompute the chain after an edit. Entries written before that carry a plain
SHA-256 (`key_id` None) and may only come first; the first signed entry covers them through its
`prev_hash`.

Deleting the newest entries leaves a valid chain, so the latest (entry id, hash) is written outside
the store as well, an anchor (the guard worker appends one each tick, `audit verify` after each good
check): an anchored entry that is missing or different is truncation or rewriting.

`verify_chain` names the first entry that does not match, and why.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
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


@dataclass(frozen=True, slots=True)
class Anchor:
    """The chain's end as it was seen at `anchored_ts`, kept outside the store."""

    entry_id: int
    hash: str
    anchored_ts: int


def canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def key_id(key: bytes) -> str:
    """A name for a signing key that does not reveal it: which key signed an entry."""
    return hashlib.sha256(b"bidlens audit key id:" + key).hexdigest()[:16]


def entry_hash(prev_hash: str, record: AuditRecord, key: bytes | None) -> str:
    """HMAC-SHA256 of the entry under `key`; None: the plain SHA-256 of entries from before signing."""
    payload = canonical([prev_hash, record.ts, record.actor, record.action, record.entity,
                         record.entity_id, record.before, record.after]).encode("utf-8")
    if key is None:
        return hashlib.sha256(payload).hexdigest()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def chain(prev_hash: str, record: AuditRecord, entry_id: int, key: bytes) -> AuditEntry:
    return AuditEntry(entry_id=entry_id, ts=record.ts, actor=record.actor, action=record.action,
                      entity=record.entity, entity_id=record.entity_id, before=record.before,
                      after=record.after, prev_hash=prev_hash, hash=entry_hash(prev_hash, record, key),
                      key_id=key_id(key))


@dataclass(frozen=True, slots=True)
class ChainReport:
    entries: int
    first_broken_id: int | None
    problem: str = ""
    code: str = ""                  # the kind of problem (the panel words it in the reader's language)
    anchored_id: int | None = None  # the newest anchor checked: no entry up to it was cut or changed

    @property
    def ok(self) -> bool:
        return self.first_broken_id is None


def verify_chain(entries: Iterable[AuditEntry], key: bytes | None, anchors: Sequence[Anchor] = ()) -> ChainReport:
    """Walk the entries in id order; report the first whose id, link, signature or anchor does not match.

    `key`: the signing key (None when it cannot be read: then any signed entry is unverifiable);
    `anchors`: what was written outside the store."""
    expected_key_id = key_id(key) if key is not None else None
    anchored = {a.entry_id: a for a in anchors}
    prev, count, signed_seen = GENESIS_HASH, 0, False

    def broken(entry_id: int, code: str, problem: str) -> ChainReport:
        return ChainReport(count, entry_id, problem, code)

    for entry in entries:
        count += 1
        if entry.entry_id != count:
            return broken(count, "missing", f"entry {count} is missing (the next one is {entry.entry_id})")
        if entry.prev_hash != prev:
            return broken(entry.entry_id, "link", "prev_hash does not match the entry before it")
        record = AuditRecord(entry.ts, entry.actor, entry.action, entry.entity, entry.entity_id,
                             entry.before, entry.after)
        if entry.key_id is None:
            if signed_seen:
                return broken(entry.entry_id, "unsigned", "an unsigned entry after signed ones")
            expected = entry_hash(prev, record, None)
        else:
            signed_seen = True
            if expected_key_id is None:
                return broken(entry.entry_id, "no_key", "the audit key is missing: signatures cannot be checked")
            if entry.key_id != expected_key_id:
                return broken(entry.entry_id, "other_key", f"signed with another key ({entry.key_id})")
            expected = entry_hash(prev, record, key)
        if not hmac.compare_digest(expected, entry.hash):
            return broken(entry.entry_id, "contents", "contents do not match the stored hash")
        anchor = anchored.get(entry.entry_id)
        if anchor is not None and anchor.hash != entry.hash:
            return broken(entry.entry_id, "anchor", f"differs from the anchor written at {anchor.anchored_ts}")
        prev = entry.hash
    newest = max(anchors, key=lambda a: a.entry_id, default=None)
    if newest is not None and newest.entry_id > count:
        return ChainReport(count, count + 1, f"entries {count + 1} to {newest.entry_id} are gone: the anchor "
                           f"written at {newest.anchored_ts} saw entry {newest.entry_id}", "truncated")
    return ChainReport(count, None, anchored_id=newest.entry_id if newest else None)
