"""The effective policy in force now, built from the store.

The plan is the model's latest decision per slot (campaign x audience package):
among the decisions whose bucket is within `window_s` before the server's clock,
the newest bucket of each slot, last received first. Slots the model has not
decided for within the window are not in the policy (no live traffic). The window
counts back from the clock, not from the newest row stored: one row dated in the
future must not push every other slot out of the policy (and with it out of
overrides, trips and the kill switch).

The rule pool answers only for the slots whose campaign it serves (guard on the
pool or kill switch on), so asking it costs nothing while every guard is on the model.

`policy_version` names the inputs (newest decision, in-force overrides, guard
states, kill switch, active rule pool, launches) in one cheap query: a bidder that
polls gets "nothing changed" without the policy being resolved again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from sqlalchemy import Connection, func, select, text

from control.domain import OverrideStatus, RuleAnswer
from control.policy import PLAN_COLUMNS, pool_campaigns, resolve_policy
from control.rollout import slot_versions
from store import launch_repo, repo
from store import schema as s

# The rule pool's answer for one slot: (campaign_id, audience_package, bucket_ts, reference_bid).
PoolAnswerFn = Callable[[str, str, int, float], RuleAnswer | None]
PoolAnswers = Mapping[tuple[str, str], RuleAnswer] | PoolAnswerFn

DEFAULT_WINDOW_S = 3600


@dataclass(frozen=True, slots=True)
class PolicyFilter:
    campaign_id: str | None = None
    audience_package: str | None = None


NO_FILTER = PolicyFilter()

_PLAN_SQL = """
SELECT campaign_id, audience_package, bucket_ts, bid, audience_on, budget_share FROM (
  SELECT campaign_id, audience_package, bucket_ts, model_bid AS bid, audience_on, budget_share,
         ROW_NUMBER() OVER (PARTITION BY campaign_id, audience_package
                            ORDER BY bucket_ts DESC, decision_id DESC) AS rank
  FROM decisions
  WHERE bucket_ts >= :since {extra}
) latest WHERE rank = 1
ORDER BY campaign_id, audience_package
"""


def load_plan(conn: Connection, now_ts: int, *, window_s: int = DEFAULT_WINDOW_S,
              where: PolicyFilter = NO_FILTER) -> pd.DataFrame:
    """The model's latest decision per slot in the window before `now_ts` (columns PLAN_COLUMNS; `bid` is
    the model's bid)."""
    extra, params = "", {"since": int(now_ts) - window_s}
    if where.campaign_id is not None:
        extra += " AND campaign_id = :campaign_id"
        params["campaign_id"] = where.campaign_id
    if where.audience_package is not None:
        extra += " AND audience_package = :audience_package"
        params["audience_package"] = where.audience_package
    rows = conn.execute(text(_PLAN_SQL.format(extra=extra)), params).all()
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(PLAN_COLUMNS)
    frame = pd.DataFrame(dict(zip(PLAN_COLUMNS, columns, strict=True)))
    return frame.astype({"campaign_id": object, "audience_package": object, "bucket_ts": "int64",
                         "bid": "float64", "audience_on": bool, "budget_share": "float64"})


def policy_version(conn: Connection, now_ts: int, window_s: int = DEFAULT_WINDOW_S) -> str:
    """A short name for the policy's inputs now: equal names, equal policies. One round trip."""
    d, o, g, f = s.decisions.c, s.overrides.c, s.guard_states.c, s.control_flags.c
    pool = s.rule_pool_versions.c

    def one(*columns, where=None):
        q = select(*columns)
        return (q if where is None else q.where(where)).scalar_subquery()

    parts = conn.execute(select(
        one(func.max(d.decision_id)), one(func.max(d.bucket_ts)),
        # The window moves with the clock: its oldest bucket changes when a bucket leaves it.
        one(func.min(d.bucket_ts), where=d.bucket_ts >= int(now_ts) - window_s),
        # Any override change bumps its version; an approved one also stops being in force at
        # expires_ts without any write, which the count of those still in force catches.
        one(func.count(o.override_id)),
        one(func.coalesce(func.sum(o.version), 0)),
        one(func.count(o.override_id), where=(o.status == OverrideStatus.APPROVED.value) & (o.expires_ts > now_ts)),
        one(func.count(g.campaign_id)), one(func.coalesce(func.sum(g.version), 0)), one(func.max(g.updated_ts)),
        one(f.version, where=f.key == repo.KILL_SWITCH_KEY),
        one(func.max(pool.version), where=pool.status == "active"),
        # A launch, a rollout step or a rollback changes which version decides a slot.
        one(func.coalesce(func.sum(s.model_launches.c.version), 0)),
        one(func.coalesce(func.sum(s.models.c.version), 0)),
    )).one()
    return hashlib.sha256(repr(tuple(int(p or 0) for p in parts)).encode()).hexdigest()[:20]


