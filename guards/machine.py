"""The guard state machine every guard shares: pure, clock passed in.

    MODEL --(a check breaches N evaluations in a row)--> TRIPPED (the rule pool serves)
    TRIPPED --(cooldown over, trip budget left, release approved if required)--> PROBATION
    PROBATION --(M healthy evaluations in a row)--> MODEL
    PROBATION --(a breach, or no pass within probation_max_s)--> TRIPPED, longer cooldown
    TRIPPED --(the evidence calls for another action)--> TRIPPED with that action (pool, bid cut, pause)
    FORCED_POOL / FORCED_MODEL: set by a manager (`force`), never left by `step`.

A guard (ROI, pacing, inventory, ...) only turns its observation into a `Signal`
(guards.roi.roi_signal and friends); this module decides what that means.

Why these rules:
- An evaluation counts once per new data bucket (`Signal.evaluation_key`), so a
  worker ticking faster than the data cannot trip on one bucket seen N times.
- Nothing leaves TRIPPED inside its cooldown, and at `max_trips_per_hour` trips in
  the last hour the pool holds: a series oscillating around the floor cannot flap.
- Stale data (no fresh decisions or outcomes for `stale_after_s`) is danger:
  DataStale, then either fail-safe to the pool or hold the current mode; while
  stale, nothing counts towards a trip or a recovery.
- After `max_probation_failures` failed probations in a promotion day the campaign
  stays held until a person releases it (`force(..., "auto")`) or the day ends: a
  model that keeps failing its canary is not given the traffic back again and again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import ClassVar

from control.clock import day_start
from control.domain import GuardAction, GuardMode, InvalidValue
from guards.config import MachineConfig

FORCED_MODES = frozenset({GuardMode.FORCED_POOL, GuardMode.FORCED_MODEL})
HOUR_S = 3600
STALE_CAUSE = "stale_data"


@dataclass(frozen=True, slots=True)
class Check:
    """One trip rule's verdict on this evaluation.

    breached: True = bad, False = fine, None = not enough data to say (resets the count).
    needed: evaluations in a row that must breach before the guard trips.
    """

    rule: str
    breached: bool | None
    needed: int


class LazyFigures(Mapping[str, float]):
    """A signal's figures, worked out when something first reads them: a tick evaluates every campaign,
    and most evaluations write no event, the only reader."""

    __slots__ = ("_make", "_figures")

    def __init__(self, make: Callable[[], dict[str, float]]):
        self._make = make
        self._figures: dict[str, float] | None = None

    def _all(self) -> dict[str, float]:
        if self._figures is None:
            self._figures = self._make()
        return self._figures

    def __getitem__(self, key: str) -> float:
        return self._all()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


@dataclass(frozen=True, slots=True)
class Signal:
    """What a guard saw for one campaign at one evaluation."""

    evaluation_key: int | None      # newest data bucket behind this signal; None: no data
    checks: tuple[Check, ...]
    healthy: bool | None            # good enough to count as a probation pass (None: cannot tell)
    data_age_s: int | None          # age of the stalest feed; None: the campaign never had data
    figures: Mapping[str, float] = field(default_factory=dict)
    # The action this evidence calls for: at a trip (None: the config's `action`), or while tripped
    # (None: keep the current one).
    action: GuardAction | None = None
    bid_factor: float = 1.0            # with BID_CUT: the factor on the model's bid


@dataclass(frozen=True, slots=True)
class MachineState:
    """A campaign's guard as stored in guard_states.state (JSON)."""

    mode: GuardMode = GuardMode.MODEL
    since_ts: int = 0                  # when the current mode began
    cause: str = ""                    # why it left MODEL (rule name, stale_data, forced)
    counts: tuple[tuple[str, int], ...] = ()   # rule -> breaching evaluations in a row
    first_breach_ts: int | None = None  # when the current breach streak began (detection delay)
    probation_passes: int = 0
    cooldown_s: int = 0                # the cooldown of the current trip
    trip_ts: tuple[int, ...] = ()      # trips in the last hour
    last_eval_key: int | None = None
    stale: bool = False
    release_approved: bool = False
    waiting_note: str = ""             # the hold already announced (approval, trip limit): alert once
    figures_at_trip: tuple[tuple[str, float], ...] = ()
    canary_share: float = 0.0          # read by store.repo.load_guard_states
    action: GuardAction = GuardAction.POOL  # what the guard does with the traffic it holds
    bid_factor: float = 1.0            # BID_CUT: the model's bid x this
    probation_failures: int = 0        # failed probations on `failures_day`
    failures_day: int = 0              # the promotion day (its start, epoch s) they were counted on

    def to_json(self) -> dict:
        return {"mode": self.mode.value, "since_ts": self.since_ts, "cause": self.cause,
                "counts": dict(self.counts), "first_breach_ts": self.first_breach_ts,
                "probation_passes": self.probation_passes, "cooldown_s": self.cooldown_s,
                "trip_ts": list(self.trip_ts), "last_eval_key": self.last_eval_key,
                "stale": self.stale, "release_approved": self.release_approved,
                "waiting_note": self.waiting_note, "figures_at_trip": dict(self.figures_at_trip),
                "canary_share": self.canary_share, "action": self.action.value, "bid_factor": self.bid_factor,
                "probation_failures": self.probation_failures,
                "failures_day": self.failures_day}

    @classmethod
    def from_json(cls, doc: Mapping) -> MachineState:
        try:
            return cls(mode=GuardMode(doc["mode"]), since_ts=int(doc.get("since_ts", 0)),
                       cause=str(doc.get("cause", "")),
                       counts=tuple(sorted((str(k), int(v)) for k, v in doc.get("counts", {}).items())),
                       first_breach_ts=doc.get("first_breach_ts"),
                       probation_passes=int(doc.get("probation_passes", 0)),
                       cooldown_s=int(doc.get("cooldown_s", 0)),
                       trip_ts=tuple(int(t) for t in doc.get("trip_ts", [])),
                       last_eval_key=doc.get("last_eval_key"), stale=bool(doc.get("stale", False)),
                       release_approved=bool(doc.get("release_approved", False)),
                       waiting_note=str(doc.get("waiting_note", "")),
                       figures_at_trip=tuple(sorted(doc.get("figures_at_trip", {}).items())),
                       canary_share=float(doc.get("canary_share", 0.0)),
                       action=GuardAction(doc.get("action", GuardAction.POOL.value)),
                       bid_factor=float(doc.get("bid_factor", 1.0)),
                       probation_failures=int(doc.get("probation_failures", 0)),
                       failures_day=int(doc.get("failures_day", 0)))
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidValue("guard_states.state", dict(doc), f"not a guard state: {exc}") from None


