"""Guard operations for people: force a guard, release a trip, submit a rule pool, read status.

Permission-checked (control.permissions) and audited, each in one transaction;
the clock is passed in. The kill switch itself is Control.set_kill_switch.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, select

from control.domain import InvalidValue, User
from control.permissions import Action, require
from guards.config import GuardSettings
from guards.handlers import AlertSink, load_states, record_events, save_state
from guards.machine import MachineState, force
from guards.pool_store import PoolVersion, active_version, submit_pool
from guards.registry import GUARDS
from guards.rule_pool import PoolBounds
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

    def force(self, actor: User, campaign_id: str, mode: str, reason: str) -> list[dict]:
        """Pin every guard of the campaign to the pool or the model, or hand it back ('auto').

        'auto' on a tripped guard is the manager's release (config require_approval).
        """
        require(actor, Action.FORCE_GUARD)
        now = int(self.clock())
        changed = []
        with self.engine.begin() as conn:
            if campaign_id not in repo.load_campaigns(conn):
                raise InvalidValue("campaign_id", campaign_id, "unknown campaign")
            stored = load_states(conn)
            for guard in GUARDS:
                row = stored.get((guard, campaign_id))
                before = row.state if row is not None else MachineState(since_ts=now)
                if mode == "auto" and before.mode.value in ("model", "probation"):
                    continue  # already automatic: nothing to hand back
                after, events = force(before, mode, actor.username, reason, now, guard=guard,
                                      campaign_id=campaign_id)
                event_id = record_events(conn, events, actor=actor.username, observe=self.settings.observe,
                                         alert_sink=self.alert_sink)
                save_state(conn, guard, campaign_id, after, row,
                           event_id if event_id is not None else (row.event_id if row else None), now)
                changed.append({"guard": guard, "mode_before": before.mode.value, "mode_after": after.mode.value})
        if not changed:
            raise InvalidValue("mode", mode, f"every guard of {campaign_id} is already automatic")
        return changed

    def submit_rule_pool(self, actor: User, text: str) -> PoolVersion:
        require(actor, Action.EDIT_RULE_POOL)
        with self.engine.begin() as conn:
            return submit_pool(conn, text, actor.username, int(self.clock()), self.bounds)

    def status(self) -> dict:
        """Every campaign's guards, the kill switch, open trips, the pool version and the worker's heartbeat."""
        with self.engine.connect() as conn:
            states = load_states(conn)
            kill = repo.load_kill_switch(conn)
            heartbeat, _ = repo.get_flag(conn, HEARTBEAT_KEY, None)
            pool = active_version(conn)
            trips = conn.execute(select(s.guard_trips).order_by(s.guard_trips.c.trip_id)).all()
            effective = repo.load_guard_states(conn)
        campaigns: dict[str, dict] = {}
        for (guard, campaign_id), row in sorted(states.items()):
            entry = campaigns.setdefault(campaign_id, {"campaign_id": campaign_id, "guards": {}})
            st = row.state
            entry["guards"][guard] = {"mode": st.mode.value, "since_ts": st.since_ts, "cause": st.cause,
                                      "stale": st.stale, "counts": dict(st.counts),
                                      "cooldown_s": st.cooldown_s, "event_id": row.event_id}
        for campaign_id, entry in campaigns.items():
            entry["effective_mode"] = effective[campaign_id].mode.value
            entry["kill_switch"] = kill.covers(campaign_id)
        return {
            "kill_switch": {"global": kill.global_on, "campaigns": sorted(kill.campaigns)},
            "worker": heartbeat,
            "rule_pool_version": pool.version if pool else None,
            "campaigns": list(campaigns.values()),
            "trips": [{"trip_id": t.trip_id, "guard": t.guard, "campaign_id": t.campaign_id,
                       "tripped_ts": t.tripped_ts, "restored_ts": t.restored_ts, "roi_before": t.roi_before,
                       "roi_after": t.roi_after, "detection_delay_s": t.detection_delay_s,
                       "loss_avoided": t.loss_avoided, "cause": t.details.get("cause")} for t in trips],
        }
