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

import pandas as pd
from sqlalchemy import Connection, Engine, func, select

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
from control.permissions import Action, require
from control.policy import KillSwitch, resolve_policy
from control.users import LoginState, attempt_login, hash_password, verify_password
from guards.alerts.events import AlertEvent, AlertKind
from guards.alerts.notices import kill_switch_alerts, override_alert
from store import repo
from store import schema as s

# (conn, event, now_ts) -> None: put the alert in the outbox in the caller's transaction
# (guards.alerts.enqueue_alert); None: no alerts (tests, the demo's set-up).
AlertSink = Callable[[Connection, AlertEvent, int], object]
_REVIEW_ALERTS = {"override.approve": AlertKind.OVERRIDE_APPROVED, "override.reject": AlertKind.OVERRIDE_REJECTED,
                  "override.revoke": AlertKind.OVERRIDE_REVOKED}


class LoginFailed(PermissionError):
    pass


SYSTEM_ACTOR = "system"


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
            self._alert(conn, [override_alert(AlertKind.OVERRIDE_PENDING, stored, now)])
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
            stored = self._store_override(conn, actor, action, current, step(current, now), expected_version)
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
            self._alert(conn, kill_switch_alerts(before, after, actor.username, reason, now))
        return after

    # --- a new promotion day (the demo) ------------------------------------------------------

    def start_promotion_day(self, actor: User | None, reason: str, *, ends_ts: int | None = None) -> int:
        """Clear the previous day's traffic, end its live overrides and kill switches; audited.

        ends_ts: when the new day ends (the guard worker stops evaluating then and says so);
        None: it runs on."""
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
            repo.set_flag(conn, repo.PROMOTION_DAY_KEY, {"start_ts": now, "end_ts": ends_ts},
                          actor.username if actor else SYSTEM_ACTOR, now)
            self._audit(conn, actor, "promotion.new_day", "promotion", "*",
                        {"rows_cleared": cleared, "kill_switch": {"global": kill.global_on,
                                                                  "campaigns": sorted(kill.campaigns)}},
                        {"reason": reason, "ends_ts": ends_ts})
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