def _pool_for(plan: pd.DataFrame, answers: PoolAnswers, served: set[str]) -> dict[tuple[str, str], RuleAnswer]:
    """The pool's answers for the plan rows of the campaigns it serves."""
    if isinstance(answers, Mapping):
        return dict(answers)
    rows = plan[plan["campaign_id"].isin(served)]
    out = {}
    for campaign_id, package, bucket_ts, bid in zip(rows["campaign_id"], rows["audience_package"],
                                                    rows["bucket_ts"], rows["bid"], strict=True):
        answer = answers(campaign_id, package, int(bucket_ts), float(bid))
        if answer is not None:
            out[(campaign_id, package)] = answer
    return out


def serving_versions(conn: Connection, plan: pd.DataFrame) -> np.ndarray:
    """Per plan slot, the model version that decides it (the launch gate): the live launch's version, or
    during its guarded rollout its share of the slots (control.rollout, by slot hash) and the previous
    version for the rest; None when no version has been launched."""
    live = launch_repo.live_launch(conn)
    if live is None:
        return np.full(len(plan), launch_repo.serving_version(conn), dtype=object)
    if not live.rolling_out:
        return np.full(len(plan), live.model_version, dtype=object)
    return slot_versions(plan["campaign_id"].tolist(), plan["audience_package"].tolist(), live.model_version,
                         live.previous_version, live.share)


def current_policy(conn: Connection, now_ts: int, pool_answers: PoolAnswers, *,
                   window_s: int = DEFAULT_WINDOW_S, where: PolicyFilter = NO_FILTER) -> pd.DataFrame:
    """The effective policy now, one row per live slot (columns control.policy.POLICY_COLUMNS and the
    `model_version` that should decide the slot)."""
    plan = load_plan(conn, now_ts, window_s=window_s, where=where)
    inputs = repo.load_policy_inputs(conn)
    served = pool_campaigns(plan["campaign_id"].unique(), inputs.guards, inputs.kill_switch)
    pool = _pool_for(plan, pool_answers, served) if served else {}
    policy = resolve_policy(plan, inputs.overrides, inputs.guards, inputs.kill_switch, pool, now_ts)
    return policy.assign(model_version=serving_versions(conn, plan))



# --- the rule pool's answers from its active version ------------------------------------------

class RuleAnswering(Protocol):
    def answer(self, campaign_id: str, audience_package: str, hour: int,
               reference_bid: float) -> RuleAnswer | None: ...


def pool_answer_fn(pool: RuleAnswering, hour_of: Callable[[int], int]) -> PoolAnswerFn:
    """Ask `pool` for a slot at its bucket's hour of the day; the reference bid is the model's bid."""
    def answer(campaign_id: str, audience_package: str, bucket_ts: int, reference_bid: float):
        return pool.answer(campaign_id, audience_package, int(hour_of(bucket_ts)), reference_bid)
    return answer


def rule_pool_provider(load_active: Callable[[Connection], tuple[int, RuleAnswering] | None],
                       hour_of: Callable[[int], int]) -> Callable[[Connection], PoolAnswers]:
    """Answers from the rule pool in force (`load_active` gives (version, pool) or None); none without one.

    Called when the policy's inputs changed, not on every poll."""
    def provider(conn: Connection) -> PoolAnswers:
        active = load_active(conn)
        return {} if active is None else pool_answer_fn(active[1], hour_of)
    return provider
