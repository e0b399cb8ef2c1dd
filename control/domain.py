"""Domain types: what BidLens talks about.

Every value is a frozen dataclass validated on construction. A bad value raises
`InvalidValue`, which names the field and the value, so callers (the API, file
ingestion, the panel) can show or quarantine it without guessing.

Time is integer epoch seconds (UTC) everywhere: `*_ts` fields. A time bucket is
named by the epoch second it starts at (`bucket_ts`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class InvalidValue(ValueError):
    """A value refused on construction; names the field and the value.

    `code` and `params` say the reason as data (e.g. "above_max", {"maximum": 50}), so a page can say
    it in the user's language; `reason` is the same in English for logs, the CLI and the API."""

    def __init__(self, field_name: str, value: object, reason: str, code: str = "", **params):
        self.field = field_name
        self.value = value
        self.reason = reason
        self.code = code
        self.params = params
        super().__init__(f"{field_name}={value!r}: {reason}")

    def __reduce__(self):
        # Whole across processes (a stress or bench worker's refusal reaches its parent as raised).
        return _invalid_value, (self.field, self.value, self.reason, self.code, self.params)


def _invalid_value(field_name: str, value: object, reason: str, code: str, params: dict) -> InvalidValue:
    return InvalidValue(field_name, value, reason, code, **params)


class ConflictError(RuntimeError):
    """Someone else changed the row first (optimistic concurrency): reload and try again."""


class NotFound(LookupError):
    """The thing asked for does not exist."""


def require_finite(field_name: str, value: float, *, minimum: float | None = 0.0,
                   maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidValue(field_name, value, "must be a number", "not_a_number")
    if not math.isfinite(value):
        raise InvalidValue(field_name, value, "must be finite", "not_a_number")
    if minimum is not None and value < minimum:
        raise InvalidValue(field_name, value, f"must be >= {minimum}", "below_min", minimum=minimum)
    if maximum is not None and value > maximum:
        raise InvalidValue(field_name, value, f"must be <= {maximum}", "above_max", maximum=maximum)
    return float(value)


def require_text(field_name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(field_name, value, "must be a non-empty string", "empty_text")
    return value


# Control, format and separator characters (Unicode Cc, Cf, Zl, Zp; Python's Unicode 14): bidi overrides,
# zero-width characters and the like make two different names look the same. No text field keeps them.
INVISIBLE = re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in (
    (0x0, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD), (0x70F, 0x70F),
    (0x890, 0x891), (0x8E2, 0x8E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x2028, 0x202E), (0x2060, 0x2064),
    (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD),
    (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F))) + "]")


def require_name(field_name: str, value: object) -> str:
    """An identifier people and bidders type and compare: text without surrounding spaces or
    control or invisible characters (two names that look alike are one name)."""
    require_text(field_name, value)
    if value != value.strip():
        raise InvalidValue(field_name, value, "must not start or end with a space")
    if INVISIBLE.search(value):
        raise InvalidValue(field_name, value, "must not contain control or invisible characters")
    return value


