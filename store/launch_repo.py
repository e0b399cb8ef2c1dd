"""Model versions, gate reports and launches in the store (control.launch owns the rules).

Rows are read into control.launch values and written back with an optimistic version check, as
overrides are (store.repo). The gate's switch and its thresholds are flags (control_flags).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select, update

from control.domain import ConflictError, NotFound
from control.gate import Verdict
from control.launch import SERVABLE, Launch, LaunchStatus, ModelVersion, VersionStatus
from store import schema as s

LAUNCH_GATE_KEY = "launch_gate"            # {"enabled": bool}; never set: on
GATE_THRESHOLDS_KEY = "gate_thresholds"    # control.gate.GateThresholds as JSON


@dataclass(frozen=True)
class ModelRow:
    """A registered version as listed: its lifecycle and what its artefact says of it."""

    model: ModelVersion
    path: str
    created_ts: int
    status_ts: int | None
    meta: dict

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "lightgbm")

    @property
    def variant(self) -> str:
        return self.meta.get("variant", "roi")


def _model(r) -> ModelVersion:
    return ModelVersion(r.model_version, VersionStatus(r.status), r.gate_id,
                        Verdict(r.gate_verdict) if r.gate_verdict else None, r.version)


def _models_query():
    m, g = s.models, s.model_gates
    return (select(m, g.c.verdict.label("gate_verdict"))
            .select_from(m.outerjoin(g, g.c.gate_id == m.c.gate_id)))


def _row(r) -> ModelRow:
    return ModelRow(_model(r), r.path, r.created_ts, r.status_ts, dict(r.meta or {}))


def list_models(conn: Connection) -> list[ModelRow]:
    return [_row(r) for r in conn.execute(_models_query().order_by(s.models.c.created_ts,
                                                                   s.models.c.model_version))]


def get_model_row(conn: Connection, model_version: str) -> ModelRow:
    r = conn.execute(_models_query().where(s.models.c.model_version == model_version)).first()
    if r is None:
        raise NotFound(f"model {model_version} is not registered (`bidlens explain model register`)")
    return _row(r)


def get_model(conn: Connection, model_version: str) -> ModelVersion:
    return get_model_row(conn, model_version).model


def update_model(conn: Connection, model: ModelVersion, expected_version: int, now_ts: int) -> ModelVersion:
    """Write the version's status and gate if the row is still at `expected_version`; else ConflictError."""
    m = s.models
    before = get_model(conn, model.model_version)
    values = {"gate_id": model.gate_id, "version": expected_version + 1, "status": model.status.value}
    if before.status is not model.status:
        values["status_ts"] = now_ts
    result = conn.execute(update(m).where(m.c.model_version == model.model_version, m.c.version == expected_version)
                          .values(**values))
    if result.rowcount != 1:
        raise ConflictError(f"model {model.model_version} was changed by someone else (now version "
                            f"{before.version}, {before.status.value}); reload and try again")
    # `active` mirrors serving, for the readers that predate the lifecycle (`bidlens explain model list`).
    conn.execute(update(m).where(m.c.model_version == model.model_version)
                 .values(active=model.status is VersionStatus.SERVING))
    return get_model(conn, model.model_version)


def set_model_meta(conn: Connection, model_version: str, **entries) -> None:
    """Merge entries into the version's meta document (e.g. the gate's calibration_prior)."""
    meta = conn.execute(select(s.models.c.meta).where(s.models.c.model_version == model_version)).scalar()
    conn.execute(update(s.models).where(s.models.c.model_version == model_version)
                 .values(meta={**(meta or {}), **entries}))


def servable_versions(conn: Connection) -> frozenset[str]:
    return frozenset(conn.execute(select(s.models.c.model_version).where(
        s.models.c.status.in_([st.value for st in SERVABLE]))).scalars())


# --- gate reports -------------------------------------------------------------------------------

@dataclass(frozen=True)
class GateRecord:
    gate_id: int
    model_version: str
    created_ts: int
    created_by: str
    verdict: Verdict
    reasons: list[dict]
    thresholds: dict
    report: dict
    seconds: float


def insert_gate(conn: Connection, *, model_version: str, created_ts: int, created_by: str, verdict: Verdict,
                reasons: list[dict], thresholds: dict, report: dict, html: str, seconds: float) -> int:
    result = conn.execute(insert(s.model_gates).values(
        model_version=model_version, created_ts=created_ts, created_by=created_by, verdict=verdict.value,
        reasons=reasons, thresholds=thresholds, report=report, html=html, seconds=seconds))
    return int(result.inserted_primary_key[0])


