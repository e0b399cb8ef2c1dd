"""Guard operations for people: force a guard, release a trip, submit a rule pool, edit the
thresholds, read status.

Permission-checked (control.permissions) and audited, each in one transaction;
the clock is passed in. The kill switch itself is Control.set_kill_switch.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, select

from control.audit import AuditRecord
from control.domain import InvalidValue, User
from control.permissions import Action, require
from guards.config import GuardSettings
from guards.day_end import DAY_OVER_KEY
from guards.handlers import AlertSink, load_states, record_events, save_state
from guards.machine import MachineState, force
from guards.pool_store import PoolVersion, active_version, submit_pool
from guards.registry import GUARDS
from guards.rule_pool import PoolBounds
from guards.threshold_store import load_edits, save_edits
from guards.thresholds import (
    ThresholdEdit,
    ThresholdEdits,
    apply_edit,
    check_reason,
    describe,
    effective_settings,
    reset,
    values_of,
)
from guards.worker import HEARTBEAT_KEY
from store import repo
from store import schema as s

Clock = Callable[[], int]


class GuardService:
    def __init__(self, engine: Engine, clock: Clock, settings: GuardSettings, bounds: PoolBounds,
                 alert_sink: AlertSink | None = None):
        self.engine = engine
        self.clock = clock
        self.settings = settings
        self.bounds = bounds
        self.alert_sink = alert_sink

    def force(self, actor: User, campaign_id: str, mode: str, reason: str, guard: str | None = None) -> list[dict]:
        """Pin every guard of the campaign (or only `guard`) to the pool or the model, or hand it back ('auto').

        'auto' on a tripped guard is the manager's release (config require_approval). One guard:
        a person putting a pulled item back on sale (`competitor`, mode model) leaves the ROI guard on.
        """
        if guard is not None and guard not in GUARDS:
            raise InvalidValue("guard", guard, f"must be one of {list(GUARDS)}")
        now = int(self.clock())
        changed = []
        with self.engine.begin() as conn:
            actor = repo.verified_actor(conn, actor)
            require(actor, Action.FORCE_GUARD)
            self._known_campaign(conn, campaign_id)
            stored = load_states(conn)
            for name in GUARDS if guard is None else (guard,):
                row = stored.get((name, campaign_id))
                before = row.state if row is not None else MachineState(since_ts=now)
                if mode == "auto" and before.mode.value in ("model", "probation"):
                    continue  # already automatic: nothing to hand back
                after, events = force(before, mode, actor.username, reason, now, guard=name,
                                      campaign_id=campaign_id)
                event_id = record_events(conn, events, actor=actor.username, observe=self.settings.observe,
                                         alert_sink=self.alert_sink)
                save_state(conn, name, campaign_id, after, row,
                           event_id if event_id is not None else (row.event_id if row else None), now)
                changed.append({"guard": name, "mode_before": before.mode.value, "mode_after": after.mode.value})
        if not changed:
            raise InvalidValue("mode", mode, f"every guard of {campaign_id} is already automatic")
        return changed

    def submit_rule_pool(self, actor: User, text: str) -> PoolVersion:
        with self.engine.begin() as conn:
            actor = repo.verified_actor(conn, actor)
            require(actor, Action.EDIT_RULE_POOL)
            return submit_pool(conn, text, actor.username, int(self.clock()), self.bounds)

    # --- thresholds: the config file with the store's edits on top (guards.thresholds) ---------

    def thresholds(self, campaign_id: str | None = None) -> dict:
        """Every editable threshold of every guard for all campaigns (None) or one campaign,
        with its file value and the layer that set it; `version` is what an edit must name."""
        with self.engine.connect() as conn:
            if campaign_id is not None:
                self._known_campaign(conn, campaign_id)
            edits, version = load_edits(conn)
        return self._thresholds_view(edits, version, campaign_id)

    def set_thresholds(self, actor: User, edit: ThresholdEdit, expected_version: int | None = None) -> dict:
        """Apply a manager's edit (validated as the config file is), audited with before and after.

        expected_version: the version the editor was shown; someone else's change since is a ConflictError.
        """
        return self._change_thresholds(actor, "guard.thresholds_set", edit.guard, edit.campaign_id, edit.reason,
                                       expected_version, lambda edits: apply_edit(self.settings, edits, edit))

    def reset_thresholds(self, actor: User, campaign_id: str | None, reason: str, guard: str | None = None,
                         expected_version: int | None = None) -> dict:
        """Drop a campaign's own edits (campaign_id None: the edits for all campaigns), of one guard or all."""
        check_reason(reason)
        return self._change_thresholds(actor, "guard.thresholds_reset", guard, campaign_id, reason,
                                       expected_version, lambda edits: reset(edits, campaign_id, guard))

    def _change_thresholds(self, actor: User, action: str, guard: str | None, campaign_id: str | None, reason: str,
                           expected_version: int | None, change) -> dict:
        now = int(self.clock())
        with self.engine.begin() as conn:
            actor = repo.verified_actor(conn, actor)
            require(actor, Action.EDIT_GUARD_CONFIG)
            if campaign_id is not None:
                self._known_campaign(conn, campaign_id)
            edits, version = load_edits(conn)
            if expected_version is not None and expected_version != version:
                raise repo.ConflictError(f"the guard thresholds were changed by someone else (now version "
                                         f"{version}, you saw {expected_version}); reload and try again")
            after = change(edits)
            new_version = save_edits(conn, after, actor.username, now, version)
            before_view = self._thresholds_view(edits, version, campaign_id)
            after_view = self._thresholds_view(after, new_version, campaign_id)
            guards = list(before_view["guards"]) if guard is None else [guard]
            repo.append_audit(conn, AuditRecord(
                now, actor.username, action, "guard_thresholds", f"{guard or '*'}:{campaign_id or '*'}",
                _audit_doc(before_view, guards), {**_audit_doc(after_view, guards), "reason": reason}))
        return after_view

    def _thresholds_view(self, edits: ThresholdEdits, version: int, campaign_id: str | None) -> dict:
        return {"version": version, "campaign_id": campaign_id,
                "guards": {g: describe(self.settings, edits, g, campaign_id) for g in self.settings.defaults}}

    @staticmethod
    def _known_campaign(conn: Connection, campaign_id: str) -> None:
        if campaign_id not in repo.load_campaigns(conn):
            raise InvalidValue("campaign_id", campaign_id, "unknown campaign")

    def status(self) -> dict:
        """Every campaign's guards, the kill switch, open trips, the pool version and the worker's heartbeat."""
        with self.engine.connect() as conn:
            states = load_states(conn)
            kill = repo.load_kill_switch(conn)
            heartbeat, _ = repo.get_flag(conn, HEARTBEAT_KEY, None)
            day_over, _ = repo.get_flag(conn, DAY_OVER_KEY, None)
            pool = active_version(conn)
            trips = conn.execute(select(s.guard_trips).order_by(s.guard_trips.c.trip_id)).all()
            effective = repo.load_guard_states(conn)
            edits, thresholds_version = load_edits(conn)
        settings = effective_settings(self.settings, edits)
        campaigns: dict[str, dict] = {}
        for (guard, campaign_id), row in sorted(states.items()):
            entry = campaigns.setdefault(campaign_id, {"campaign_id": campaign_id, "guards": {}})
            st = row.state
            entry["guards"][guard] = {"mode": st.mode.value, "action": st.action.value, "since_ts": st.since_ts,
                                      "cause": st.cause,
                                      "stale": st.stale, "counts": dict(st.counts),
                                      "cooldown_s": st.cooldown_s, "event_id": row.event_id}
        for campaign_id, entry in campaigns.items():
            entry["effective_mode"] = effective[campaign_id].mode.value
            entry["kill_switch"] = kill.covers(campaign_id)
            entry["thresholds"] = {g: values_of(settings.for_campaign(g, campaign_id), g) for g in settings.defaults}
        return {
            "kill_switch": {"global": kill.global_on, "campaigns": sorted(kill.campaigns)},
            "worker": heartbeat,
            "day_over": day_over,  # the worker stopped at the promotion day's end: {day_end_ts, ts}
            "rule_pool_version": pool.version if pool else None,
            "thresholds": {"version": thresholds_version,
                           "all_campaigns": {g: values_of(c, g) for g, c in settings.defaults.items()}},
            "campaigns": list(campaigns.values()),
            "trips": [{"trip_id": t.trip_id, "guard": t.guard, "campaign_id": t.campaign_id,
                       "tripped_ts": t.tripped_ts, "restored_ts": t.restored_ts, "roi_before": t.roi_before,
                       "roi_after": t.roi_after, "detection_delay_s": t.detection_delay_s,
                       "loss_avoided": t.loss_avoided, "cause": t.details.get("cause")} for t in trips],
        }


def _audit_doc(view: dict, guards: list[str]) -> dict:
    """The audited part of a thresholds view: the effective values of the guards concerned."""
    return {"version": view["version"], "campaign_id": view["campaign_id"],
            "values": {g: {name: f["value"] for name, f in view["guards"][g].items()} for g in guards}}
