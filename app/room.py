"""The control room: everything the panel shows and does, through one permission-checked door.

Every read takes the person asking and checks, in the core (control.permissions),
that they may see it: the audit trail needs VIEW_AUDIT, the rest VIEW. Actions go
to Control and GuardService, which check their own permissions. The pages never
open a connection or reach the store, the guards' stores or the explanation
store themselves (tests/test_architecture.py holds them to it).

Reads that every refresh repeats are cached here, keyed so a new bucket (or a new
campaign catalogue) is seen at once: the slots of a bucket, the catalogue, the
day's aggregates (app.board.LiveAggregates).
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
from app.service import Control
from control.audit import ChainReport
from control.domain import (
    AuditEntry,
    Campaign,
    InvalidValue,
    Override,
    OverrideField,
    OverrideScope,
    OverrideStatus,
    User,
)
from control.overrides import value_range
from control.permissions import Action, require
from control.policy import KillSwitch
from explain.store import DecisionBreakdown, WindowExplanations, decision_breakdown, load_window
from guards.alerts import metrics, outbox, templates
from guards.alerts.core import AlertRecord
from guards.alerts.events import AlertKind
from guards.config import GuardSettings
from guards.pool_store import ACTIVE, PoolVersion, active_version, check_pool, list_versions
from guards.service import GuardService
from guards.threshold_store import ThresholdReader
from guards.thresholds import EDITABLE, ThresholdEdit
from store import repo

_SLOT_CACHE = 8          # buckets whose slots stay cached (the board, the override page, a look back)
CATALOGUE_TTL_S = 60.0   # a new campaign shows within a minute; reloading 1,000 every refresh is not free


@dataclass(frozen=True)
class OverrideForm:
    """What the override form offers for a scope and field: the range the core will accept, a start value."""

    low: float
    high: float | None          # None: no upper bound but the field's own (audience on/off)
    default: float
    model_bid: float | None     # the model's bid the bid bound is a multiple of


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
        self._aggregates = board.LiveAggregates()
        self._lock = threading.Lock()
        self._slots: OrderedDict[int, pd.DataFrame] = OrderedDict()
        self._catalogue: tuple[float, dict[str, Campaign], dict[str, tuple[str, str]]] | None = None
        self._warm: threading.Thread | None = None

    @property
    def settings(self):
        return self.control.settings

    def _read(self, actor: User, action: Action = Action.VIEW):
        require(actor, action)
        return self.control.engine.connect()

    # --- the day's aggregates, warmed once in the background --------------------------------------

    def warm(self) -> None:
        """Sum the day once in the background as soon as the panel serves its first page (the login), so
        the first live board does not wait for it (~20 s for a full day of 1,000 campaigns)."""
        with self._lock:
            if self._warm is not None:
                return

            def run() -> None:
                with self.control.engine.connect() as conn:
                    self._aggregates.refresh(conn)

            self._warm = threading.Thread(target=run, daemon=True, name="bidlens-board-warm")
            self._warm.start()

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
            return board.build_board(conn, self._aggregates, known, slots, newest, self.control.clock(),
                                     window_s, floors)

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

    # --- explanations ------------------------------------------------------------------------------

    def slot_buckets(self, actor: User, campaign_id: str, package: str) -> list[int]:
        with self._read(actor) as conn:
            return explorer.slot_buckets(conn, campaign_id, package)

    def breakdown(self, actor: User, campaign_id: str, package: str, bucket: int) -> DecisionBreakdown | None:
        """The slot's decision at (or just before) `bucket` in bid units, against its campaign's ROI floor."""
        floor = self.roi_floors(actor, [campaign_id])[campaign_id]
        with self._read(actor) as conn:
            decision_id = explorer.find_decision_id(conn, campaign_id, package, bucket)
            return None if decision_id is None else decision_breakdown(conn, decision_id, roi_floor=floor)

    def explanation_window(self, actor: User, start_ts: int, end_ts: int,
                           campaign_id: str | None = None) -> WindowExplanations:
        with self._read(actor) as conn:
            return load_window(conn, start_ts, end_ts, campaign_id=campaign_id)

    def decision_model(self, actor: User, campaign_id: str, package: str, bucket: int) -> tuple[str, dict | None]:
        with self._read(actor) as conn:
            return explorer.decision_model(conn, explorer.find_decision_id(conn, campaign_id, package, bucket))

    # --- overrides ---------------------------------------------------------------------------------

    def overrides(self, actor: User, statuses: list[OverrideStatus]) -> list[Override]:
        require(actor, Action.VIEW)
        return self.control.overrides(statuses)

    def override(self, actor: User, override_id: int) -> Override:
        with self._read(actor) as conn:
            return repo.get_override(conn, override_id)

    def override_form(self, actor: User, campaign_id: str, audience_package: str | None,
                      field: OverrideField) -> OverrideForm:
        """The values the core will accept for this scope and field (the same bound it enforces), and a start."""
        require(actor, Action.VIEW)
        campaign = self.campaigns(actor)[campaign_id]
        with self.control.engine.connect() as conn:
            model_bid = self.control.latest_model_bid(conn, OverrideScope(campaign_id, audience_package))
        low, high = value_range(field, model_bid=model_bid, campaign=campaign, bounds=self.control.bounds)
        if field is OverrideField.BID:
            default = round(min(model_bid or 0.0, high), 3) or 1.0  # a model bid above the cap is not a start
        elif field is OverrideField.BUDGET:
            default = campaign.daily_budget
        else:
            default = 0.0
        return OverrideForm(low, high, default, model_bid)

    # --- audit -------------------------------------------------------------------------------------

    def audit_trail(self, actor: User) -> tuple[ChainReport, list[AuditEntry]]:
        """The chain's verdict and every entry, oldest first (managers and admins)."""
        with self._read(actor, Action.VIEW_AUDIT) as conn:
            entries = repo.load_audit(conn)
        return self.control.verify_audit(), entries