# --- events ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class GuardEvent:
    """Something the guard did or saw. Handlers (store, audit, alerts) act on these."""

    kind: ClassVar[str] = "guard_event"
    severity: ClassVar[str] = "info"
    guard: str
    campaign_id: str
    ts: int
    mode_before: GuardMode
    mode_after: GuardMode
    figures: tuple[tuple[str, float], ...] = ()

    def payload(self) -> dict:
        out = {"mode_before": self.mode_before.value, "mode_after": self.mode_after.value,
               "figures": dict(self.figures)}
        for name in self.__slots__:
            if name not in ("guard", "campaign_id", "ts", "mode_before", "mode_after", "figures"):
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardTripped(GuardEvent):
    kind: ClassVar[str] = "tripped"
    severity: ClassVar[str] = "critical"
    cause: str
    detection_delay_s: int
    action: str = GuardAction.POOL.value  # what the guard does with the traffic (pool, bid_cut, pause)
    bid_factor: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbationStarted(GuardEvent):
    kind: ClassVar[str] = "probation_started"
    canary_share: float


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardRestored(GuardEvent):
    kind: ClassVar[str] = "restored"
    tripped_for_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbationFailed(GuardEvent):
    kind: ClassVar[str] = "probation_failed"
    severity: ClassVar[str] = "warning"
    reason: str
    cooldown_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionChanged(GuardEvent):
    """While tripped the evidence called for another action (e.g. the rule pool is no better)."""

    kind: ClassVar[str] = "action_changed"
    severity: ClassVar[str] = "warning"
    action_before: str
    action_after: str
    bid_factor: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DataStale(GuardEvent):
    kind: ClassVar[str] = "data_stale"
    severity: ClassVar[str] = "warning"
    age_s: int
    action: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DataFresh(GuardEvent):
    kind: ClassVar[str] = "data_fresh"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseHeld(GuardEvent):
    """Cooldown is over but the pool holds: waiting for a manager, or the trip budget is spent."""

    kind: ClassVar[str] = "release_held"
    severity: ClassVar[str] = "warning"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardForced(GuardEvent):
    kind: ClassVar[str] = "forced"
    severity: ClassVar[str] = "warning"
    actor: str
    reason: str


# --- transitions -------------------------------------------------------------------------------

def _figures(signal: Signal) -> tuple[tuple[str, float], ...]:
    """The signal's figures for an event or a state: finite values, rounded (computed only when needed)."""
    return tuple(sorted((k, round(float(v), 4)) for k, v in signal.figures.items() if v == v))