def _gate(r) -> GateRecord:
    return GateRecord(r.gate_id, r.model_version, r.created_ts, r.created_by, Verdict(r.verdict),
                      list(r.reasons), dict(r.thresholds), dict(r.report), r.seconds)


def get_gate(conn: Connection, gate_id: int) -> GateRecord:
    g = s.model_gates
    r = conn.execute(select(*[c for c in g.c if c.name != "html"]).where(g.c.gate_id == gate_id)).first()
    if r is None:
        raise NotFound(f"gate report {gate_id} does not exist")
    return _gate(r)


def gate_html(conn: Connection, gate_id: int) -> str:
    html = conn.execute(select(s.model_gates.c.html).where(s.model_gates.c.gate_id == gate_id)).scalar()
    if html is None:
        raise NotFound(f"gate report {gate_id} does not exist")
    return html


# --- launches -----------------------------------------------------------------------------------

def _launch(r) -> Launch:
    return Launch(r.launch_id, r.model_version, r.previous_version, r.gate_id, Verdict(r.verdict),
                  r.requested_by, r.requested_ts, r.reason, r.rollout_share, LaunchStatus(r.status), r.share,
                  r.share_ts, r.reviewed_by, r.reviewed_ts, r.review_comment, r.version)


def _launch_values(launch: Launch) -> dict:
    return {"model_version": launch.model_version, "previous_version": launch.previous_version,
            "gate_id": launch.gate_id, "verdict": launch.verdict.value, "requested_by": launch.requested_by,
            "requested_ts": launch.requested_ts, "reason": launch.reason, "rollout_share": launch.rollout_share,
            "status": launch.status.value, "share": launch.share, "share_ts": launch.share_ts,
            "reviewed_by": launch.reviewed_by, "reviewed_ts": launch.reviewed_ts,
            "review_comment": launch.review_comment}


def launch_document(launch: Launch) -> dict:
    """The launch as the audit trail records it."""
    return {"launch_id": launch.launch_id, **_launch_values(launch), "version": launch.version}


def next_launch_id(conn: Connection) -> int:
    return (conn.execute(select(func.max(s.model_launches.c.launch_id))).scalar() or 0) + 1


def insert_launch(conn: Connection, launch: Launch) -> Launch:
    conn.execute(insert(s.model_launches).values(launch_id=launch.launch_id, version=1, **_launch_values(launch)))
    return get_launch(conn, launch.launch_id)


def update_launch(conn: Connection, launch: Launch, expected_version: int) -> Launch:
    t = s.model_launches
    result = conn.execute(update(t).where(t.c.launch_id == launch.launch_id, t.c.version == expected_version)
                          .values(version=expected_version + 1, **_launch_values(launch)))
    if result.rowcount != 1:
        current = get_launch(conn, launch.launch_id)
        raise ConflictError(f"launch {launch.launch_id} was changed by someone else (now version "
                            f"{current.version}, {current.status.value}); reload and try again")
    return get_launch(conn, launch.launch_id)


def get_launch(conn: Connection, launch_id: int) -> Launch:
    r = conn.execute(select(s.model_launches).where(s.model_launches.c.launch_id == launch_id)).first()
    if r is None:
        raise NotFound(f"launch {launch_id} does not exist")
    return _launch(r)


def list_launches(conn: Connection, statuses: Iterable[LaunchStatus] | None = None,
                  model_version: str | None = None) -> list[Launch]:
    t = s.model_launches
    q = select(t).order_by(t.c.launch_id)
    if statuses is not None:
        q = q.where(t.c.status.in_([st.value for st in statuses]))
    if model_version is not None:
        q = q.where(t.c.model_version == model_version)
    return [_launch(r) for r in conn.execute(q)]


def live_launch(conn: Connection) -> Launch | None:
    live = list_launches(conn, [LaunchStatus.LIVE])
    return live[-1] if live else None


def serving_version(conn: Connection) -> str | None:
    """The version the live launch serves, else the one marked serving (adopted at the upgrade)."""
    live = live_launch(conn)
    if live is not None:
        return live.model_version
    return conn.execute(select(s.models.c.model_version).where(s.models.c.status == VersionStatus.SERVING.value)
                        .order_by(s.models.c.status_ts.desc()).limit(1)).scalar()

