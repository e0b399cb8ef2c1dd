"""Who may do what. Enforced here, in the core: the panel and the API only ask.

Admins administer users and tokens; they are not managers and do not approve
overrides (the approver must be someone who answers for the money). Launches follow
the same line: engineers gate and request, managers approve, and only an admin may
switch the launch gate off for a deployment.

Explanations are strategy (the plan's white-box leak risk): a decision's raw feature
contributions, the global drivers and the model's card need VIEW_EXPLANATION_DETAIL
(engineers and managers); everyone who may VIEW reads the reasons in words. Taking
anything out of BidLens as a file (CSV, a review, a stress report) needs EXPORT, and
every export is audited with who, what and when, and carries that stamp.
"""

from __future__ import annotations

from enum import StrEnum

from control.domain import Role, User


class Action(StrEnum):
    VIEW = "view"
    PROPOSE_OVERRIDE = "propose_override"
    APPROVE_OVERRIDE = "approve_override"   # approve or reject
    REVOKE_OVERRIDE = "revoke_override"     # end someone else's or an approved override
    KILL_SWITCH = "kill_switch"
    FORCE_GUARD = "force_guard"             # manual trip, force model / pool, release
    EDIT_GUARD_CONFIG = "edit_guard_config"
    EDIT_RULE_POOL = "edit_rule_pool"
    ACK_ALERT = "ack_alert"
    RUN_STRESS_TEST = "run_stress_test"
    MANAGE_USERS = "manage_users"
    MANAGE_TOKENS = "manage_tokens"
    VIEW_AUDIT = "view_audit"               # read the audit trail
    REGISTER_MODEL = "register_model"       # register a bidder's model, so its decisions are explained
    VIEW_EXPLANATION_DETAIL = "view_explanation_detail"  # raw SHAP contributions, global drivers, the model card
    EXPORT = "export"                       # take data out as a file (CSV, review, stress report); audited
    RUN_GATE = "run_gate"                   # run a model version's launch gate
    REQUEST_LAUNCH = "request_launch"       # ask for a gated version to serve
    APPROVE_LAUNCH = "approve_launch"       # approve or reject a launch (never one's own)
    ROLLBACK_LAUNCH = "rollback_launch"     # put the previous version back (the safe direction)
    RETIRE_MODEL = "retire_model"
    SET_GATE_THRESHOLDS = "set_gate_thresholds"
    SWITCH_LAUNCH_GATE = "switch_launch_gate"  # turn the gate off (or on) for the deployment


PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.OPERATOR: frozenset({Action.VIEW, Action.PROPOSE_OVERRIDE, Action.ACK_ALERT}),
    Role.ENGINEER: frozenset({Action.VIEW, Action.ACK_ALERT, Action.RUN_STRESS_TEST,
                              Action.EDIT_RULE_POOL, Action.REGISTER_MODEL, Action.VIEW_EXPLANATION_DETAIL,
                              Action.EXPORT, Action.RUN_GATE, Action.REQUEST_LAUNCH, Action.ROLLBACK_LAUNCH}),
    Role.MANAGER: frozenset({Action.VIEW, Action.PROPOSE_OVERRIDE, Action.APPROVE_OVERRIDE,
                             Action.REVOKE_OVERRIDE, Action.KILL_SWITCH, Action.FORCE_GUARD,
                             Action.EDIT_GUARD_CONFIG, Action.EDIT_RULE_POOL, Action.ACK_ALERT,
                             Action.RUN_STRESS_TEST, Action.VIEW_AUDIT, Action.REGISTER_MODEL,
                             Action.VIEW_EXPLANATION_DETAIL, Action.EXPORT, Action.RUN_GATE,
                             Action.REQUEST_LAUNCH, Action.APPROVE_LAUNCH, Action.ROLLBACK_LAUNCH,
                             Action.RETIRE_MODEL, Action.SET_GATE_THRESHOLDS}),
    Role.ADMIN: frozenset({Action.VIEW, Action.PROPOSE_OVERRIDE, Action.ACK_ALERT,
                           Action.RUN_STRESS_TEST, Action.MANAGE_USERS, Action.MANAGE_TOKENS,
                           Action.VIEW_AUDIT, Action.SWITCH_LAUNCH_GATE}),
}


class ActorRefused(PermissionError):
    """The person acting is not (or no longer) who the store says: unknown, deactivated, or their role
    changed since they logged in. They must log in again."""

    def __init__(self, username: str, why: str):
        self.username = username
        self.why = why
        super().__init__(f"user {username!r} {why}; log in again")


def verified(claimed: User, stored: User | None) -> User:
    """The actor as the store has them now (`stored`, read in the acting transaction), if that is still
    the person the caller claims (`claimed`: a session's or a command's user); else ActorRefused."""
    if stored is None or stored.username != claimed.username:
        raise ActorRefused(claimed.username, "is not a user of this store")
    if not stored.active:
        raise ActorRefused(claimed.username, "was deactivated")
    if stored.role is not claimed.role:
        raise ActorRefused(claimed.username, f"is now {stored.role.value}, not {claimed.role.value}")
    return stored


class PermissionDenied(PermissionError):
    def __init__(self, user: User, action: Action):
        self.user = user
        self.action = action
        super().__init__(f"{user.username} ({user.role.value}) may not {action.value}")


# What may be granted to one person beyond their role (e.g. an operator trusted with the raw explanations).
GRANTABLE = frozenset({Action.VIEW_EXPLANATION_DETAIL, Action.EXPORT})


def allowed(user: User, action: Action) -> bool:
    return user.active and (action in PERMISSIONS[user.role] or (action in GRANTABLE and action.value in user.grants))


def require(user: User, action: Action) -> None:
    if not allowed(user, action):
        raise PermissionDenied(user, action)
