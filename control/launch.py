"""Model versions and their launch under the four-eyes rule, as pure functions.

A version's lifecycle: registered -> gated (a gate report is stored) -> approved -> serving -> retired.

- Only an approved version may serve: a manager approved its launch once (`SERVABLE`: approved
  or serving). A version that served and was replaced stays approved (the rollback target).
- An engineer (or a manager) requests the launch of a gated version, with a reason and optionally a
  rollout share; a manager approves or rejects it, never the requester; the approver sees the gate's
  verdict, and a failing one needs a written reason (the audit and the alert flag it).
- Approval makes the version serve (with a rollout share below 1, beside the previous version until
  the guard worker widens it); the previous version goes back to approved once it no longer serves.
- Rollback is one action: the live launch ends, the previous version serves again.

Each function returns new values; persistence (with a version check), the audit entry and the alert
are the caller's (app.launch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from control.domain import InvalidValue, User, require_text
from control.gate import Verdict
from control.overrides import FourEyesViolation
from control.permissions import Action, require


class VersionStatus(StrEnum):
    REGISTERED = "registered"
    GATED = "gated"        # a gate report is stored
    APPROVED = "approved"  # a manager approved a launch of it; may serve
    SERVING = "serving"    # the policy names it (for a rollout share, or all traffic)
    RETIRED = "retired"    # never to serve again


SERVABLE = frozenset({VersionStatus.APPROVED, VersionStatus.SERVING})


class LaunchStatus(StrEnum):
    REQUESTED = "requested"
    LIVE = "live"                # approved: its version serves (the one live launch)
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    SUPERSEDED = "superseded"    # a later launch replaced it
    ROLLED_BACK = "rolled_back"


class LaunchStateError(ValueError):
    """The version or launch is not in a state that allows this step."""


@dataclass(frozen=True, slots=True)
class ModelVersion:
    model_version: str
    status: VersionStatus = VersionStatus.REGISTERED
    gate_id: int | None = None       # the newest gate report
    verdict: Verdict | None = None   # its verdict
    version: int = 1                 # optimistic concurrency


@dataclass(frozen=True, slots=True)
class Launch:
    launch_id: int
    model_version: str
    previous_version: str | None     # what served when it was requested (the rollback target)
    gate_id: int
    verdict: Verdict
    requested_by: str
    requested_ts: int
    reason: str
    rollout_share: float = 1.0       # share of slots it serves first (1: all at once)
    status: LaunchStatus = LaunchStatus.REQUESTED
    share: float = 0.0               # share it serves now (live)
    share_ts: int = 0                # since when it serves that share
    reviewed_by: str | None = None
    reviewed_ts: int | None = None
    review_comment: str = ""
    version: int = 1

    @property
    def rolling_out(self) -> bool:
        return self.status is LaunchStatus.LIVE and self.share < 1.0


def gated(model: ModelVersion, gate_id: int, verdict: Verdict) -> ModelVersion:
    """A gate report stored for the version: registered becomes gated; a launched version keeps its status."""
    if model.status is VersionStatus.RETIRED:
        raise LaunchStateError(f"model {model.model_version} is retired; register a new version")
    status = VersionStatus.GATED if model.status is VersionStatus.REGISTERED else model.status
    return dataclasses.replace(model, status=status, gate_id=gate_id, verdict=verdict)


def request_launch(actor: User, model: ModelVersion, *, launch_id: int, serving: str | None, reason: str,
                   rollout_share: float, now_ts: int, pending: bool) -> Launch:
    """An engineer asks to launch a gated (or a standby approved) version. `serving`: the version that
    serves now; `pending`: whether the version already has an open request."""
    require(actor, Action.REQUEST_LAUNCH)
    if model.status not in (VersionStatus.GATED, VersionStatus.APPROVED) or model.gate_id is None:
        raise LaunchStateError(f"model {model.model_version} is {model.status.value}; only a gated version "
                               "(run `bidlens model gate` first) or a standby approved one can be launched")
    if pending:
        raise LaunchStateError(f"model {model.model_version} already has a launch request waiting for review")
    require_text("reason", reason)
    if isinstance(rollout_share, bool) or not isinstance(rollout_share, (int, float)) \
            or not 0.0 < rollout_share <= 1.0:
        raise InvalidValue("rollout_share", rollout_share, "must be in (0, 1]: the share of slots it serves first",
                           "share_range")
    if rollout_share < 1.0 and serving is None:
        raise InvalidValue("rollout_share", rollout_share, "a rollout needs a serving version to compare with",
                           "rollout_needs_serving")
    return Launch(launch_id, model.model_version, serving, model.gate_id, model.verdict or Verdict.FAIL,
                  actor.username, now_ts, reason, float(rollout_share))


def _review(launch: Launch, actor: User) -> None:
    require(actor, Action.APPROVE_LAUNCH)
    if launch.status is not LaunchStatus.REQUESTED:
        raise LaunchStateError(f"launch {launch.launch_id} is {launch.status.value}, not requested")
    if actor.username == launch.requested_by:
        raise FourEyesViolation(f"{actor.username} requested launch {launch.launch_id} "
                                "and cannot review it (four-eyes rule)")


def approve_launch(launch: Launch, actor: User, now_ts: int, comment: str, *, serving: str | None,
                   model: ModelVersion) -> Launch:
    """A manager (not the requester) approves: the launch goes live. A failing verdict needs a written
    reason; the version must still be the gated one reviewed, and the serving version the one the
    request was made against."""
    _review(launch, actor)
    if model.gate_id != launch.gate_id:
        raise LaunchStateError(f"model {launch.model_version} was gated again since the request "
                               f"(report {model.gate_id}, the request saw {launch.gate_id}); request again")
    if model.status not in (VersionStatus.GATED, VersionStatus.APPROVED):
        raise LaunchStateError(f"model {launch.model_version} is {model.status.value}")
    if serving != launch.previous_version:
        raise LaunchStateError(f"the serving version changed since the request (now {serving}, "
                               f"then {launch.previous_version}); request again")
    if launch.verdict is Verdict.FAIL and not comment.strip():
        raise InvalidValue("comment", comment, "the gate's verdict is fail: approving it needs a written reason",
                           "fail_needs_reason")
    return dataclasses.replace(launch, status=LaunchStatus.LIVE, share=launch.rollout_share, share_ts=now_ts,
                               reviewed_by=actor.username, reviewed_ts=now_ts, review_comment=comment)


def reject_launch(launch: Launch, actor: User, now_ts: int, comment: str) -> Launch:
    _review(launch, actor)
    return dataclasses.replace(launch, status=LaunchStatus.REJECTED, reviewed_by=actor.username,
                               reviewed_ts=now_ts, review_comment=comment)


def withdraw_launch(launch: Launch, actor: User, now_ts: int) -> Launch:
    """The requester takes a waiting request back (or a manager does)."""
    if launch.status is not LaunchStatus.REQUESTED:
        raise LaunchStateError(f"launch {launch.launch_id} is {launch.status.value}, not requested")
    if actor.username != launch.requested_by:
        require(actor, Action.APPROVE_LAUNCH)
    return dataclasses.replace(launch, status=LaunchStatus.WITHDRAWN, reviewed_by=actor.username,
                               reviewed_ts=now_ts)


def rollback(launch: Launch, actor: User | None, now_ts: int, reason: str) -> Launch:
    """End the live launch: its previous version serves again. `actor` None is the guard worker ending
    a rollout the evidence went against."""
    if actor is not None:
        require(actor, Action.ROLLBACK_LAUNCH)
    if launch.status is not LaunchStatus.LIVE:
        raise LaunchStateError(f"launch {launch.launch_id} is {launch.status.value}, not live")
    if launch.previous_version is None:
        raise LaunchStateError(f"launch {launch.launch_id} replaced nothing: there is no version to roll back to")
    require_text("reason", reason)
    return dataclasses.replace(launch, status=LaunchStatus.ROLLED_BACK, share=0.0, share_ts=now_ts)


def retire(model: ModelVersion, actor: User) -> ModelVersion:
    require(actor, Action.RETIRE_MODEL)
    if model.status is VersionStatus.SERVING:
        raise LaunchStateError(f"model {model.model_version} is serving; launch another version or roll back first")
    return dataclasses.replace(model, status=VersionStatus.RETIRED)


def statuses_after_approval(launch: Launch) -> dict[str, VersionStatus]:
    """The versions' statuses once `launch` is live: it serves; the previous one serves beside it during
    a rollout, else stands by (approved)."""
    out = {launch.model_version: VersionStatus.SERVING}
    if launch.previous_version is not None and launch.previous_version != launch.model_version:
        out[launch.previous_version] = VersionStatus.SERVING if launch.share < 1.0 else VersionStatus.APPROVED
    return out


def statuses_after_rollback(launch: Launch) -> dict[str, VersionStatus]:
    """A rolled-back version goes back to gated (a new request may launch it again); the previous serves."""
    return {launch.model_version: VersionStatus.GATED, launch.previous_version: VersionStatus.SERVING}