def require_count(field_name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue(field_name, value, "must be a whole number >= 0", "not_a_count")
    return value


# The ROI floor (GMV / ad spend) below which the model's traffic goes to the manual rule pool, unless a
# campaign's guard configuration says otherwise (the brief: "predicted ROI < 2").
DEFAULT_ROI_FLOOR = 2.0


class Role(StrEnum):
    OPERATOR = "operator"
    ENGINEER = "engineer"
    MANAGER = "manager"
    ADMIN = "admin"


class DecidedBy(StrEnum):
    """Which authority decided a served decision (see control.policy)."""

    OVERRIDE = "override"
    RULE_POOL = "rule_pool"
    GUARD = "guard"      # a guard's own action on the model's traffic: a bid cut or a pause
    MODEL = "model"


class OverrideField(StrEnum):
    BID = "bid"              # yuan per click for the slot(s) in scope
    BUDGET = "budget"        # the campaign's daily budget, yuan
    AUDIENCE_ON = "audience_on"  # 1.0 = serve the audience package, 0.0 = switch it off


class OverrideStatus(StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    REJECTED = "rejected"
    REVOKED = "revoked"
    EXPIRED = "expired"


class GuardMode(StrEnum):
    """Who serves a campaign's traffic according to its guard."""

    MODEL = "model"
    TRIPPED = "tripped"          # the manual rule pool serves everything
    PROBATION = "probation"      # the pool serves, a canary share goes back to the model
    FORCED_POOL = "forced_pool"  # a manager pinned the pool; automatic rules never leave it
    FORCED_MODEL = "forced_model"  # a manager pinned the model; automatic rules never leave it


class GuardAction(StrEnum):
    """What a guard does with a campaign's traffic while it holds it (TRIPPED, PROBATION)."""

    POOL = "pool"        # the manual rule pool serves (人工规则池)
    BID_CUT = "bid_cut"  # the model serves at its bid x bid_factor (降价)
    PAUSE = "pause"      # the campaign's audience packages are off (暂停)
    ALERT = "alert"      # the guard only alerts; the model keeps the traffic (只告警, e.g. a replenishment warning)


# Modes in which the guard holds the campaign's traffic, with its action (probation: the non-canary
# share); FORCED_POOL is always the pool.
GUARD_HOLDS = frozenset({GuardMode.TRIPPED, GuardMode.PROBATION, GuardMode.FORCED_POOL})


@dataclass(frozen=True, slots=True)
class AudiencePackage:
    code: str
    name_zh: str
    name_en: str
    kind: str = "life_scene"  # life_scene | value_tier

    def __post_init__(self):
        require_name("code", self.code)
        require_text("name_zh", self.name_zh)
        require_text("name_en", self.name_en)
        if self.kind not in ("life_scene", "value_tier"):
            raise InvalidValue("kind", self.kind, "must be life_scene or value_tier")


@dataclass(frozen=True, slots=True)
class Campaign:
    campaign_id: str
    name: str
    category: str
    daily_budget: float   # yuan
    budget_cap: float     # the most a daily budget may be raised to (override bound), yuan
    avg_order_value: float  # yuan
    gross_margin: float   # share of GMV kept as gross profit, in [0, 1]
    target_roi: float = 2.0  # the bid formula divides predicted value per click by this

    def __post_init__(self):
        require_name("campaign_id", self.campaign_id)
        require_text("name", self.name)
        require_text("category", self.category)
        require_finite("daily_budget", self.daily_budget)
        require_finite("budget_cap", self.budget_cap)
        if self.budget_cap < self.daily_budget:
            raise InvalidValue("budget_cap", self.budget_cap, "must be >= daily_budget")
        require_finite("avg_order_value", self.avg_order_value)
        require_finite("gross_margin", self.gross_margin, maximum=1.0)
        require_finite("target_roi", self.target_roi)
        if self.target_roi == 0:
            raise InvalidValue("target_roi", self.target_roi, "must be > 0")


@dataclass(frozen=True, slots=True)
class BidFormula:
    """How a model version's bidder turns predicted value per click into a bid:

        bid = clip(pred_value / target_roi * pacing, min_bid, max_bid)

    (pacing is the decision's own). It belongs to the bidder that serves the version, not to the
    campaign, so it is recorded with every explained decision: an explanation never guesses it.
    `max_bid` None: no cap."""

    target_roi: float
    min_bid: float = 0.0
    max_bid: float | None = None

    def __post_init__(self):
        require_finite("target_roi", self.target_roi)
        if self.target_roi == 0:
            raise InvalidValue("target_roi", self.target_roi, "must be > 0")
        require_finite("min_bid", self.min_bid)
        if self.max_bid is not None:
            require_finite("max_bid", self.max_bid, minimum=self.min_bid)

    def bid(self, pred_value: float, pacing: float) -> float:
        paced = pred_value / self.target_roi * pacing
        return min(max(paced, self.min_bid), math.inf if self.max_bid is None else self.max_bid)

    def to_json(self) -> dict:
        return {"target_roi": self.target_roi, "min_bid": self.min_bid, "max_bid": self.max_bid}

    @classmethod
    def from_json(cls, doc) -> BidFormula:
        max_bid = doc.get("max_bid")
        return cls(float(doc["target_roi"]), float(doc.get("min_bid", 0.0)), None if max_bid is None else float(max_bid))


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    """campaign x audience package x time bucket: the unit the bidder decides for."""

    campaign_id: str
    audience_package: str
    bucket_ts: int

    def __post_init__(self):
        require_text("campaign_id", self.campaign_id)
        require_text("audience_package", self.audience_package)
        require_count("bucket_ts", self.bucket_ts)


@dataclass(frozen=True, slots=True)
class OverrideScope:
    campaign_id: str
    audience_package: str | None = None  # None: every audience package of the campaign

    def __post_init__(self):
        require_text("campaign_id", self.campaign_id)
        if self.audience_package is not None:
            require_text("audience_package", self.audience_package)

    def covers(self, campaign_id: str, audience_package: str) -> bool:
        return self.campaign_id == campaign_id and self.audience_package in (None, audience_package)


@dataclass(frozen=True, slots=True)
class Override:
    override_id: int
    scope: OverrideScope
    field: OverrideField
    value: float
    reason: str
    proposed_by: str
    proposed_ts: int
    expires_ts: int
    status: OverrideStatus = OverrideStatus.PROPOSED
    reviewed_by: str | None = None
    reviewed_ts: int | None = None
    review_comment: str = ""
    version: int = 1
    authors: tuple[str, ...] = ()  # everyone who proposed or edited any version: none of them may review it

    def __post_init__(self):
        require_finite("value", self.value)
        if self.field is OverrideField.AUDIENCE_ON and self.value not in (0.0, 1.0):
            raise InvalidValue("value", self.value, "audience_on takes 0 or 1")
        require_text("reason", self.reason)
        require_text("proposed_by", self.proposed_by)
        require_count("proposed_ts", self.proposed_ts)
        require_count("expires_ts", self.expires_ts)
        if self.expires_ts <= self.proposed_ts:
            raise InvalidValue("expires_ts", self.expires_ts, "must be after proposed_ts")

    def in_force(self, now_ts: int) -> bool:
        return self.status is OverrideStatus.APPROVED and now_ts < self.expires_ts


@dataclass(frozen=True, slots=True)
class GuardState:
    """A campaign's guard as the effective policy needs it; guard internals live in guards/."""

    campaign_id: str
    mode: GuardMode = GuardMode.MODEL
    canary_share: float = 0.0  # in PROBATION: share of traffic served by the model
    event_id: int | None = None  # the guard event that put it in this mode
    action: GuardAction = GuardAction.POOL  # what the guard does while it holds the traffic
    bid_factor: float = 1.0    # BID_CUT: the model's bid is multiplied by this, in (0, 1]

    def __post_init__(self):
        require_text("campaign_id", self.campaign_id)
        require_finite("canary_share", self.canary_share, maximum=1.0)
        if not isinstance(self.action, GuardAction):
            raise InvalidValue("action", self.action, f"must be one of {[a.value for a in GuardAction]}")
        require_finite("bid_factor", self.bid_factor, maximum=1.0)
        if self.bid_factor <= 0:
            raise InvalidValue("bid_factor", self.bid_factor, "must be > 0")

    @property
    def alert_only(self) -> bool:
        """Tripped (or in probation) with the alert action: it warns, the model keeps the traffic."""
        return self.action is GuardAction.ALERT and self.mode in (GuardMode.TRIPPED, GuardMode.PROBATION)

    @property
    def holds(self) -> bool:
        """Whether the guard, not the model, decides the (non-canary) traffic."""
        return self.mode in GUARD_HOLDS and not self.alert_only

    @property
    def effective_action(self) -> GuardAction | None:
        """The action on the traffic now: None while the model serves; FORCED_POOL is the pool."""
        if not self.holds:
            return None
        return GuardAction.POOL if self.mode is GuardMode.FORCED_POOL else self.action


# When several guards watch a campaign, the most restrictive mode decides; of two guards in the same
# mode, the action that takes more from the model (pause, then the pool, then a bid cut). A guard that only
# alerts takes nothing: it ranks as the model, below any guard that holds the traffic.
MODE_SEVERITY = {GuardMode.FORCED_MODEL: 0, GuardMode.MODEL: 1, GuardMode.PROBATION: 2,
                 GuardMode.TRIPPED: 3, GuardMode.FORCED_POOL: 4}
ACTION_SEVERITY = {GuardAction.ALERT: -1, GuardAction.BID_CUT: 0, GuardAction.POOL: 1, GuardAction.PAUSE: 2}


def _severity(state: GuardState) -> tuple[int, int]:
    return MODE_SEVERITY[GuardMode.MODEL if state.alert_only else state.mode], ACTION_SEVERITY[state.action]


def most_restrictive(states: Iterable[GuardState]) -> dict[str, GuardState]:
    """Per campaign, the most restrictive of its guards' states (what the effective policy reads)."""
    out: dict[str, GuardState] = {}
    for state in states:
        current = out.get(state.campaign_id)
        if current is None or _severity(state) > _severity(current):
            out[state.campaign_id] = state
    return out


@dataclass(frozen=True, slots=True)
class RuleAnswer:
    """The manual rule pool's decision for one slot (computed by guards.rule_pool)."""

    rule_id: str
    bid: float
    audience_on: bool = True
    budget_cap: float | None = None

    def __post_init__(self):
        require_text("rule_id", self.rule_id)
        require_finite("bid", self.bid)
        if self.budget_cap is not None:
            require_finite("budget_cap", self.budget_cap)


@dataclass(frozen=True, slots=True)
class User:
    username: str
    display_name: str
    role: Role
    active: bool = True
    grants: frozenset[str] = frozenset()  # actions granted beyond the role's (control.permissions.GRANTABLE)

    def __post_init__(self):
        require_text("username", self.username)
        require_text("display_name", self.display_name)
        if not isinstance(self.role, Role):
            raise InvalidValue("role", self.role, f"must be one of {[r.value for r in Role]}")
        if not isinstance(self.grants, frozenset) or not all(isinstance(g, str) for g in self.grants):
            raise InvalidValue("grants", self.grants, "must be a frozenset of action names")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    entry_id: int
    ts: int
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict | None
    after: dict | None
    prev_hash: str
    hash: str
    key_id: str | None = None  # the key that signed it (control.audit.key_id); None: from before signing


class RuleAction(StrEnum):
    FIXED_BID = "fixed_bid"        # bid = value, yuan per click
    MULTIPLIER = "multiplier"      # bid = value x the slot's reference bid
    BUDGET_CAP = "budget_cap"      # the campaign's spend per day may not pass value, yuan
    AUDIENCE_OFF = "audience_off"  # do not serve the audience package


@dataclass(frozen=True, slots=True)
class Rule:
    """One human-written rule of the manual rule pool (人工规则池).

    Matches a campaign (or any, None), an audience package (or any) and an hour
    range [hour_from, hour_to) of the promotion day; the highest priority match wins
    per action kind.
    """

    rule_id: str
    action: RuleAction
    value: float = 0.0
    priority: int = 0
    campaign_id: str | None = None
    audience_package: str | None = None
    hour_from: int = 0
    hour_to: int = 24
    note: str = ""

    def __post_init__(self):
        require_text("rule_id", self.rule_id)
        if not isinstance(self.action, RuleAction):
            raise InvalidValue("action", self.action, f"must be one of {[a.value for a in RuleAction]}")
        require_finite("value", self.value)
        if self.action is RuleAction.MULTIPLIER and self.value == 0:
            raise InvalidValue("value", self.value, "a multiplier must be > 0")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise InvalidValue("priority", self.priority, "must be a whole number")
        if not (isinstance(self.hour_from, int) and 0 <= self.hour_from < 24):
            raise InvalidValue("hour_from", self.hour_from, "must be a whole hour in 0..23")
        if not (isinstance(self.hour_to, int) and self.hour_from < self.hour_to <= 24):
            raise InvalidValue("hour_to", self.hour_to, "must be a whole hour after hour_from, <= 24")

    def matches(self, campaign_id: str, audience_package: str, hour: int) -> bool:
        return (self.campaign_id in (None, campaign_id)
                and self.audience_package in (None, audience_package)
                and self.hour_from <= hour < self.hour_to)
