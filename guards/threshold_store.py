"""Threshold edits in the store: one JSON document in control_flags, so the guard worker,
every panel and the CLI see the same thresholds. Its flag version is the optimistic
concurrency token: a change made on top of a version someone else has moved on from
is a ConflictError."""

from __future__ import annotations

from sqlalchemy import Connection

from control.domain import InvalidValue
from guards.config import GuardSettings
from guards.thresholds import ThresholdEdits, effective_settings
from store import repo

THRESHOLDS_KEY = "guard_thresholds"


def load_edits(conn: Connection) -> tuple[ThresholdEdits, int]:
    """(edits, version); version 0 when nobody has edited a threshold yet."""
    doc, version = repo.get_flag(conn, THRESHOLDS_KEY)
    return ThresholdEdits.from_json(doc), version


def save_edits(conn: Connection, edits: ThresholdEdits, actor: str, now_ts: int, expected_version: int) -> int:
    """Write the edits if the document is still at expected_version (else ConflictError); the new version."""
    return repo.set_flag(conn, THRESHOLDS_KEY, edits.to_json(), actor, now_ts, expected_version)


class ThresholdReader:
    """The effective settings for a process that keeps running: one flag read per call,
    recomputed only when the version moved.

    If the stored edits no longer fit the file (the file changed under them), the
    last good settings stay in force and `error` says why.
    """

    def __init__(self, file: GuardSettings):
        self.file = file
        self.settings = file
        self.version = 0
        self.error: str | None = None

    def read(self, conn: Connection) -> GuardSettings:
        edits, version = load_edits(conn)
        if version != self.version:
            try:
                self.settings, self.error = effective_settings(self.file, edits), None
            except InvalidValue as exc:
                self.error = f"stored threshold edits do not fit the guard config file: {exc}"
            self.version = version
        return self.settings
