"""Override lifecycle under the four-eyes rule, as pure functions.

propose → (edit →)* approve | reject; approved → revoke | expire.

- Only operators, managers and admins propose; only managers approve or reject.
- Nobody approves a proposal they proposed or edited, in any version (four eyes), whatever their role.
- Bounds refuse absurd values before a proposal exists.
- Editing a proposal resets it to `proposed` (an approval never covers a value the
  approver did not see); an approved override cannot be edited, only revoked.
- An approved override expires by itself at `expires_ts` (`expire_due`).

Each function returns the new Override; persistence (with its version check) and
the audit entry are the caller's (app.service).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass

from control.config import Settings
from control.domain import (
    Campaign,
    InvalidValue,
    Override,
    OverrideField,
    OverrideScope,
    OverrideStatus,
    User,
)
from control.permissions import Action, require


class OverrideStateError(ValueError):
    """The override is not in a state that allows this step."""


class FourEyesViolation(PermissionError):
    """Someone tried to approve their own override."""


@dataclass(frozen=True, slots=True)
class OverrideBounds:
    """Limits that refuse absurd override values."""

    max_bid_multiple: float = 3.0   # a bid may be at most this many times the model's bid ...
    max_bid_abs: float = 50.0       # ... and never above this, yuan per click
    min_bid: float = 0.01           # yuan per click; switch the audience off instead of bidding 0
    max_duration_s: int = 7 * 24 * 3600


def bounds_for(settings: Settings) -> OverrideBounds:
    """The bounds a deployment's settings set (BIDLENS_MAX_BID, _MAX_BID_MULTIPLE, _MAX_OVERRIDE_HOURS)."""
    return OverrideBounds(max_bid_multiple=settings.max_bid_multiple, max_bid_abs=settings.max_bid,
                          max_duration_s=settings.max_override_hours * 3600)


def value_range(field: OverrideField, *, model_bid: float | None, campaign: Campaign,
                bounds: OverrideBounds) -> tuple[float, float]:
    """(lowest, highest) value `check_bounds` accepts for the field (a budget must be above its lowest).

    What a form offers is what the core enforces: both read the same bounds here."""
    if field is OverrideField.BID:
        high = bounds.max_bid_abs
        if model_bid is not None and model_bid > 0:
            high = min(high, bounds.max_bid_multiple * model_bid)
        return bounds.min_bid, high
    if field is OverrideField.BUDGET:
        return 0.0, campaign.budget_cap
    return 0.0, 1.0


def check_bounds(field: OverrideField, value: float, *, model_bid: float | None,
                 campaign: Campaign, bounds: OverrideBounds) -> None:
    """Raise InvalidValue (naming field and value, with a code a page can translate) when `value` is out
    of bounds."""
    if field is OverrideField.BID:
        if value < bounds.min_bid:
            raise InvalidValue("value", value, f"bid below the minimum {bounds.min_bid} yuan", "bid_below_min",
                               minimum=bounds.min_bid)
        if value > bounds.max_bid_abs:
            raise InvalidValue("value", value, f"bid above the absolute cap {bounds.max_bid_abs} yuan",
                               "bid_above_cap", cap=bounds.max_bid_abs)
        if model_bid is not None and model_bid > 0 and value > bounds.max_bid_multiple * model_bid:
            raise InvalidValue(
                "value", value, f"bid above {bounds.max_bid_multiple}x the model's bid {model_bid:.4f} yuan",
                "bid_above_multiple", multiple=bounds.max_bid_multiple, model_bid=model_bid,
                high=bounds.max_bid_multiple * model_bid)
    elif field is OverrideField.BUDGET:
        if value <= 0:
            raise InvalidValue("value", value, "budget must be > 0 yuan", "budget_not_positive")
        if value > campaign.budget_cap:
            raise InvalidValue("value", value, f"budget above the campaign's cap {campaign.budget_cap:.2f} yuan",
                               "budget_above_cap", cap=campaign.budget_cap)
    elif value not in (0.0, 1.0):
        raise InvalidValue("value", value, "audience_on takes 0 or 1", "audience_zero_one")


