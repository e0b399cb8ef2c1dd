"""The control core's imperative shell: permission-checked, audited operations.

Each method opens one transaction, loads what the pure functions need, applies
them, writes the result and its audit entry together, with the alert people must
hear of (kill switch, an override awaiting approval, its approval, rejection,
revocation or expiry, told to its proposer) through the alert sink passed in. The
clock is passed in. The panel, the CLI and the HTTP API all go through here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import pandas as pd
from sqlalchemy import Connection, Engine, func, select

from app.exports import Stamp
from control import overrides as ov
from control.audit import AuditRecord, ChainReport, verify_chain
from control.clock import Clock
from control.config import Settings
from control.domain import (
    BidFormula,
    GuardState,
    InvalidValue,
    Override,
    OverrideField,
    OverrideScope,
    OverrideStatus,
    Role,
    RuleAnswer,
    User,
)
from control.permissions import GRANTABLE, Action, ActorRefused, require
from control.policy import KillSwitch, resolve_policy
from control.users import (
    LoginState,
    check_admins_left,
    check_username,
    dummy_hash,
    hash_password,
    needs_rehash,
    refund_source_try,
    reserve_source_try,
    reserve_try,
    verify_password,
)
from guards.alerts.events import AlertEvent, AlertKind
from guards.alerts.notices import kill_switch_alerts, override_alert
from store import repo
from store import schema as s
from store.audit_files import anchor, audit_files, read_anchors, read_key

if TYPE_CHECKING:
    from explain.artifacts import ModelArtifact

# (conn, event, now_ts) -> None: put the alert in the outbox in the caller's transaction
# (guards.alerts.enqueue_alert); None: no alerts (tests, the demo's set-up).
AlertSink = Callable[[Connection, AlertEvent, int], object]
_REVIEW_ALERTS = {"override.approve": AlertKind.OVERRIDE_APPROVED, "override.reject": AlertKind.OVERRIDE_REJECTED,
                  "override.revoke": AlertKind.OVERRIDE_REVOKED}


class LoginFailed(PermissionError):
    """A refused login. `reason` is REFUSED for an unknown user, a wrong password and a locked or
    inactive account alike (one answer: nobody learns which names exist), THROTTLED when the source
    made too many failed logins."""

    REFUSED = "refused"
    THROTTLED = "throttled"
    MESSAGES = {REFUSED: "wrong username or password, or the account is locked for a while after too many "
                         "failed logins",
                THROTTLED: "too many failed logins from here; wait 15 minutes"}

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(self.MESSAGES[reason])


SYSTEM_ACTOR = "system"
UNKNOWN_USER = "?"  # the audit's name for a login attempt with a name no user has


def acting_admin(conn: Connection, actor: User | None, action: Action, *, machine: bool = False) -> User | None:
    """The verified person allowed `action` (an admin's: users, tokens), or None for the machine itself,
    which may only while the store has no active admin (bootstrap) or when `machine` says it acts for its
    own processes (the demo's simulator token)."""
    if actor is None:
        if not machine and repo.count_active_admins(conn):
            raise ActorRefused(SYSTEM_ACTOR, f"may {action.value} only until the store has an admin; "
                                             "an admin logs in to do it")
        return None
    actor = repo.verified_actor(conn, actor)
    require(actor, action)
    return actor


class Control:
    def __init__(self, engine: Engine, clock: Clock, settings: Settings, alert_sink: AlertSink | None = None):
        self.engine = engine
        self.clock = clock
        self.settings = settings
        self.bounds = ov.bounds_for(settings)
        self.alert_sink = alert_sink

    def _alert(self, conn: Connection, events: list[AlertEvent]) -> None:
        if self.alert_sink is not None:
            for event in events:
                self.alert_sink(conn, event, event.occurred_ts)

    # --- users ----------------------------------------------------------------------------

    def add_user(self, actor: User | None, username: str, display_name: str, role: Role,
                 password: str) -> User:
        """Create a user. `actor` None is the machine itself, which may only while the store has no
        active admin (bootstrap: the first admin, the demo's users); afterwards an admin does it."""
        user = User(check_username(username), display_name, role)
        password_hash = hash_password(password)
        now = self.clock()
        with self.engine.begin() as conn:
            actor = acting_admin(conn, actor, Action.MANAGE_USERS)
            existing = repo.find_user(conn, username)
            if existing is not None:
                raise InvalidValue("username", username,
                                   f"already exists as {existing.user.username!r} (case does not tell names apart)")
            repo.insert_user(conn, user, password_hash, now)
            self._audit(conn, actor, "user.add", "user", username, None,
                        {"username": username, "display_name": display_name, "role": role.value})
        return user

    def login(self, username: str, password: str, source: str = "local") -> User:
        """The user, or LoginFailed with one answer whatever was wrong, after the same work.

        `source` names where the attempt comes from (a browser's address, "cli:HOST"), for the
        per-source throttle and the audit trail."""
        now = self.clock()
        name = username if isinstance(username, str) else ""
        source = str(source)[:200]
        with self.engine.begin() as conn:
            allowed, source_state = reserve_source_try(repo.lock_login_source(conn, source, now), now,
                                                       self.settings.login_max_failures_per_source)
            repo.set_login_source(conn, source, source_state)
            if not allowed:
                self._audit_login(conn, None, "user.login_throttled", source)
        if not allowed:
            raise LoginFailed(LoginFailed.THROTTLED)
        with self.engine.begin() as conn:
            record = repo.lock_user_for_login(conn, name)
            may_check, state = reserve_try(record.login_state, now) if record else (False, LoginState())
            if record is not None and may_check:
                repo.set_login_state(conn, record.user.username, state)
        # The slow check, outside any transaction: always one hash verified, so every refusal takes as long.
        password_ok = verify_password(password, record.password_hash if record else dummy_hash())
        ok = password_ok and may_check and record.user.active
        # An older scheme is upgraded while the password is known (hashed here, not inside the transaction).
        new_hash = hash_password(password) if ok and needs_rehash(record.password_hash) else None
        with self.engine.begin() as conn:
            if ok:
                user = record.user
                repo.set_login_state(conn, user.username, LoginState())
                repo.set_login_source(conn, source, refund_source_try(repo.lock_login_source(conn, source, now)))
                if new_hash is not None:
                    repo.set_password_hash(conn, user.username, new_hash)
                self._audit_login(conn, user, "user.login", source)
            else:
                self._audit_login(conn, record.user if record else None, "user.login_failed", source)
                if may_check and state.locked_until_ts > now:  # this try used the last one
                    self._audit_login(conn, record.user, "user.locked", source,
                                      {"locked_until_ts": state.locked_until_ts})
        if not ok:
            raise LoginFailed(LoginFailed.REFUSED)
        return record.user

    def _audit_login(self, conn: Connection, user: User | None, action: str, source: str,
                     extra: dict | None = None) -> None:
        """A login attempt in the audit trail: the actor is the user only once they proved who they are."""
        who = user.username if user is not None else UNKNOWN_USER
        actor = who if action == "user.login" else SYSTEM_ACTOR
        repo.append_audit(conn, AuditRecord(self.clock(), actor, action, "user", who, None,
                                            {"source": source, **(extra or {})}))

    def set_user_active(self, actor: User, username: str, active: bool) -> User:
        """Deactivate a user (their sessions and commands stop at their next action) or activate them again."""
        return self._change_user(actor, username, "user.activate" if active else "user.deactivate",
                                 lambda user: dataclasses.replace(user, active=active))

    def set_user_role(self, actor: User, username: str, role: Role) -> User:
        return self._change_user(actor, username, "user.role", lambda user: dataclasses.replace(user, role=Role(role)))

    def reset_password(self, actor: User, username: str, password: str) -> User:
        """A new password (the user's lockout cleared); the old one stops working at once."""
        password_hash = hash_password(password)
        return self._change_user(actor, username, "user.reset_password", lambda user: user, password_hash)

    def _change_user(self, actor: User, username: str, action: str, change: Callable[[User], User],
                     password_hash: str | None = None) -> User:
        with self.engine.begin() as conn:
            actor = acting_admin(conn, actor, Action.MANAGE_USERS)
            record = repo.get_user_record(conn, username)
            if record is None:
                raise InvalidValue("username", username, "no such user")
            after = change(record.user)
            check_admins_left(record.user, after, repo.count_active_admins(conn))
            repo.update_user(conn, after)
            if password_hash is not None:
                repo.set_password_hash(conn, username, password_hash)
            self._audit(conn, actor, action, "user", username, _user_document(record.user),
                        {**_user_document(after), **({"password": "reset"} if password_hash else {})})
        return after

    def users(self) -> list[User]:
        with self.engine.connect() as conn:
            return repo.list_users(conn)

    def set_grant(self, actor: User, username: str, action: Action, granted: bool) -> User:
        """Grant one person an action beyond their role (or take it back); admins only, audited."""
        if action not in GRANTABLE:
            raise InvalidValue("action", action.value, f"must be one of {sorted(a.value for a in GRANTABLE)}")
        with self.engine.begin() as conn:
            actor = repo.verified_actor(conn, actor)
            require(actor, Action.MANAGE_USERS)
            record = repo.get_user_record(conn, username)
            if record is None:
                raise InvalidValue("username", username, "no such user")
            before = record.user.grants
            after = before | {action.value} if granted else before - {action.value}
            repo.set_grants(conn, username, after)
            self._audit(conn, actor, "user.grant" if granted else "user.revoke_grant", "user", username,
                        {"grants": sorted(before)}, {"grants": sorted(after)})
        return dataclasses.replace(record.user, grants=after)

    # --- exports ----------------------------------------------------------------------------

    def export(self, actor: User, what: str, render, detail: dict) -> bytes:
        """Take data out as a file: EXPORT checked on the person as the store has them now, the content made by
        `render(stamp)` (stamped with who and when: app.exports), and `export.<what>` audited with `detail`."""
        with self.engine.connect() as conn:
            actor = repo.verified_actor(conn, actor)
        require(actor, Action.EXPORT)
        stamp = Stamp.of(actor, self.clock())
        data = render(stamp)
        with self.engine.begin() as conn:
            self._audit(conn, actor, f"export.{what}", "export", what, None,
                        {**detail, **stamp.as_json(), "bytes": len(data)})
        return data

    # --- overrides ------------------------------------------------------------------------

    def latest_model_bid(self, conn: Connection, scope: OverrideScope) -> float | None:
        """The model's most recent bid for the scope (the highest across packages if campaign-wide)."""
        last_bucket = (select(func.max(s.decisions.c.bucket_ts))
                       .where(s.decisions.c.campaign_id == scope.campaign_id).scalar_subquery())
        q = (select(func.max(s.decisions.c.model_bid))
             .where(s.decisions.c.campaign_id == scope.campaign_id, s.decisions.c.bucket_ts == last_bucket))
        if scope.audience_package is not None:
            q = q.where(s.decisions.c.audience_package == scope.audience_package)
        return conn.execute(q).scalar()

    def _campaign(self, conn: Connection, campaign_id: str):
        campaign = repo.load_campaigns(conn).get(campaign_id)
        if campaign is None:
            raise InvalidValue("campaign_id", campaign_id, "unknown campaign")
        return campaign

    def propose_override(self, actor: User, *, campaign_id: str, audience_package: str | None,
                         field: OverrideField, value: float, reason: str, expires_ts: int) -> Override:
        now = self.clock()
        scope = OverrideScope(campaign_id, audience_package)
        with self.engine.begin() as conn:
            actor = repo.verified_actor(conn, actor)
            campaign = self._campaign(conn, campaign_id)
            proposal = ov.propose(actor, override_id=repo.next_override_id(conn), scope=scope,
                                  field=field, value=value, reason=reason, expires_ts=expires_ts,
                                  now_ts=now, campaign=campaign,
                                  model_bid=self.latest_model_bid(conn, scope), bounds=self.bounds)
            stored = repo.insert_override(conn, proposal)
            self._audit(conn, actor, "override.propose", "override", str(stored.override_id), None,
                        repo.override_document(stored))
            self._alert(conn, [override_alert(AlertKind.OVERRIDE_PENDING, stored, now)])
        return stored

    def edit_override(self, actor: User, override_id: int, expected_version: int, *, value: float,
                      reason: str, expires_ts: int) -> Override:
        now = self.clock()
        with self.engine.begin() as conn:
            actor = repo.verified_actor(conn, actor)
            current = repo.get_override(conn, override_id)
            edited = ov.edit(current, actor, value=value, reason=reason, expires_ts=expires_ts,
                             now_ts=now, campaign=self._campaign(conn, current.scope.campaign_id),
                             model_bid=self.latest_model_bid(conn, current.scope), bounds=self.bounds)
            return self._store_override(conn, actor, "override.edit", current, edited, expected_version)

    def approve_override(self, actor: User, override_id: int, expected_version: int,
                         comment: str = "") -> Override:
        return self._review(actor, override_id, expected_version,
                            lambda o, who, now: ov.approve(o, who, now, comment), "override.approve")

    def reject_override(self, actor: User, override_id: int, expected_version: int,
                        comment: str = "") -> Override:
        return self._review(actor, override_id, expected_version,
                            lambda o, who, now: ov.reject(o, who, now, comment), "override.reject")

    def revoke_override(self, actor: User, override_id: int, expected_version: int,
                        comment: str = "") -> Override:
        return self._review(actor, override_id, expected_version,
                            lambda o, who, now: ov.revoke(o, who, now, comment), "override.revoke")

    def _review(self, actor: User, override_id: int, expected_version: int,
                step: Callable[[Override, User, int], Override], action: str) -> Override:
        now = self.clock()
        with self.engine.begin() as conn:
            actor = repo.verified_actor(conn, actor)
            current = repo.get_override(conn, override_id)
            if current.version != expected_version:
                raise repo.ConflictError(
                    f"override {override_id} was changed by someone else (now version {current.version}, "
                    f"status {current.status.value}); reload and try again")
            stored = self._store_override(conn, actor, action, current, step(current, actor, now), expected_version)
            self._alert(conn, [override_alert(_REVIEW_ALERTS[action], stored, now, actor=actor.username)])
            return stored

    def _store_override(self, conn: Connection, actor: User | None, action: str, before: Override,
                        after: Override, expected_version: int) -> Override:
        stored = repo.update_override(conn, after, expected_version)
        self._audit(conn, actor, action, "override", str(stored.override_id),
                    repo.override_document(before), repo.override_document(stored))
        return stored

    def expire_overrides(self) -> list[Override]:
        """Mark every override whose time is up as expired (run by the guard worker each tick)."""
        now = self.clock()
        expired = []
        with self.engine.begin() as conn:
            live = repo.list_overrides(conn, [OverrideStatus.PROPOSED, OverrideStatus.APPROVED])
            for done in ov.expire_due(live, now):
                before = next(o for o in live if o.override_id == done.override_id)
                stored = self._store_override(conn, None, "override.expire", before, done, before.version)
                self._alert(conn, [override_alert(AlertKind.OVERRIDE_EXPIRED, stored, now)])
                expired.append(stored)
        return expired

    def overrides(self, statuses: list[OverrideStatus] | None = None,
                  campaign_id: str | None = None) -> list[Override]:
        with self.engine.connect() as conn:
            return repo.list_overrides(conn, statuses, campaign_id)

    # --- kill switch ----------------------------------------------------------------------

    def kill_switch(self) -> KillSwitch:
        with self.engine.connect() as conn:
            return repo.load_kill_switch(conn)

    def set_kill_switch(self, actor: User, on: bool, reason: str, campaign_id: str | None = None) -> KillSwitch:
        if not reason.strip():
            raise InvalidValue("reason", reason, "a kill switch change needs a reason")
        now = self.clock()
        with self.engine.begin() as conn:
            actor = repo.verified_actor(conn, actor)
            require(actor, Action.KILL_SWITCH)
            before = repo.load_kill_switch(conn)
            campaigns = set(before.campaigns)
            global_on = before.global_on
            if campaign_id is None:
                global_on = on
            elif on:
                campaigns.add(self._campaign(conn, campaign_id).campaign_id)
            else:
                campaigns.discard(campaign_id)
            after = KillSwitch(global_on, frozenset(campaigns))
            doc = {"global": after.global_on, "campaigns": sorted(after.campaigns)}
            repo.set_flag(conn, repo.KILL_SWITCH_KEY, doc, actor.username, now)
            self._audit(conn, actor, "kill_switch.set", "kill_switch", campaign_id or "*",
                        {"global": before.global_on, "campaigns": sorted(before.campaigns)},
                        {**doc, "reason": reason})
            self._alert(conn, kill_switch_alerts(before, after, actor.username, reason, now))
        return after

    # --- a new promotion day (the demo) ------------------------------------------------------

    def start_promotion_day(self, actor: User | None, reason: str, *, ends_ts: int | None = None) -> int:
        """Clear the previous day's traffic, end its live overrides and kill switches; audited.

        ends_ts: when the new day ends (the guard worker stops evaluating then and says so);
        None: it runs on."""
        now = self.clock()
        with self.engine.begin() as conn:
            actor = None if actor is None else repo.verified_actor(conn, actor)
            for live in repo.list_overrides(conn, [OverrideStatus.PROPOSED, OverrideStatus.APPROVED]):
                ended = dataclasses.replace(live, status=OverrideStatus.EXPIRED)
                self._store_override(conn, actor, "override.expire", live, ended, live.version)
            kill = repo.load_kill_switch(conn)
            if kill.global_on or kill.campaigns:
                repo.set_flag(conn, repo.KILL_SWITCH_KEY, {"global": False, "campaigns": []},
                              actor.username if actor else SYSTEM_ACTOR, now)
            cleared = repo.clear_promotion_day(conn)
            repo.set_flag(conn, repo.PROMOTION_DAY_KEY, {"start_ts": now, "end_ts": ends_ts},
                          actor.username if actor else SYSTEM_ACTOR, now)
            self._audit(conn, actor, "promotion.new_day", "promotion", "*",
                        {"rows_cleared": cleared, "kill_switch": {"global": kill.global_on,
                                                                  "campaigns": sorted(kill.campaigns)}},
                        {"reason": reason, "ends_ts": ends_ts})
        return cleared

    # --- models ---------------------------------------------------------------------------

    def register_model(self, actor: User, artifact: ModelArtifact, path: str, formula: BidFormula, *,
                       active: bool) -> None:
        """Record a bidder's model version and how its bidder bids, so its decisions are explained at
        ingest under that formula; audited."""
        from explain.store import (  # LightGBM and friends: only for this command
            record_bid_formula,
            register_model,
        )

        with self.engine.begin() as conn:
            actor = repo.verified_actor(conn, actor)
            require(actor, Action.REGISTER_MODEL)
            register_model(conn, artifact, path, self.clock(), active=active)
            record_bid_formula(conn, artifact.version, formula, actor.username, self.clock())
            self._audit(conn, actor, "model.register", "model", artifact.version, None,
                        {"kind": artifact.kind, "path": path, "features": artifact.feature_names,
                         "active": active, "bid_formula": formula.to_json()})

    # --- effective policy -----------------------------------------------------------------

    def effective_policy(self, plan: pd.DataFrame, pool: Mapping[tuple[str, str], RuleAnswer],
                         guards: Mapping[str, GuardState] | None = None) -> pd.DataFrame:
        now = self.clock()
        with self.engine.connect() as conn:
            inputs = repo.load_policy_inputs(conn)
        return resolve_policy(plan, inputs.overrides, inputs.guards if guards is None else guards,
                              inputs.kill_switch, pool, now)

    # --- audit ----------------------------------------------------------------------------

    def _audit(self, conn: Connection, actor: User | None, action: str, entity: str, entity_id: str,
               before: dict | None, after: dict | None) -> None:
        repo.append_audit(conn, AuditRecord(self.clock(), actor.username if actor else SYSTEM_ACTOR,
                                            action, entity, entity_id, before, after))

    def verify_audit(self) -> ChainReport:
        """The chain checked against its key and the anchors outside the store; an intact chain's end is
        anchored too, so a later cut or rewrite of what was checked here is found."""
        files = audit_files(self.engine)
        with self.engine.connect() as conn:
            entries = repo.load_audit(conn)
        report = verify_chain(entries, read_key(files.key), read_anchors(files.anchors))
        if report.ok and entries:
            anchor(self.engine, self.clock(), (entries[-1].entry_id, entries[-1].hash))
        return report



def _user_document(user: User) -> dict:
    """A user as the audit trail records them (never their password or its hash)."""
    return {"username": user.username, "display_name": user.display_name, "role": user.role.value,
            "active": user.active}
