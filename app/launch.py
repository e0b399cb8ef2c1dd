"""The launch gate's operations: permission-checked, audited, one transaction each (docs/LAUNCH.md).

`Launches` runs a version's gate (app.gate) and stores its report with the version, takes launch
requests, approvals (four eyes; a failing verdict needs a written reason and is flagged in the audit
and the alert), rejections, withdrawals, rollbacks and retirements (control.launch), the manager's
thresholds and the admin's switch of the gate. It answers which versions may serve (the ingest's
check) and, in the guard worker's tick, steps a guarded rollout (control.rollout).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, Engine, text

from app.gate import GateRequest, calibration_interval, gate_scenarios, run_gate
from app.gate_report import render_html
from app.service import SYSTEM_ACTOR
from control import launch as lc
from control.audit import AuditRecord
from control.clock import Clock
from control.config import Settings
from control.domain import InvalidValue, User, require_text
from control.gate import GateThresholds, Verdict
from control.permissions import Action, require
from control.rollout import RolloutConfig, RolloutDecision, VersionEvidence, rollout_step
from guards.alerts import AlertEvent, AlertKind, Severity, enqueue_alert
from guards.config import GuardSettings, load_guard_settings
from guards.observe import CalibrationPrior, lag_share
from guards.pool_store import active_version
from sim.catalog import MINUTES_PER_DAY
from store import launch_repo as lr
from store import repo

ROLLOUT_ACTOR = "launch-rollout"  # the guard worker stepping a rollout


def gate_enabled(conn: Connection) -> bool:
    value, _ = repo.get_flag(conn, lr.LAUNCH_GATE_KEY, {"enabled": True})
    return bool(value.get("enabled", True))


def servable_versions(conn: Connection) -> frozenset[str] | None:
    """The model versions whose decisions the ingest accepts; None when the gate is switched off."""
    return lr.servable_versions(conn) if gate_enabled(conn) else None


def version_prior(conn: Connection, model_version: str) -> CalibrationPrior | None:
    """The calibration prior the version's launch gate wrote (what the worker arms the guard with while it
    serves); None when it was never gated or its gate measured no calibration."""
    prior = lr.get_model_row(conn, model_version).meta.get("calibration_prior")
    return CalibrationPrior(float(prior["k"]), float(prior["orders"])) if prior else None


def load_thresholds(conn: Connection) -> tuple[GateThresholds, int]:
    value, version = repo.get_flag(conn, lr.GATE_THRESHOLDS_KEY, {})
    return GateThresholds.from_json(value), version


@dataclass
class GateJob:
    """A gate run in the background (the panel's), with its progress."""

    model_version: str
    started_by: str
    phase: str = "stress"
    progress: float = 0.0
    gate: lr.GateRecord | None = None
    error: str = ""
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.gate is None and not self.error


class Launches:
    def __init__(self, engine: Engine, clock: Clock, settings: Settings, guard_settings: GuardSettings | None = None):
        self.engine = engine
        self.clock = clock
        self.settings = settings
        self.guard_settings = guard_settings or load_guard_settings(settings.guard_config)

    # --- reads ----------------------------------------------------------------------------------

    def _read(self, actor: User):
        require(actor, Action.VIEW)
        return self.engine.connect()

    def models(self, actor: User) -> list[lr.ModelRow]:
        with self._read(actor) as conn:
            return lr.list_models(conn)

    def model(self, actor: User, model_version: str) -> lr.ModelRow:
        with self._read(actor) as conn:
            return lr.get_model_row(conn, model_version)

    def gate(self, actor: User, gate_id: int) -> lr.GateRecord:
        with self._read(actor) as conn:
            return lr.get_gate(conn, gate_id)

    def gate_html(self, actor: User, gate_id: int) -> str:
        with self._read(actor) as conn:
            return lr.gate_html(conn, gate_id)

    def launches(self, actor: User, statuses: Sequence[lc.LaunchStatus] | None = None) -> list[lc.Launch]:
        with self._read(actor) as conn:
            return lr.list_launches(conn, statuses)

    def live(self, actor: User) -> lc.Launch | None:
        with self._read(actor) as conn:
            return lr.live_launch(conn)

    def serving_version(self, actor: User) -> str | None:
        with self._read(actor) as conn:
            return lr.serving_version(conn)

    def gate_switch(self, actor: User) -> bool:
        with self._read(actor) as conn:
            return gate_enabled(conn)

    def thresholds(self, actor: User) -> tuple[GateThresholds, int]:
        with self._read(actor) as conn:
            return load_thresholds(conn)

    # --- the deployment's switch and thresholds ----------------------------------------------

    def set_gate(self, actor: User, on: bool, reason: str) -> bool:
        """An admin switches the gate off (every version's decisions accepted) or on again; audited."""
        require(actor, Action.SWITCH_LAUNCH_GATE)
        require_text("reason", reason)
        now = self.clock()
        with self.engine.begin() as conn:
            repo.verified_actor(conn, actor)  # the person as the store has them, row locked (issue 16)
            before = gate_enabled(conn)
            repo.set_flag(conn, lr.LAUNCH_GATE_KEY, {"enabled": bool(on)}, actor.username, now)
            self._audit(conn, actor.username, "launch_gate.switch", "launch_gate", "*", {"enabled": before},
                        {"enabled": bool(on), "reason": reason})
        return bool(on)

    def set_thresholds(self, actor: User, values: dict, reason: str, expected_version: int | None = None) -> GateThresholds:
        """A manager sets the gate's thresholds (any subset; the rest stay); refused values name the key."""
        require(actor, Action.SET_GATE_THRESHOLDS)
        require_text("reason", reason)
        now = self.clock()
        with self.engine.begin() as conn:
            repo.verified_actor(conn, actor)  # the person as the store has them, row locked (issue 16)
            before, _ = load_thresholds(conn)
            after = GateThresholds.from_json({**before.as_json(), **values})
            repo.set_flag(conn, lr.GATE_THRESHOLDS_KEY, after.as_json(), actor.username, now, expected_version)
            self._audit(conn, actor.username, "gate.thresholds_set", "gate_thresholds", "*", before.as_json(),
                        {**after.as_json(), "reason": reason})
        return after

    # --- the gate -----------------------------------------------------------------------------------

    def run_gate(self, actor: User | None, model_version: str, *, scenarios: Sequence[str] | None = None,
                 seeds: Sequence[int] = (1,), minutes: int = MINUTES_PER_DAY, history_days: float = 3.0,
                 workers: int = 2, progress: Callable[[float, str], None] | None = None) -> lr.GateRecord:
        """Measure the version and store its report (JSON and HTML) with it: registered becomes gated,
        its calibration the guard's prior (models.meta calibration_prior). Audited. `actor` None is the
        machine's own CLI (a gate measures; launching it still takes two people)."""
        if actor is not None:
            require(actor, Action.RUN_GATE)
        if not 1 <= minutes <= MINUTES_PER_DAY:
            raise InvalidValue("minutes", minutes, f"must be in 1..{MINUTES_PER_DAY}")
        if not seeds:
            raise InvalidValue("seeds", list(seeds), "at least one seed")
        chosen = gate_scenarios(scenarios) if scenarios else gate_scenarios()
        with self.engine.connect() as conn:
            row = lr.get_model_row(conn, model_version)
            if row.model.status is lc.VersionStatus.RETIRED:
                raise lc.LaunchStateError(f"model {model_version} is retired; register a new version")
            serving = lr.serving_version(conn)
            serving_row = lr.get_model_row(conn, serving) if serving and serving != model_version else None
            pool = active_version(conn)
            thresholds, _ = load_thresholds(conn)
        if not Path(row.path).is_dir():
            raise InvalidValue("model_version", model_version, f"its artefact folder {row.path} is not on disk")
        request = GateRequest(model_version, row.path, chosen, tuple(int(s) for s in seeds), minutes, history_days,
                              workers, serving_row.model.model_version if serving_row else None,
                              serving_row.path if serving_row and Path(serving_row.path).is_dir() else None,
                              pool.source if pool is not None else None)
        outcome = run_gate(self.engine.connect, self.settings.data_dir, request, thresholds, self.guard_settings,
                           progress)
        return self.record_gate(actor, model_version, outcome.report)

    def record_gate(self, actor: User | None, model_version: str, report: dict) -> lr.GateRecord:
        """Store a gate report (app.gate's document) with its HTML: registered becomes gated, the report's
        prior the guard's (models.meta calibration_prior). Audited; `actor` None: the machine's CLI."""
        if actor is not None:
            require(actor, Action.RUN_GATE)
        who = actor.username if actor is not None else SYSTEM_ACTOR
        verdict = Verdict(report["verdict"])
        now = self.clock()
        with self.engine.begin() as conn:
            if actor is not None:  # a person, as the store has them now, row locked (issue 16)
                repo.verified_actor(conn, actor)
            current = lr.get_model(conn, model_version)
            gate_id = lr.insert_gate(conn, model_version=model_version, created_ts=now, created_by=who,
                                     verdict=verdict, reasons=report["reasons"], thresholds=report["thresholds"],
                                     report=report, html=render_html(report), seconds=report["seconds"])
            after = lr.update_model(conn, lc.gated(current, gate_id, verdict), current.version, now)
            lr.set_model_meta(conn, model_version, calibration_prior=report.get("prior"))
            self._audit(conn, who, "model.gate", "model", model_version,
                        {"status": current.status.value, "gate_id": current.gate_id},
                        {"status": after.status.value, "gate_id": gate_id, "verdict": verdict.value,
                         "reasons": [r["code"] for r in report["reasons"]], "calibration_prior": report.get("prior")})
            return lr.get_gate(conn, gate_id)

    def start_gate(self, actor: User, model_version: str, **options) -> GateJob:
        """The gate in a background thread (the panel's button); RUN_GATE is checked before it starts."""
        require(actor, Action.RUN_GATE)
        job = GateJob(model_version, actor.username)

        def progress(share: float, phase: str) -> None:
            job.progress, job.phase = share, phase

        def work() -> None:
            try:
                job.gate = self.run_gate(actor, model_version, progress=progress, **options)
            except Exception as exc:  # the page says why a background run failed instead of losing it
                job.error = f"{type(exc).__name__}: {exc}"

        job.thread = threading.Thread(target=work, daemon=True, name=f"gate-{model_version}")
        job.thread.start()
        return job

    # --- launches under four eyes --------------------------------------------------------------

    def request_launch(self, actor: User, model_version: str, reason: str, rollout_share: float = 1.0) -> lc.Launch:
        now = self.clock()
        with self.engine.begin() as conn:
            repo.verified_actor(conn, actor)  # the person as the store has them, row locked (issue 16)
            model = lr.get_model(conn, model_version)
            pending = bool(lr.list_launches(conn, [lc.LaunchStatus.REQUESTED], model_version))
            launch = lc.request_launch(actor, model, launch_id=lr.next_launch_id(conn), serving=lr.serving_version(conn),
                                       reason=reason, rollout_share=rollout_share, now_ts=now, pending=pending)
            stored = lr.insert_launch(conn, launch)
            self._audit(conn, actor.username, "launch.request", "launch", str(stored.launch_id), None,
                        lr.launch_document(stored))
        return stored

    def _expect(self, conn: Connection, launch_id: int, expected_version: int) -> lc.Launch:
        current = lr.get_launch(conn, launch_id)
        if current.version != expected_version:
            raise repo.ConflictError(f"launch {launch_id} was changed by someone else (now version "
                                     f"{current.version}, {current.status.value}); reload and try again")
        return current

    def approve_launch(self, actor: User, launch_id: int, expected_version: int, comment: str = "") -> lc.Launch:
        """A manager approves: the version serves (its rollout share first); the live launch before it is
        superseded. A failing gate needs `comment`, and the audit entry and the alert flag it."""
        now = self.clock()
        with self.engine.begin() as conn:
            repo.verified_actor(conn, actor)  # the person as the store has them, row locked (issue 16)
            current = self._expect(conn, launch_id, expected_version)
            model = lr.get_model(conn, current.model_version)
            live = lc.approve_launch(current, actor, now, comment, serving=lr.serving_version(conn), model=model)
            before_live = lr.live_launch(conn)
            if before_live is not None:
                lr.update_launch(conn, replace(before_live, status=lc.LaunchStatus.SUPERSEDED), before_live.version)
            stored = lr.update_launch(conn, live, expected_version)
            self._set_statuses(conn, lc.statuses_after_approval(stored), now)
            against_fail = stored.verdict is Verdict.FAIL
            self._audit(conn, actor.username, "launch.approve", "launch", str(launch_id), lr.launch_document(current),
                        {**lr.launch_document(stored), "against_failing_gate": against_fail})
            self._alert(conn, AlertKind.MODEL_LAUNCHED, Severity.CRITICAL if against_fail else Severity.INFO, now,
                        stored, _launch_detail(stored, actor.username, against_fail))
        return stored

    def reject_launch(self, actor: User, launch_id: int, expected_version: int, comment: str = "") -> lc.Launch:
        return self._review(actor, launch_id, expected_version, "launch.reject",
                            lambda launch, now: lc.reject_launch(launch, actor, now, comment))

    def withdraw_launch(self, actor: User, launch_id: int, expected_version: int) -> lc.Launch:
        return self._review(actor, launch_id, expected_version, "launch.withdraw",
                            lambda launch, now: lc.withdraw_launch(launch, actor, now))

    def _review(self, actor: User, launch_id: int, expected_version: int, action: str,
                step: Callable[[lc.Launch, int], lc.Launch]) -> lc.Launch:
        now = self.clock()
        with self.engine.begin() as conn:
            repo.verified_actor(conn, actor)  # the person as the store has them, row locked (issue 16)
            current = self._expect(conn, launch_id, expected_version)
            stored = lr.update_launch(conn, step(current, now), expected_version)
            self._audit(conn, actor.username, action, "launch", str(launch_id), lr.launch_document(current),
                        lr.launch_document(stored))
        return stored

    def rollback(self, actor: User | None, reason: str, expected_version: int | None = None) -> lc.Launch:
        """One action: the live launch ends and its previous version serves again (actor None: the rollout
        stepped back by the guard worker)."""
        now = self.clock()
        with self.engine.begin() as conn:
            if actor is not None:  # a person, as the store has them now, row locked (issue 16)
                repo.verified_actor(conn, actor)
            return self._rollback(conn, actor, reason, expected_version, now)

    def _rollback(self, conn: Connection, actor: User | None, reason: str, expected_version: int | None,
                  now: int) -> lc.Launch:
        live = lr.live_launch(conn)
        if live is None:
            raise lc.LaunchStateError("no launch is live: nothing to roll back")
        if expected_version is not None and live.version != expected_version:
            raise repo.ConflictError(f"launch {live.launch_id} was changed by someone else (now version "
                                     f"{live.version}); reload and try again")
        ended = lr.update_launch(conn, lc.rollback(live, actor, now, reason), live.version)
        self._set_statuses(conn, lc.statuses_after_rollback(ended), now)
        restored = next((x for x in reversed(lr.list_launches(conn, [lc.LaunchStatus.SUPERSEDED],
                                                              ended.previous_version))), None)
        if restored is not None:  # the launch that brought the previous version serves again
            lr.update_launch(conn, replace(restored, status=lc.LaunchStatus.LIVE, share=1.0, share_ts=now),
                             restored.version)
        who = actor.username if actor is not None else ROLLOUT_ACTOR
        self._audit(conn, who, "launch.rollback", "launch", str(live.launch_id), lr.launch_document(live),
                    {**lr.launch_document(ended), "reason": reason, "serving": ended.previous_version})
        self._alert(conn, AlertKind.MODEL_ROLLED_BACK, Severity.WARNING, now, ended,
                    {"zh": f"{ended.model_version} 已回滚，{ended.previous_version} 重新上线（{who}：{reason}）",
                     "en": f"{ended.model_version} rolled back; {ended.previous_version} serves again "
                           f"({who}: {reason})"})
        return ended

    def retire(self, actor: User, model_version: str, reason: str) -> lc.ModelVersion:
        require_text("reason", reason)
        now = self.clock()
        with self.engine.begin() as conn:
            repo.verified_actor(conn, actor)  # the person as the store has them, row locked (issue 16)
            current = lr.get_model(conn, model_version)
            after = lr.update_model(conn, lc.retire(current, actor), current.version, now)
            self._audit(conn, actor.username, "model.retire", "model", model_version,
                        {"status": current.status.value}, {"status": after.status.value, "reason": reason})
        return after

    def _set_statuses(self, conn: Connection, statuses: dict[str, lc.VersionStatus], now: int) -> None:
        for version, status in statuses.items():
            current = lr.get_model(conn, version)
            if current.status is not status:
                lr.update_model(conn, replace(current, status=status), current.version, now)

    # --- guarded rollout, stepped by the guard worker ----------------------------------------------

    def version_evidence(self, conn: Connection, versions: Sequence[str], since_ts: int,
                         now_ts: int) -> dict[str, VersionEvidence]:
        """Each version's value calibration on its own slots since `since_ts`, as known at `now_ts`
        (lag-corrected as the guard's k; one-sided bounds at the guard's calibration confidence)."""
        rows = conn.execute(text(
            "SELECT d.model_version, o.bucket_ts, SUM(o.gmv), SUM(o.orders), SUM(o.clicks * d.pred_value) "
            "FROM outcomes o JOIN decisions d ON d.campaign_id = o.campaign_id AND d.bucket_ts = o.bucket_ts "
            "AND d.audience_package = o.audience_package WHERE o.bucket_ts >= :since AND o.known_ts <= :now "
            "AND o.clicks > 0 GROUP BY d.model_version, o.bucket_ts"), {"since": since_ts, "now": now_ts}).all()
        watermark = conn.execute(text("SELECT MAX(known_ts) FROM outcomes WHERE bucket_ts >= :since "
                                      "AND known_ts <= :now"), {"since": since_ts, "now": now_ts}).scalar()
        roi = self.guard_settings.defaults["roi"]
        confidence = 1.0 - 2.0 * (1.0 - roi.calibration_confidence)  # one-sided bounds at that confidence
        out = {}
        for version in versions:
            mine = [r for r in rows if r[0] == version]
            if not mine or watermark is None:
                out[version] = VersionEvidence(None, None, None, 0.0)
                continue
            buckets = [r[1] for r in mine]
            share = lag_share(int(watermark) - np.asarray(buckets), self.guard_settings.observe)
            gmv = sum(float(r[2] or 0) for r in mine)
            orders = sum(float(r[3] or 0) for r in mine)
            predicted = float(sum(float(r[4] or 0) * f for r, f in zip(mine, share, strict=True)))
            k = gmv / predicted if predicted > 0 else None
            low, high = calibration_interval(k, orders, roi.order_value_cv, confidence) if k is not None else (None, None)
            out[version] = VersionEvidence(k, low, high, orders)
        return out

    def rollout_tick(self, config: RolloutConfig | None = None) -> RolloutDecision | None:
        """The live launch's rollout one step on (the guard worker calls it each tick): widen, hold or roll
        back (control.rollout). None when no rollout is under way. Every change is audited and alerted."""
        now = self.clock()
        with self.engine.begin() as conn:
            live = lr.live_launch(conn)
            if live is None or not live.rolling_out or live.previous_version is None:
                return None
            thresholds, _ = load_thresholds(conn)
            config = config or RolloutConfig(tolerance=thresholds.calibration_tolerance)
            evidence = self.version_evidence(conn, [live.model_version, live.previous_version],
                                             live.reviewed_ts or 0, now)
            decision = rollout_step(live.share, live.share_ts, now, evidence[live.model_version],
                                    evidence[live.previous_version], config)
            if decision.action == "rollback":
                self._rollback(conn, None, f"rollout evidence: {decision.reason}", live.version, now)
            elif decision.action == "widen":
                stored = lr.update_launch(conn, replace(live, share=decision.share_after, share_ts=now), live.version)
                if stored.share >= 1.0:
                    self._set_statuses(conn, lc.statuses_after_approval(stored), now)
                self._audit(conn, ROLLOUT_ACTOR, "launch.widen", "launch", str(live.launch_id),
                            {"share": live.share}, {"share": stored.share, "evidence": decision.figures})
                self._alert(conn, AlertKind.MODEL_LAUNCHED, Severity.INFO, now, stored,
                            {"zh": f"{stored.model_version} 灰度放量至 {stored.share:.0%}（证据显示不差于上一版本）",
                             "en": f"{stored.model_version} widened to {stored.share:.0%} of slots (the evidence "
                                   "shows it at least as good as the previous version)"})
        return decision

    # --- audit and alerts ---------------------------------------------------------------------------

    def _audit(self, conn: Connection, actor: str, action: str, entity: str, entity_id: str,
               before: dict | None, after: dict | None) -> None:
        repo.append_audit(conn, AuditRecord(self.clock(), actor, action, entity, entity_id, before, after))

    def _alert(self, conn: Connection, kind: AlertKind, severity: Severity, now: int, launch: lc.Launch,
               detail: dict) -> None:
        enqueue_alert(conn, AlertEvent(kind=kind, severity=severity, occurred_ts=now,
                                       condition_key=f"launch:{launch.launch_id}:{launch.status.value}:{launch.share}",
                                       payload={"launch_id": launch.launch_id, "model_version": launch.model_version,
                                                "verdict": launch.verdict.value, "detail": detail}), now)


def _launch_detail(launch: lc.Launch, approver: str, against_fail: bool) -> dict:
    share = f"{launch.share:.0%}"
    if against_fail:
        return {"zh": f"{launch.model_version} 在闸门判定“不通过”的情况下由 {approver} 批准上线（{share} 流量）。"
                      f"理由：{launch.review_comment}",
                "en": f"{launch.model_version} launched by {approver} against a FAILING gate ({share} of slots). "
                      f"Reason: {launch.review_comment}"}
    return {"zh": f"{launch.model_version} 由 {approver} 批准上线（{share} 流量；闸门：{launch.verdict.value}）",
            "en": f"{launch.model_version} launched by {approver} ({share} of slots; gate: {launch.verdict.value})"}