def _event(cls, guard: str, campaign_id: str, now: int, before: MachineState, after: MachineState,
           signal: Signal | None, **extra) -> GuardEvent:
    figures = _figures(signal) if signal is not None else ()
    return cls(guard=guard, campaign_id=campaign_id, ts=now, mode_before=before.mode,
               mode_after=after.mode, figures=figures, **extra)


def _recent_trips(state: MachineState, now: int) -> tuple[int, ...]:
    return tuple(t for t in state.trip_ts if now - t < HOUR_S)


def _trip(state: MachineState, signal: Signal, config: MachineConfig, now: int, cause: str,
          guard: str, campaign_id: str, cooldown_s: int | None = None) -> tuple[MachineState, list]:
    cooldown = config.cooldown_s if cooldown_s is None else cooldown_s
    action = signal.action or GuardAction(config.action)
    after = replace(state, mode=GuardMode.TRIPPED, since_ts=now, cause=cause, counts=(),
                    first_breach_ts=None, probation_passes=0, cooldown_s=cooldown,
                    trip_ts=_recent_trips(state, now) + (now,), release_approved=False, waiting_note="",
                    figures_at_trip=_figures(signal), canary_share=0.0, action=action,
                    bid_factor=signal.bid_factor if action is GuardAction.BID_CUT else 1.0)
    started = state.first_breach_ts if state.first_breach_ts is not None else now
    return after, [_event(GuardTripped, guard, campaign_id, now, state, after, signal, cause=cause,
                          detection_delay_s=max(0, now - started), action=action.value,
                          bid_factor=after.bid_factor)]


def _count(state: MachineState, signal: Signal, now: int) -> tuple[MachineState, str | None]:
    """New breach counts; the rule that reached its count, if any."""
    counts = dict(state.counts)
    fired = None
    for check in signal.checks:
        counts[check.rule] = counts.get(check.rule, 0) + 1 if check.breached else 0
        if check.breached and counts[check.rule] >= check.needed and fired is None:
            fired = check.rule
    breaching = any(v > 0 for v in counts.values())
    first = (state.first_breach_ts if state.first_breach_ts is not None else now) if breaching else None
    return replace(state, counts=tuple(sorted((k, v) for k, v in counts.items() if v)),
                   first_breach_ts=first, last_eval_key=signal.evaluation_key), fired


