"""The control core's imperative shell: permission-checked, audited operations.

Each method opens one transaction, loads what the pure functions need, applies
them, writes the result and its audit entry together. The clock is passed in.
The panel, the CLI and the HTTP API all go through here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import pandas as pd
from sqlalchemy import Connection, Engine, func, select

from app.exports import Stamp
from control import overrides as ov
from control.audit import AuditRecord, ChainReport, verify_chain
from control.clock import Clock
from control.config import Settings
from control.domain import (
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
from control.permissions import GRANTABLE, Action, require
from control.policy import KillSwitch, resolve_policy
from control.users import LoginState, attempt_login, hash_password, verify_password
from store import repo
from store import schema as s


class LoginFailed(PermissionError):
    pass


SYSTEM_ACTOR = "system"


class Control:
    def __init__(self, engine: Engine, clock: Clock, settings: Settings):
        self.engine = engine
        self.clock = clock
        self.settings = settings
        self.bounds = ov.bounds_for(settings)

    # --- users ----------------------------------------------------------------------------

    def add_user(self, actor: User | None, username: str, display_name: str, role: Role,
                 password: str) -> User:
        """Create a user. `actor` None means the machine's own CLI (bootstrap)."""
        if actor is not None:
            require(actor, Action.MANAGE_USERS)
        user = User(username, display_name, role)
        now = self.clock()
        with self.engine.begin() as conn:
            if repo.get_user_record(conn, username) is not None:
                raise InvalidValue("username", username, "already exists")
            repo.insert_user(conn, user, hash_password(password), now)
            self._audit(conn, actor, "user.add", "user", username, None,
                        {"username": username, "display_name": display_name, "role": role.value})
        return user

    def login(self, username: str, password: str) -> User:
        """The user, or LoginFailed with a message that does not say which part was wrong."""
        now = self.clock()
        with self.engine.begin() as conn:
            record = repo.get_user_record(conn, username)
            if record is None or not record.user.active:
                raise LoginFailed("wrong username or password")
            ok = verify_password(password, record.password_hash)
            result = attempt_login(LoginState(record.failed_logins, record.locked_until_ts), ok, now)
            repo.set_login_state(conn, username, result.state.failed_logins, result.state.locked_until_ts)
            if result.state.locked_until_ts > now and record.locked_until_ts <= now:
                self._audit(conn, None, "user.locked", "user", username, None,
                            {"locked_until_ts": result.state.locked_until_ts})
        if not result.ok:
            raise LoginFailed(result.message)
        return record.user

    def user(self, username: str) -> User:
        """The active user of that name, as the store has it now; InvalidValue if there is none."""
        with self.engine.connect() as conn:
            record = repo.get_user_record(conn, username)
        if record is None or not record.user.active:
            raise InvalidValue("user", username, "no such active user")
        return record.user

    def users(self) -> list[User]:
        with self.engine.connect() as conn:
            return repo.list_users(conn)

    def set_grant(self, actor: User, username: str, action: Action, granted: bool) -> User:
        """Grant one person an action beyond their role (or take it back); admins only, audited."""
        require(actor, Action.MANAGE_USERS)
        if action not in GRANTABLE:
            raise InvalidValue("action", action.value, f"must be one of {sorted(a.value for a in GRANTABLE)}")
        with self.engine.begin() as conn:
            record = repo.get_user_record(conn, username)
            if record is None:
                raise InvalidValue("username", username, "no such user")
            before = record.user.grants
            after = before | {action.value} if granted else before - {action.value}
            repo.set_grants(conn, username, after)
            self._audit(conn, actor, "user.grant" if granted else "user.revoke_grant", "user", username,
                        {"grants": sorted(before)}, {"grants": sorted(after)})
        return dataclasses.replace(record.user, grants=after)

    def current(self, actor: User) -> User:
        """The person as the store has them now (grants and deactivation take effect at once, not at the next
        login); refused if they are no longer an active user."""
        with self.engine.connect() as conn:
            record = repo.get_user_record(conn, actor.username)
        return record.user if record is not None else dataclasses.replace(actor, active=False)

    # --- exports ----------------------------------------------------------------------------

    def export(self, actor: User, what: str, render, detail: dict) -> bytes:
        """Take data out as a file: EXPORT checked on the person as the store has them now, the content made by
        `render(stamp)` (stamped with who and when: app.exports), and `export.<what>` audited with `detail`."""
        actor = self.current(actor)
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
            campaign = self._campaign(conn, campaign_id)
            proposal = ov.propose(actor, override_id=repo.next_override_id(conn), scope=scope,
                                  field=field, value=value, reason=reason, expires_ts=expires_ts,
                                  now_ts=now, campaign=campaign,
                                  model_bid=self.latest_model_bid(conn, scope), bounds=self.bounds)
            stored = repo.insert_override(conn, proposal)
            self._audit(conn, actor, "override.propose", "override", str(stored.override_id), None,
                        repo.override_document(stored))
        return stored

    def edit_override(self, actor: User, override_id: int, expected_version: int, *, value: float,
                      reason: str, expires_ts: int) -> Override:
        now = self.clock()
        with self.engine.begin() as conn:
            current = repo.get_override(conn, override_id)
            edited = ov.edit(current, actor, value=value, reason=reason, expires_ts=expires_ts,
                             now_ts=now, campaign=self._campaign(conn, current.scope.campaign_id),
                             model_bid=self.latest_model_bid(conn, current.scope), bounds=self.bounds)
            return self._store_override(conn, actor, "override.edit", current, edited, expected_version)

    def approve_override(self, actor: User, override_id: int, expected_version: int,
                         comment: str = "") -> Override:
        return self._review(actor, override_id, expected_version,
                            lambda o, now: ov.approve(o, actor, now, comment), "override.approve")

    def reject_override(self, actor: User, override_id: int, expected_version: int,
                        comment: str = "") -> Override:
        return self._review(actor, override_id, expected_version,
                            lambda o, now: ov.reject(o, actor, now, comment), "override.reject")

    def revoke_override(self, actor: User, override_id: int, expected_version: int,
                        comment: str = "") -> Override:
        return self._review(actor, override_id, expected_version,
                            lambda o, now: ov.revoke(o, actor, now, comment), "override.revoke")

    def _review(self, actor: User, override_id: int, expected_version: int,
                step: Callable[[Override, int], Override], action: str) -> Override:
        now = self.clock()
        with self.engine.begin() as conn:
            current = repo.get_override(conn, override_id)
            if current.version != expected_version:
                raise repo.ConflictError(
                    f"override {override_id} was changed by someone else (now version {current.version}, "
                    f"status {current.status.value}); reload and try again")
            return self._store_override(conn, actor, action, current, step(current, now), expected_version)

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
                expired.append(self._store_override(conn, None, "override.expire", before, done,
                                                    before.version))
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
        require(actor, Action.KILL_SWITCH)
        if not reason.strip():
            raise InvalidValue("reason", reason, "a kill switch change needs a reason")
        now = self.clock()
        with self.engine.begin() as conn:
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
        return after

    # --- a new promotion day (the demo) ------------------------------------------------------

    def start_promotion_day(self, actor: User | None, reason: str) -> int:
        """Clear the previous day's traffic, end its live overrides and kill switches; audited."""
        now = self.clock()
        with self.engine.begin() as conn:
            for live in repo.list_overrides(conn, [OverrideStatus.PROPOSED, OverrideStatus.APPROVED]):
                ended = dataclasses.replace(live, status=OverrideStatus.EXPIRED)
                self._store_override(conn, actor, "override.expire", live, ended, live.version)
            kill = repo.load_kill_switch(conn)
            if kill.global_on or kill.campaigns:
                repo.set_flag(conn, repo.KILL_SWITCH_KEY, {"global": False, "campaigns": []},
                              actor.username if actor else SYSTEM_ACTOR, now)
            cleared = repo.clear_promotion_day(conn)
            self._audit(conn, actor, "promotion.new_day", "promotion", "*",
                        {"rows_cleared": cleared, "kill_switch": {"global": kill.global_on,
                                                                  "campaigns": sorted(kill.campaigns)}},
                        {"reason": reason})
        return cleared

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
        with self.engine.connect() as conn:
            return verify_chain(repo.load_audit(conn))

