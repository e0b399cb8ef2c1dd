"""The control room: everything the panel shows and does, through one permission-checked door.

Every read takes the person asking and checks, in the core (control.permissions),
that they may see it: the audit trail needs VIEW_AUDIT, a decision's raw
contributions, the global drivers and the model card VIEW_EXPLANATION_DETAIL
(everyone else reads the reasons in words), the rest VIEW. Every file handed out
goes through Control.export (EXPORT, stamped, audited). Actions go to Control,
GuardService and the launch gate's Launches, which check their own permissions. The pages never
open a connection or reach the store, the guards' stores or the explanation
store themselves (tests/test_architecture.py holds them to it).

Reads that every refresh repeats are cached here, keyed so a new bucket (or a new
campaign catalogue) is seen at once: the slots of a bucket, the catalogue. The
day's sums come from the store's rollups (app.board.campaign_totals).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from app import board, explorer
from app.alert_desk import acknowledge_alert, resend_dead_alerts
from app.explanations import DecisionExplainer, DecisionExplanation
from app.exports import stamped_csv, stamped_html, stamped_json
from app.guard_measures import GuardMeasures, guard_measures
from app.launch import GateJob, Launches
from app.review import breakers, load_review
from app.review_report import review_html
from app.service import Control
from control import launch as lc
from control.audit import ChainReport
from control.domain import (
    AuditEntry,
    BidFormula,
    Campaign,
    InvalidValue,
    Override,
    OverrideField,
    OverrideScope,
    OverrideStatus,
    User,
)
from control.gate import GateThresholds
from control.overrides import ProposalCheck, check_proposal, value_range
from control.permissions import Action, allowed, require, verified
from control.policy import KillSwitch
from explain.store import WindowExplanations, load_window
from guards.alerts import metrics, outbox, templates
from guards.alerts.core import AlertRecord
from guards.alerts.events import AlertKind
from guards.config import GuardSettings
from guards.pool_store import ACTIVE, PoolVersion, active_version, check_pool, list_versions
from guards.service import GuardService
from guards.threshold_store import ThresholdReader
from guards.thresholds import EDITABLE, ThresholdEdit
from sim.report import report_html
from store import repo
from store.launch_repo import GateRecord, ModelRow

DECIDED = (OverrideStatus.APPROVED, OverrideStatus.REJECTED, OverrideStatus.REVOKED, OverrideStatus.EXPIRED)
_SLOT_CACHE = 8          # buckets whose slots stay cached (the board, the override page, a look back)
CATALOGUE_TTL_S = 60.0   # a new campaign shows within a minute; reloading 1,000 every refresh is not free


@dataclass(frozen=True)
class OverrideForm:
    """What the override form offers for a scope and field: the range the core will accept, and what is
    served now (the form's start: submitting it unchanged changes nothing), by whom."""

    low: float
    high: float | None          # None: no upper bound but the field's own (audience on/off)
    model_bid: float | None     # the model's bid the bid bound is a multiple of
    now: board.ServedNow
    floor: float                # the campaign's ROI floor

    @property
    def default(self) -> float:
        return self.now.value


@dataclass(frozen=True)
class DecisionReasons:
    """A decision as anyone who may VIEW reads it: what was served and why, in words."""

    decision: dict        # served and model bid, predicted ROI, who decided, budget share, audience on/off
    reasons: list[str]    # with the yuan each reason moves the bid only for VIEW_EXPLANATION_DETAIL
    detailed: bool        # whether the person may open the raw contributions
    roi_floor: float      # the campaign's floor, what the predicted ROI is read against


@dataclass(frozen=True)
class OutboxSummary:
    counts: dict[str, int]
    response_times: list[metrics.ResponseStats]
    recent: pd.DataFrame


class ControlRoom:
    def __init__(self, control: Control, guards: GuardService, file_settings: GuardSettings,
                 monotonic: Callable[[], float] = time.monotonic):
        self.control = control
        self.guards = guards
        self._thresholds = ThresholdReader(file_settings)
        self._monotonic = monotonic
        # The launch gate's operations (docs/LAUNCH.md) on Control's store and clock.
        self.launches = Launches(control.engine, control.clock, control.settings, file_settings)
        self._lock = threading.Lock()
        self._slots: OrderedDict[int, pd.DataFrame] = OrderedDict()
        self._catalogue: tuple[float, dict[str, Campaign], dict[str, tuple[str, str]]] | None = None
        # Explains decisions for the pages (through `explanation`, permission-checked) and for the CLI.
        self.explainer = DecisionExplainer(control.engine, self.guard_settings, self._load_catalogue)

    @property
    def settings(self):
        return self.control.settings

    def session_user(self, user: User) -> User:
        """A session's user as the store has them now: ActorRefused once they were deactivated, given
        another role or removed (the session must end; the core refuses their actions anyway)."""
        with self.control.engine.connect() as conn:
            record = repo.get_user_record(conn, user.username)
        return verified(user, record.user if record else None)

    def _read(self, actor: User, action: Action = Action.VIEW):
        require(actor, action)
        return self.control.engine.connect()

    # --- time, catalogue, slots --------------------------------------------------------------------

    def latest_bucket(self, actor: User) -> int | None:
        with self._read(actor) as conn:
            return board.latest_bucket(conn)

    def _load_catalogue(self) -> tuple[dict[str, Campaign], dict[str, tuple[str, str]]]:
        now = self._monotonic()
        cached = self._catalogue
        if cached is None or now - cached[0] > CATALOGUE_TTL_S:
            with self.control.engine.connect() as conn:
                campaigns = repo.load_campaigns(conn)
                packages = {c: (p.name_zh, p.name_en) for c, p in repo.load_audience_packages(conn).items()}
            cached = self._catalogue = (now, campaigns, packages)
        return cached[1], cached[2]

    def campaigns(self, actor: User) -> dict[str, Campaign]:
        require(actor, Action.VIEW)
        return self._load_catalogue()[0]

    def packages(self, actor: User) -> dict[str, tuple[str, str]]:
        """Audience package code -> (name in Chinese, name in English)."""
        require(actor, Action.VIEW)
        return self._load_catalogue()[1]

    def slots(self, actor: User, bucket: int) -> pd.DataFrame:
        """Every slot decision of one bucket (app.board.bucket_slots), cached per bucket."""
        require(actor, Action.VIEW)
        with self._lock:
            if bucket in self._slots:
                self._slots.move_to_end(bucket)
                return self._slots[bucket]
        with self.control.engine.connect() as conn:
            frame = board.bucket_slots(conn, bucket)
        with self._lock:
            self._slots[bucket] = frame
            while len(self._slots) > _SLOT_CACHE:
                self._slots.popitem(last=False)
        return frame

    def kill_switch(self, actor: User) -> KillSwitch:
        require(actor, Action.VIEW)
        return self.control.kill_switch()

    # --- the live board ----------------------------------------------------------------------------

    def guard_settings(self) -> GuardSettings:
        """The effective guard settings: the config file with the store's threshold edits on top."""
        with self.control.engine.connect() as conn:
            return self._thresholds.read(conn)

    def roi_floors(self, actor: User, campaign_ids: Sequence[str]) -> dict[str, float]:
        """Each campaign's ROI floor as its guard is configured."""
        require(actor, Action.VIEW)
        settings = self.guard_settings()
        return {c: settings.for_campaign("roi", c).floor for c in campaign_ids}

    def default_floor(self, actor: User) -> float:
        require(actor, Action.VIEW)
        return self.guard_settings().defaults["roi"].floor

    def board(self, actor: User, window_s: int) -> board.BoardView | None:
        """The live board at the newest bucket, over the last `window_s` seconds; None before any data."""
        newest = self.latest_bucket(actor)
        if newest is None:
            return None
        known = self.campaigns(actor)
        slots = self.slots(actor, newest)
        floors = self.roi_floors(actor, list(known))
        with self.control.engine.connect() as conn:
            return board.build_board(conn, known, slots, newest, self.control.clock(), window_s, floors)

    # --- alerts ------------------------------------------------------------------------------------

    def open_alerts(self, actor: User, limit: int = 20) -> pd.DataFrame:
        """Open alerts (firing, not acknowledged, not resolved), newest first, one row per condition with
        its channels (app.board.EVENT_COLUMNS)."""
        with self._read(actor) as conn:
            return board.alerts_frame(conn, open_only=True, limit=limit)

    def notices(self, actor: User, hours: int = 24) -> pd.DataFrame:
        """Alerts addressed to the person asking (their overrides' approval, rejection, revocation or expiry)
        of the last `hours`, newest first."""
        with self._read(actor) as conn:
            return board.notices_for(conn, actor.username, since_ts=self.control.clock() - hours * 3600)

    @staticmethod
    def notice_text(payload: dict, lang: str) -> str:
        """What a notice says, in `lang` (its detail as the message gave it)."""
        return templates.in_language(payload.get("detail"), lang)

    def alert(self, actor: User, alert_id: int) -> AlertRecord:
        with self._read(actor) as conn:
            return outbox.get_alert(conn, alert_id)

    def dead_alerts(self, actor: User) -> list[AlertRecord]:
        with self._read(actor) as conn:
            return outbox.list_alerts(conn, status="dead", limit=None)

    @staticmethod
    def alert_title(kind: str, lang: str) -> str:
        try:
            return templates.TITLES[lang][AlertKind(kind)]
        except ValueError:
            return kind

    def alert_text(self, alert: AlertRecord, lang: str) -> str:
        """The alert as the robot said it (its message), in `lang`."""
        style = templates.Style(language=lang, fmt="text", panel_url=self.settings.panel_url)
        return templates.render([alert], alert.message_id or "-", style)

    def acknowledge_alert(self, actor: User, alert_id: int) -> int:
        return acknowledge_alert(self.control, actor, alert_id)

    def resend_dead_alerts(self, actor: User, alert_ids: list[int]) -> list[int]:
        return resend_dead_alerts(self.control, actor, alert_ids)

    def outbox_summary(self, actor: User) -> OutboxSummary:
        with self._read(actor) as conn:
            counts = board.outbox_counts(conn)
            records = outbox.list_alerts(conn, limit=None)
            recent = board.alerts_frame(conn, limit=100)
        return OutboxSummary(counts, metrics.response_times_by_day(records), recent)

    # --- guards ------------------------------------------------------------------------------------

    def guard_states(self, actor: User) -> pd.DataFrame:
        with self._read(actor) as conn:
            return board.guard_table(conn)

    def guard_history(self, actor: User, campaign_id: str) -> pd.DataFrame:
        with self._read(actor) as conn:
            return board.guard_history(conn, campaign_id)

    def trip_ledger(self, actor: User) -> pd.DataFrame:
        with self._read(actor) as conn:
            return board.trip_ledger(conn)

    def guard_measures(self, actor: User) -> GuardMeasures:
        """How well the ROI guard did against the oracle: the newest stress reports and benchmarks."""
        require(actor, Action.VIEW)
        return guard_measures(self.control.settings.data_dir)

    def breaker_ledger(self, actor: User) -> list[dict]:
        """Per guard, every trip in the ledger: interceptions, restores, announced again, loss avoided (app.review)."""
        with self._read(actor) as conn:
            return breakers(conn, 0, 2**62)["by_guard"]

    EDITABLE_THRESHOLDS = EDITABLE

    def thresholds(self, actor: User, campaign_id: str | None) -> dict:
        require(actor, Action.VIEW)
        return self.guards.thresholds(campaign_id)

    def set_thresholds(self, actor: User, guard: str, campaign_id: str | None, values: dict, reason: str,
                       seen_version: int) -> dict:
        return self.guards.set_thresholds(actor, ThresholdEdit(guard, campaign_id, values, reason), seen_version)

    def rule_pool_versions(self, actor: User) -> tuple[list[PoolVersion], PoolVersion | None]:
        with self._read(actor) as conn:
            return list_versions(conn), active_version(conn)

    def check_rule_pool(self, actor: User, text: str) -> list:
        """The draft's problems (empty: it would go live); nothing is stored."""
        with self._read(actor) as conn:
            return check_pool(conn, text, self.guards.bounds)[1]

    def publish_rule_pool(self, actor: User, text: str) -> PoolVersion:
        """Submit the draft: stored as the active version, or refused (InvalidValue with its problems)."""
        version = self.guards.submit_rule_pool(actor, text)
        if version.status != ACTIVE:
            raise InvalidValue("rule_pool", f"v{version.version}", version.error)
        return version

    # --- explanations: strategy, so the raw contributions need VIEW_EXPLANATION_DETAIL ------------------

    def slot_buckets(self, actor: User, campaign_id: str, package: str) -> list[int]:
        with self._read(actor) as conn:
            return explorer.slot_buckets(conn, campaign_id, package)

    def may_see_detail(self, actor: User) -> bool:
        """Whether the person (as the store has them now: a grant or its withdrawal counts at once) may open a
        decision's raw contributions, the global drivers and the model card."""
        return allowed(self.session_user(actor), Action.VIEW_EXPLANATION_DETAIL)

    def _detail(self, actor: User):
        require(self.session_user(actor), Action.VIEW_EXPLANATION_DETAIL)
        return self.control.engine.connect()

    def explanation(self, actor: User, campaign_id: str, package: str, bucket: int,
                    lang: str) -> DecisionExplanation | None:
        """The slot's decision at (or just before) `bucket` explained in `lang`, step by step in yuan (app.explanations:
        the same function as `bidlens explain decision`); None without a decision or a stored explanation.
        The raw contributions are strategy: VIEW_EXPLANATION_DETAIL only."""
        with self._detail(actor) as conn:
            decision_id = explorer.find_decision_id(conn, campaign_id, package, bucket)
        return None if decision_id is None else self.explainer.explain(decision_id, lang)

    def decision_reasons(self, actor: User, campaign_id: str, package: str, bucket: int,
                         lang: str) -> DecisionReasons | None:
        """The slot's decision and its top reasons in words, for anyone who may VIEW; the yuan each reason moves
        the bid only for those who may see the raw contributions."""
        detailed = self.may_see_detail(actor)
        with self._read(actor) as conn:
            decision_id = explorer.find_decision_id(conn, campaign_id, package, bucket)
        if decision_id is None:
            return None
        try:
            ex = self.explainer.explain(decision_id, lang, amounts=detailed)
        except InvalidValue:  # no recorded formula: the steps cannot be told, the decision still can
            return None
        if ex is None:
            return None
        shown = ("bucket_ts", "bid", "model_bid", "pred_roi", "decided_by", "budget_share", "audience_on", "pacing")
        return DecisionReasons({k: ex.decision[k] for k in shown}, ex.reasons, detailed, ex.roi_floor)

    def explanation_window(self, actor: User, start_ts: int, end_ts: int,
                           campaign_id: str | None = None) -> WindowExplanations:
        with self._detail(actor) as conn:
            return load_window(conn, start_ts, end_ts, campaign_id=campaign_id)

    def decision_model(self, actor: User, campaign_id: str, package: str,
                       bucket: int) -> tuple[str, dict | None, BidFormula | None]:
        with self._detail(actor) as conn:
            return explorer.decision_model(conn, explorer.find_decision_id(conn, campaign_id, package, bucket))

    # --- overrides ---------------------------------------------------------------------------------

    def overrides(self, actor: User, statuses: list[OverrideStatus]) -> list[Override]:
        require(actor, Action.VIEW)
        return self.control.overrides(statuses)

    def my_proposals(self, actor: User, limit: int = 50) -> list[Override]:
        """The overrides this person proposed, newest first."""
        with self._read(actor) as conn:
            return repo.list_overrides(conn, proposed_by=actor.username)[::-1][:limit]

    def proposal_outcomes(self, actor: User, within_s: int = 86_400) -> list[Override]:
        """This person's proposals that someone else decided (approved, rejected, revoked) or that expired
        in the last `within_s` seconds: what the proposer is to be told."""
        now = self.control.clock()
        with self._read(actor) as conn:
            done = repo.list_overrides(conn, DECIDED, proposed_by=actor.username)

        def when(o: Override) -> int:
            return o.expires_ts if o.status is OverrideStatus.EXPIRED else (o.reviewed_ts or o.proposed_ts)

        return [o for o in done if o.reviewed_by != actor.username and now - within_s <= when(o) <= now]

    def override(self, actor: User, override_id: int) -> Override:
        with self._read(actor) as conn:
            return repo.get_override(conn, override_id)

    def _scope(self, actor: User, campaign_id: str) -> tuple[Campaign, pd.DataFrame, pd.DataFrame, int]:
        """The campaign, its slots at the newest bucket, their served policy now, and the newest bucket."""
        campaign = self.campaigns(actor).get(campaign_id)
        if campaign is None:
            raise InvalidValue("campaign_id", campaign_id, "unknown campaign", "unknown_campaign")
        newest = self.latest_bucket(actor)
        if newest is None:
            raise InvalidValue("campaign_id", campaign_id, "no decisions yet", "no_decisions")
        slots = self.slots(actor, newest)
        slots = slots[slots["campaign_id"].to_numpy() == campaign_id].reset_index(drop=True)
        with self.control.engine.connect() as conn:
            inputs = repo.load_policy_inputs(conn)
        policy = board.served_policy(slots, inputs.overrides, inputs.guards, inputs.kill_switch, self.control.clock())
        return campaign, slots, policy, newest

    def override_form(self, actor: User, campaign_id: str, audience_package: str | None,
                      field: OverrideField) -> OverrideForm:
        """The values the core will accept for this scope and field (the same bound it enforces), and what
        the scope is served now, by whom."""
        campaign, slots, policy, _ = self._scope(actor, campaign_id)
        with self.control.engine.connect() as conn:
            model_bid = self.control.latest_model_bid(conn, OverrideScope(campaign_id, audience_package))
        low, high = value_range(field, model_bid=model_bid, campaign=campaign, bounds=self.control.bounds)
        now = board.served_now(field, slots, policy, campaign.daily_budget, audience_package)
        return OverrideForm(low, high, model_bid, now, self.explainer.roi_floor(campaign_id))

    def check_proposal(self, actor: User, form: OverrideForm, campaign_id: str, field: OverrideField,
                       value_text: str, hours_text: str, reason: str) -> ProposalCheck:
        """The form's text checked as Control.propose_override will check it (the same bounds)."""
        require(actor, Action.VIEW)
        return check_proposal(field, value_text, hours_text, reason, model_bid=form.model_bid,
                              campaign=self.campaigns(actor)[campaign_id], bounds=self.control.bounds)

    def proposal_effect(self, actor: User, form: OverrideForm, campaign_id: str, audience_package: str | None,
                        value: float) -> board.ProposalEffect:
        """What the value would change, served now → proposed, with the model's predicted ROI of each."""
        _, slots, _, _ = self._scope(actor, campaign_id)
        return board.proposal_effect(form.now, value, slots, audience_package)

    # --- the launch gate: reads need VIEW (checked by Launches), actions are checked in the core ------------

    def models(self, actor: User) -> list[ModelRow]:
        """Every registered version with its lifecycle status, gate verdict and calibration prior."""
        return self.launches.models(actor)

    def model_launches(self, actor: User) -> list[lc.Launch]:
        """Every launch, oldest first: the requests waiting, the live one, those decided."""
        return self.launches.launches(actor)

    def gate_report(self, actor: User, gate_id: int) -> GateRecord:
        return self.launches.gate(actor, gate_id)

    def launch_gate_on(self, actor: User) -> bool:
        """Whether the gate holds (only approved versions' decisions accepted)."""
        return self.launches.gate_switch(actor)

    def gate_thresholds(self, actor: User) -> tuple[GateThresholds, int]:
        """The manager's thresholds and their version (what an edit must have seen)."""
        return self.launches.thresholds(actor)

    def set_gate_thresholds(self, actor: User, values: dict, reason: str, seen_version: int) -> GateThresholds:
        return self.launches.set_thresholds(actor, values, reason, seen_version)

    def switch_launch_gate(self, actor: User, on: bool, reason: str) -> bool:
        return self.launches.set_gate(actor, on, reason)

    def start_gate(self, actor: User, model_version: str, *, scenarios: Sequence[str], seeds: Sequence[int],
                   minutes: int) -> GateJob:
        """The version's gate in the background (RUN_GATE checked before it starts), with its progress."""
        return self.launches.start_gate(actor, model_version, scenarios=list(scenarios), seeds=list(seeds),
                                        minutes=minutes)

    def request_launch(self, actor: User, model_version: str, reason: str, rollout_share: float = 1.0) -> lc.Launch:
        return self.launches.request_launch(actor, model_version, reason, rollout_share)

    def approve_launch(self, actor: User, launch_id: int, seen_version: int, comment: str = "") -> lc.Launch:
        return self.launches.approve_launch(actor, launch_id, seen_version, comment)

    def reject_launch(self, actor: User, launch_id: int, seen_version: int, comment: str = "") -> lc.Launch:
        return self.launches.reject_launch(actor, launch_id, seen_version, comment)

    def withdraw_launch(self, actor: User, launch_id: int, seen_version: int) -> lc.Launch:
        return self.launches.withdraw_launch(actor, launch_id, seen_version)

    def rollback_launch(self, actor: User, reason: str, seen_version: int) -> lc.Launch:
        return self.launches.rollback(actor, reason, seen_version)

    def retire_model(self, actor: User, model_version: str, reason: str) -> lc.ModelVersion:
        return self.launches.retire(actor, model_version, reason)

    def export_gate_report(self, actor: User, gate_id: int, fmt: str, lang: str) -> bytes:
        """A stored gate report as a file: fmt html (the page stored with the version) or json."""
        if fmt not in ("html", "json"):
            raise InvalidValue("fmt", fmt, "must be html or json")
        gate = self.launches.gate(actor, gate_id)
        page = self.launches.gate_html(actor, gate_id) if fmt == "html" else ""
        render = (lambda st: stamped_html(page, st, lang).encode("utf-8")) if fmt == "html" \
            else (lambda st: stamped_json(gate.report, st))
        return self.control.export(actor, f"gate_report_{fmt}", render,
                                   {"gate_id": gate_id, "model_version": gate.model_version, "format": fmt})

    # --- audit -------------------------------------------------------------------------------------

    def audit_trail(self, actor: User) -> tuple[ChainReport, list[AuditEntry]]:
        """The chain's verdict and every entry, oldest first (managers and admins)."""
        with self._read(actor, Action.VIEW_AUDIT) as conn:
            entries = repo.load_audit(conn)
        return self.control.verify_audit(), entries

    # --- the biweekly review and exports: each a file out of BidLens, so EXPORT, stamped and audited --------

    def review(self, actor: User, date_from: str, date_to: str) -> dict:
        """The biweekly review of [date_from, date_to] (China time), per promotion and campaign (app.review)."""
        require(actor, Action.VIEW)
        return load_review(self.control.engine, date_from, date_to)

    def export_review(self, actor: User, review: dict, fmt: str, lang: str) -> bytes:
        """The review as a file: fmt html (self-contained, in `lang`) or json."""
        if fmt not in ("html", "json"):
            raise InvalidValue("fmt", fmt, "must be html or json")
        render = (lambda st: stamped_html(review_html(review, lang), st, lang).encode("utf-8")) if fmt == "html" \
            else (lambda st: stamped_json(review, st))
        return self.control.export(actor, f"review_{fmt}", render,
                                   {"period": review["period"], "lang": lang, "format": fmt})

    def export_stress_report(self, actor: User, report: dict, fmt: str, lang: str) -> bytes:
        """A stress report as a file: fmt html (self-contained) or json."""
        if fmt not in ("html", "json"):
            raise InvalidValue("fmt", fmt, "must be html or json")
        render = (lambda st: stamped_html(report_html(report), st, lang).encode("utf-8")) if fmt == "html" \
            else (lambda st: stamped_json(report, st))
        return self.control.export(actor, f"stress_report_{fmt}", render,
                                   {"scenario": report["scenario"], "seed": report["seed"], "format": fmt})

    def export_audit_csv(self, actor: User, frame: pd.DataFrame, lang: str, filters: dict) -> bytes:
        """The audit entries a manager or admin is looking at, as CSV (VIEW_AUDIT and EXPORT)."""
        require(actor, Action.VIEW_AUDIT)
        return self.control.export(actor, "audit_csv", lambda st: stamped_csv(frame, st, lang),
                                   {"rows": len(frame), "filters": filters})