def check_duration(expires_ts: int, now_ts: int, bounds: OverrideBounds) -> None:
    """An override lasts until a time after now and at most `max_duration_s` ahead."""
    if expires_ts <= now_ts:
        raise InvalidValue("expires_ts", expires_ts, "must be in the future", "not_in_future")
    if expires_ts - now_ts > bounds.max_duration_s:
        raise InvalidValue("expires_ts", expires_ts, f"more than {bounds.max_duration_s // 3600} h ahead",
                           "too_far_ahead", hours=bounds.max_duration_s // 3600)


@dataclass(frozen=True, slots=True)
class ProposalCheck:
    """A proposal form read from its text: the values, or the problems (InvalidValue each, naming the
    field and what was typed) that keep it from being submitted."""

    value: float | None
    hours: int | None
    problems: tuple[InvalidValue, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _number(text: str) -> float | None:
    try:
        number = float(text.strip().replace(",", ""))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def check_proposal(field: OverrideField, value_text: str, hours_text: str, reason: str, *,
                   model_bid: float | None, campaign: Campaign, bounds: OverrideBounds) -> ProposalCheck:
    """What the form says, checked as `propose` will check it: a number in bounds, whole hours from 1 to
    the longest an override may last, a reason. Nothing typed is replaced by anything else."""
    problems: list[InvalidValue] = []
    value = _number(value_text)
    if value is None:
        problems.append(InvalidValue("value", value_text, "not a number", "not_a_number"))
    else:
        try:
            check_bounds(field, value, model_bid=model_bid, campaign=campaign, bounds=bounds)
        except InvalidValue as exc:
            problems.append(exc)
            value = None
    hours = _number(hours_text)
    longest = bounds.max_duration_s // 3600
    if hours is None or hours != int(hours):
        problems.append(InvalidValue("hours", hours_text, "not a whole number of hours", "not_whole_hours"))
        hours = None
    elif not 1 <= hours <= longest:
        problems.append(InvalidValue("hours", hours_text, f"must be 1 to {longest} h", "hours_range",
                                     minimum=1, maximum=longest))
        hours = None
    if not reason.strip():
        problems.append(InvalidValue("reason", reason, "must be a non-empty string", "empty_text"))
    return ProposalCheck(value, None if hours is None else int(hours), tuple(problems))


def propose(actor: User, *, override_id: int, scope: OverrideScope, field: OverrideField,
            value: float, reason: str, expires_ts: int, now_ts: int, campaign: Campaign,
            model_bid: float | None, bounds: OverrideBounds) -> Override:
    require(actor, Action.PROPOSE_OVERRIDE)
    if scope.campaign_id != campaign.campaign_id:
        raise InvalidValue("scope.campaign_id", scope.campaign_id, "does not match the campaign")
    check_duration(expires_ts, now_ts, bounds)
    check_bounds(field, value, model_bid=model_bid, campaign=campaign, bounds=bounds)
    return Override(override_id=override_id, scope=scope, field=field, value=float(value),
                    reason=reason, proposed_by=actor.username, proposed_ts=now_ts,
                    expires_ts=expires_ts, authors=(actor.username,))


def edit(override: Override, actor: User, *, value: float, reason: str, expires_ts: int,
         now_ts: int, campaign: Campaign, model_bid: float | None, bounds: OverrideBounds) -> Override:
    """A new value for a proposal (or a rejected one): back to `proposed`, review cleared."""
    require(actor, Action.PROPOSE_OVERRIDE)
    if override.status not in (OverrideStatus.PROPOSED, OverrideStatus.REJECTED):
        raise OverrideStateError(f"override {override.override_id} is {override.status.value}; "
                                 "only a proposed or rejected override can be edited")
    check_duration(expires_ts, now_ts, bounds)
    check_bounds(override.field, value, model_bid=model_bid, campaign=campaign, bounds=bounds)
    return dataclasses.replace(
        override, value=float(value), reason=reason, expires_ts=expires_ts,
        proposed_by=actor.username, proposed_ts=now_ts, status=OverrideStatus.PROPOSED,
        reviewed_by=None, reviewed_ts=None, review_comment="",
        authors=override.authors + ((actor.username,) if actor.username not in override.authors else ()))


def _review(override: Override, actor: User, status: OverrideStatus, comment: str,
            now_ts: int) -> Override:
    require(actor, Action.APPROVE_OVERRIDE)
    if override.status is not OverrideStatus.PROPOSED:
        raise OverrideStateError(f"override {override.override_id} is {override.status.value}, "
                                 "not proposed")
    if actor.username == override.proposed_by or actor.username in override.authors:
        raise FourEyesViolation(f"{actor.username} proposed or edited override {override.override_id} "
                                "and cannot review it (four-eyes rule)")
    return dataclasses.replace(override, status=status, reviewed_by=actor.username,
                               reviewed_ts=now_ts, review_comment=comment)


def approve(override: Override, actor: User, now_ts: int, comment: str = "") -> Override:
    if now_ts >= override.expires_ts:
        raise OverrideStateError(f"override {override.override_id} expired before approval")
    return _review(override, actor, OverrideStatus.APPROVED, comment, now_ts)


def reject(override: Override, actor: User, now_ts: int, comment: str = "") -> Override:
    return _review(override, actor, OverrideStatus.REJECTED, comment, now_ts)


def revoke(override: Override, actor: User, now_ts: int, comment: str = "") -> Override:
    """Withdraw a proposal (its proposer or a manager) or end an approved override (a manager)."""
    if override.status not in (OverrideStatus.PROPOSED, OverrideStatus.APPROVED):
        raise OverrideStateError(f"override {override.override_id} is {override.status.value}; "
                                 "nothing to revoke")
    own_proposal = override.status is OverrideStatus.PROPOSED and actor.username == override.proposed_by
    if not own_proposal:
        require(actor, Action.REVOKE_OVERRIDE)
    return dataclasses.replace(override, status=OverrideStatus.REVOKED, reviewed_by=actor.username,
                               reviewed_ts=now_ts, review_comment=comment)


def expire_due(overrides: Iterable[Override], now_ts: int) -> list[Override]:
    """The approved or proposed overrides whose time is up, now marked expired."""
    return [dataclasses.replace(o, status=OverrideStatus.EXPIRED)
            for o in overrides
            if o.status in (OverrideStatus.APPROVED, OverrideStatus.PROPOSED) and now_ts >= o.expires_ts]

