"""The event -> alert contract: what a guard (or the control service) hands to the outbox.

An `AlertEvent` says what happened; `enqueue_alert` (guards.alerts.outbox) turns it
into outbox rows in the caller's transaction. The kind decides how the event is
treated: a *firing* kind opens (or repeats) a condition, a *repeat* kind only counts
on the open condition, an *update* kind changes it (one message saying what changed),
a *resolving* kind closes it and is announced once, an *info* kind is simply delivered.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum

from control.domain import InvalidValue, require_count, require_text


class AlertKind(StrEnum):
    GUARD_TRIPPED = "guard_tripped"
    GUARD_RESTORED = "guard_restored"
    PROBATION_FAILED = "probation_failed"
    ACTION_CHANGED = "action_changed"
    DATA_STALE = "data_stale"
    DATA_FRESH = "data_fresh"
    KILL_SWITCH_ON = "kill_switch_on"
    KILL_SWITCH_OFF = "kill_switch_off"
    PULL_ITEM = "pull_item"              # the competitor price guard paused a campaign (下架)
    ITEM_RESTORED = "item_restored"      # ... and put it back on sale
    LOW_STOCK = "low_stock"              # the safety-stock guard: replenish (补货)
    STOCK_RECOVERED = "stock_recovered"  # ... stock covers the safety stock again
    OVERRIDE_PENDING = "override_pending"
    OVERRIDE_APPROVED = "override_approved"
    OVERRIDE_REJECTED = "override_rejected"
    OVERRIDE_REVOKED = "override_revoked"
    OVERRIDE_EXPIRED = "override_expired"
    REMINDER = "reminder"
    DAY_OVER = "day_over"
    MODEL_LAUNCHED = "model_launched"        # a launch approved (app.launch); flagged when its gate failed
    MODEL_ROLLED_BACK = "model_rolled_back"  # the previous model version serves again
    TEST = "test"


class AlertPhase(StrEnum):
    FIRING = "firing"        # opens a condition; repeats only after the repeat interval
    REPEAT = "repeat"        # counted on the open condition, never a message of its own while it is open
    UPDATE = "update"        # changes the open condition: folded into its alert if not sent yet, else counted on it
    RESOLVING = "resolving"  # closes the open condition; announced once
    INFO = "info"            # delivered as is


PHASE = {
    AlertKind.GUARD_TRIPPED: AlertPhase.FIRING,
    AlertKind.DATA_STALE: AlertPhase.FIRING,
    AlertKind.KILL_SWITCH_ON: AlertPhase.FIRING,
    AlertKind.PULL_ITEM: AlertPhase.FIRING,
    AlertKind.LOW_STOCK: AlertPhase.FIRING,
    AlertKind.OVERRIDE_PENDING: AlertPhase.FIRING,
    AlertKind.PROBATION_FAILED: AlertPhase.REPEAT,
    AlertKind.ACTION_CHANGED: AlertPhase.UPDATE,
    AlertKind.GUARD_RESTORED: AlertPhase.RESOLVING,
    AlertKind.ITEM_RESTORED: AlertPhase.RESOLVING,
    AlertKind.STOCK_RECOVERED: AlertPhase.RESOLVING,
    AlertKind.DATA_FRESH: AlertPhase.RESOLVING,
    AlertKind.KILL_SWITCH_OFF: AlertPhase.RESOLVING,
    AlertKind.OVERRIDE_APPROVED: AlertPhase.INFO,
    AlertKind.OVERRIDE_REJECTED: AlertPhase.INFO,
    AlertKind.OVERRIDE_REVOKED: AlertPhase.INFO,
    AlertKind.OVERRIDE_EXPIRED: AlertPhase.INFO,
    AlertKind.REMINDER: AlertPhase.INFO,
    AlertKind.DAY_OVER: AlertPhase.INFO,
    AlertKind.MODEL_LAUNCHED: AlertPhase.INFO,
    AlertKind.MODEL_ROLLED_BACK: AlertPhase.INFO,
    AlertKind.TEST: AlertPhase.INFO,
}
# Kinds whose alert holds its condition open until it resolves (a repeat opens it when nothing is open).
OPENING_KINDS = tuple(k.value for k, phase in PHASE.items() if phase in (AlertPhase.FIRING, AlertPhase.REPEAT))


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Driver:
    """One SHAP driver of the drop, as the explain module reports it (delta in bid units, yuan)."""

    feature: str
    display_zh: str
    display_en: str
    delta: float


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """Something an operator must hear about.

    condition_key names the condition for repeat and resolution: a firing event
    and the resolving event that ends it share it (default "<guard>:<campaign_id>").
    member: the part of a shared condition this event is about (e.g. one guard's view of
    one campaign's feed in the one `data:stale` condition): a firing adds it to the open
    condition, a resolving event removes it, and the condition resolves when none is left.
    closes: a condition this event ends without an announcement of its own (e.g. an
    approval ends the "awaiting approval" condition and tells the proposer itself).
    notify: usernames the event is addressed to (mentioned when the config knows them).
    payload holds the figures the templates show; known keys: pred_roi, calibrated_roi
    (a model_calibration trip's calibrated ROI of the clicks bought), realised_roi,
    floor, spend_at_risk (yuan), action (what the guard did, zh/en dict or text),
    drivers (list of {feature, display_zh, display_en, delta}), detail (free text);
    the competitor price evidence competitor_price_drop (share), max_drop,
    competitor_price and competitor_reference_price (yuan); the stock evidence
    days_of_stock, min_days, stock_units and sales_per_day.
    """

    kind: AlertKind
    severity: Severity
    occurred_ts: int
    campaign_id: str | None = None
    guard: str | None = None
    condition_key: str = ""
    payload: dict = field(default_factory=dict)
    member: str = ""
    closes: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        try:
            object.__setattr__(self, "kind", AlertKind(self.kind))
        except ValueError:
            raise InvalidValue("kind", self.kind, f"must be one of {[k.value for k in AlertKind]}") from None
        try:
            object.__setattr__(self, "severity", Severity(self.severity))
        except ValueError:
            raise InvalidValue("severity", self.severity,
                               f"must be one of {[s.value for s in Severity]}") from None
        require_count("occurred_ts", self.occurred_ts)
        if self.campaign_id is not None:
            require_text("campaign_id", self.campaign_id)
        if self.guard is not None:
            require_text("guard", self.guard)
        if not self.condition_key:
            object.__setattr__(self, "condition_key", f"{self.guard or '-'}:{self.campaign_id or '-'}")
        object.__setattr__(self, "notify", tuple(self.notify))
        for name in self.notify:
            require_text("notify", name)
        if not isinstance(self.payload, dict):
            raise InvalidValue("payload", self.payload, "must be a dict")
        try:
            json.dumps(self.payload)
        except (TypeError, ValueError):
            raise InvalidValue("payload", "<not JSON>", "must be JSON-serialisable") from None
        for i, d in enumerate(self.payload.get("drivers") or []):
            if not isinstance(d, dict) or not {"feature", "delta"} <= d.keys():
                raise InvalidValue(f"payload.drivers[{i}]", d, "needs feature and delta")

    @property
    def phase(self) -> AlertPhase:
        return PHASE[self.kind]

    @property
    def event_key(self) -> str:
        """Identity of the event: the same event enqueued twice is one alert."""
        ident = [self.kind.value, self.condition_key, self.occurred_ts, self.campaign_id, self.guard]
        if self.member:  # members of a shared condition are events of their own
            ident.append(self.member)
        return hashlib.sha256(json.dumps(ident, ensure_ascii=False).encode()).hexdigest()[:32]

    def drivers(self) -> list[Driver]:
        return [Driver(str(d["feature"]), str(d.get("display_zh") or d["feature"]),
                       str(d.get("display_en") or d["feature"]), float(d["delta"]))
                for d in self.payload.get("drivers") or []]