def step(state: MachineState, signal: Signal, config: MachineConfig, now_ts: int, *,
         guard: str, campaign_id: str) -> tuple[MachineState, list[GuardEvent]]:
    """One evaluation of one campaign's guard: the new state and what happened."""
    if state.mode in FORCED_MODES:
        return state, []
    day = day_start(now_ts)
    if state.probation_failures and state.failures_day != day:  # a new promotion day: a clean slate
        state = replace(state, probation_failures=0, failures_day=day, waiting_note="")

    events: list[GuardEvent] = []
    # No data at all in the lookback says nothing new: keep what we knew.
    stale = state.stale if signal.data_age_s is None else signal.data_age_s > config.stale_after_s
    if stale and not state.stale:
        fail_safe = config.stale_action == "pool" and state.mode in (GuardMode.MODEL, GuardMode.PROBATION)
        marked = replace(state, stale=True, counts=(), first_breach_ts=None)
        if fail_safe:
            after, trip_events = _trip(marked, signal, config, now_ts, STALE_CAUSE, guard, campaign_id)
        else:
            after, trip_events = marked, []
        events.append(_event(DataStale, guard, campaign_id, now_ts, state, after, signal,
                             age_s=int(signal.data_age_s), action="pool" if fail_safe else "hold"))
        return after, events + trip_events
    if stale:
        return state, []   # nothing counts while the data is stale
    if state.stale:
        fresh = replace(state, stale=False)
        events.append(_event(DataFresh, guard, campaign_id, now_ts, state, fresh, signal))
        state = fresh

    new_evaluation = signal.evaluation_key is not None and signal.evaluation_key != state.last_eval_key

    if state.mode is GuardMode.MODEL:
        if not new_evaluation:
            return state, events
        if not state.counts and not any(c.breached for c in signal.checks):
            return state, events  # the common case: nothing to count, nothing to write
        counted, fired = _count(state, signal, now_ts)
        if fired is None:
            return counted, events
        after, trip_events = _trip(counted, signal, config, now_ts, fired, guard, campaign_id)
        return after, events + trip_events

    if state.mode is GuardMode.TRIPPED:
        if signal.action is not None and signal.action is not state.action:
            factor = signal.bid_factor if signal.action is GuardAction.BID_CUT else 1.0
            after = replace(state, action=signal.action, bid_factor=factor)
            return after, events + [_event(ActionChanged, guard, campaign_id, now_ts, state, after, signal,
                                           action_before=state.action.value, action_after=signal.action.value,
                                           bid_factor=factor)]
        if now_ts - state.since_ts < state.cooldown_s:
            return state, events
        hold = ""
        if len(_recent_trips(state, now_ts)) >= config.max_trips_per_hour:
            hold = "trip_limit"
        elif config.require_approval and not state.release_approved:
            hold = "awaiting_approval"
        elif state.probation_failures >= config.max_probation_failures and not state.release_approved:
            hold = "probation_limit"
        if hold:
            if state.waiting_note == hold:
                return state, events
            after = replace(state, waiting_note=hold)
            return after, events + [_event(ReleaseHeld, guard, campaign_id, now_ts, state, after, signal,
                                           reason=hold)]
        after = replace(state, mode=GuardMode.PROBATION, since_ts=now_ts, probation_passes=0,
                        waiting_note="", canary_share=config.canary_share, counts=(),
                        last_eval_key=signal.evaluation_key)
        return after, events + [_event(ProbationStarted, guard, campaign_id, now_ts, state, after, signal,
                                       canary_share=config.canary_share)]

    # PROBATION: the canary must stay healthy for M new evaluations in a row.
    failed = ""
    passes = state.probation_passes
    if new_evaluation:
        if any(c.breached for c in signal.checks):
            failed = "breach"
        elif signal.healthy:
            passes += 1
        else:
            passes = 0
    if not failed and passes >= config.probation_evaluations:
        after = replace(state, mode=GuardMode.MODEL, since_ts=now_ts, cause="", probation_passes=0,
                        cooldown_s=0, canary_share=0.0, last_eval_key=signal.evaluation_key,
                        figures_at_trip=(), counts=(), first_breach_ts=None, probation_failures=0,
                        action=GuardAction.POOL, bid_factor=1.0)
        tripped_since = max(state.trip_ts) if state.trip_ts else state.since_ts
        return after, events + [_event(GuardRestored, guard, campaign_id, now_ts, state, after, signal,
                                       tripped_for_s=now_ts - tripped_since)]
    if not failed and now_ts - state.since_ts >= config.probation_max_s:
        failed = "timeout"
    if failed:
        cooldown = min(int(max(state.cooldown_s, config.cooldown_s) * config.cooldown_backoff),
                       config.max_cooldown_s)
        after = replace(state, mode=GuardMode.TRIPPED, since_ts=now_ts, probation_passes=0,
                        cooldown_s=cooldown, canary_share=0.0, release_approved=False, waiting_note="",
                        last_eval_key=signal.evaluation_key, probation_failures=state.probation_failures + 1,
                        failures_day=day_start(now_ts))
        return after, events + [_event(ProbationFailed, guard, campaign_id, now_ts, state, after, signal,
                                       reason=failed, cooldown_s=cooldown)]
    return replace(state, probation_passes=passes,
                   last_eval_key=signal.evaluation_key if new_evaluation else state.last_eval_key), events


def force(state: MachineState, mode: str, actor: str, reason: str, now_ts: int, *,
          guard: str, campaign_id: str) -> tuple[MachineState, list[GuardEvent]]:
    """A manager's command: 'pool' / 'model' pin the campaign; 'auto' hands it back to the rules.

    'auto' on a FORCED state returns to MODEL (a fresh start); on TRIPPED it is the
    manager's release (needed when require_approval is on).
    """
    if mode == "pool":
        after = replace(state, mode=GuardMode.FORCED_POOL, since_ts=now_ts, cause="forced",
                        counts=(), first_breach_ts=None, canary_share=0.0)
    elif mode == "model":
        after = replace(state, mode=GuardMode.FORCED_MODEL, since_ts=now_ts, cause="forced",
                        counts=(), first_breach_ts=None, canary_share=0.0)
    elif mode == "auto":
        if state.mode is GuardMode.TRIPPED:
            after = replace(state, release_approved=True, waiting_note="")
        elif state.mode in FORCED_MODES:
            after = MachineState(mode=GuardMode.MODEL, since_ts=now_ts, trip_ts=state.trip_ts,
                                 stale=state.stale)
        else:
            raise InvalidValue("mode", mode, f"the guard is already automatic ({state.mode.value})")
    else:
        raise InvalidValue("mode", mode, "must be pool, model or auto")
    if not reason.strip():
        raise InvalidValue("reason", reason, "forcing a guard needs a reason")
    return after, [GuardForced(guard=guard, campaign_id=campaign_id, ts=now_ts, mode_before=state.mode,
                               mode_after=after.mode, actor=actor, reason=reason)]
