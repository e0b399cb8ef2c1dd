"""The current effective policy built from the store (app.current_policy)."""

from __future__ import annotations

import pandas as pd

from app.current_policy import (
    PolicyFilter,
    current_policy,
    load_plan,
    policy_version,
    pool_answer_fn,
    rule_pool_provider,
)
from app.ingest import Kind, ingest_frame
from control.domain import GuardMode, RuleAnswer
from control.policy import POLICY_COLUMNS
from guards.pool_store import load_active_pool
from guards.rule_pool import hour_of
from store import repo
from store import schema as s
from tests.api_support import CAMPAIGNS, NOW, decision_rows, frame, make_store


def _store(tmp_path, *batches):
    engine = make_store(tmp_path)
    for rows in batches:
        accepted, refused = ingest_frame(engine, Kind.DECISION, frame(rows), now_ts=NOW, source="t",
                                         quarantine_source="t", known_campaigns=set(CAMPAIGNS))
        assert refused == []
    return engine


def test_the_plan_is_the_newest_model_decision_of_each_slot(tmp_path):
    old = decision_rows(9, bucket_ts=NOW - 120, seed=1)
    new = decision_rows(3, bucket_ts=NOW - 60, seed=2)  # c1/c2/c3 x parenting only
    for row in new:
        row["model_bid"], row["bid"] = row["bid"], 9.0  # served differently: the plan is the model's bid
    engine = _store(tmp_path, old, new)
    with engine.connect() as conn:
        plan = load_plan(conn, NOW)
    assert len(plan) == 9
    fresh = plan[plan["audience_package"] == "parenting"]
    assert set(fresh["bucket_ts"]) == {NOW - 60}
    assert sorted(fresh["bid"]) == sorted(r["model_bid"] for r in new)
    assert set(plan[plan["audience_package"] != "parenting"]["bucket_ts"]) == {NOW - 120}


def test_slots_older_than_the_window_are_not_live(tmp_path):
    engine = _store(tmp_path, decision_rows(9, bucket_ts=NOW - 7200), decision_rows(3, bucket_ts=NOW))
    with engine.connect() as conn:
        assert len(load_plan(conn, NOW, window_s=3600)) == 3
        assert len(load_plan(conn, NOW, window_s=7200)) == 9
        assert len(load_plan(conn, NOW, where=PolicyFilter("c2"), window_s=7200)) == 3
        assert len(load_plan(conn, NOW, where=PolicyFilter("c2", "moving"), window_s=7200)) == 1


def test_an_empty_store_has_an_empty_policy(tmp_path):
    engine = make_store(tmp_path)
    with engine.connect() as conn:
        policy = current_policy(conn, NOW, {})
    assert len(policy) == 0 and tuple(policy.columns) == (*POLICY_COLUMNS, "model_version")


def test_the_pool_is_asked_only_for_campaigns_it_serves(tmp_path):
    engine = _store(tmp_path, decision_rows(9))
    asked = []

    def pool(campaign_id, package, bucket_ts, reference_bid):
        asked.append(campaign_id)
        return RuleAnswer("r1", reference_bid * 0.5)

    with engine.connect() as conn:
        assert set(current_policy(conn, NOW, pool)["decided_by"]) == {"model"}
    assert asked == []
    with engine.begin() as conn:
        conn.execute(s.guard_states.insert().values(guard="roi", campaign_id="c2", mode=GuardMode.PROBATION.value,
                                                    state={"canary_share": 0.1}, event_id=5, version=1,
                                                    updated_ts=NOW))
    with engine.connect() as conn:
        policy = current_policy(conn, NOW, pool)
    assert asked == ["c2"] * 3
    c2 = policy[policy["campaign_id"] == "c2"]
    assert set(c2["decided_by"]) == {"rule_pool"} and set(c2["canary_share"]) == {0.1}
    pd.testing.assert_series_equal(c2["bid"], c2["model_bid"] * 0.5, check_names=False)
    assert set(policy[policy["campaign_id"] != "c2"]["decided_by"]) == {"model"}


def test_the_version_moves_with_every_input_and_only_then(tmp_path):
    engine = _store(tmp_path, decision_rows(9))
    with engine.connect() as conn:
        v0 = policy_version(conn, NOW)
        assert policy_version(conn, NOW + 100) == v0
    versions = {v0}
    changes = [
        lambda c: c.execute(s.decisions.update().values(bid=1.0).where(s.decisions.c.decision_id == -1)),  # no-op
        lambda c: repo.set_flag(c, repo.KILL_SWITCH_KEY, {"global": True, "campaigns": []}, "t", NOW),
        lambda c: c.execute(s.guard_states.insert().values(guard="roi", campaign_id="c1", mode="tripped",
                                                           state={}, version=1, updated_ts=NOW)),
        lambda c: c.execute(s.rule_pool_versions.insert().values(version=3, created_ts=NOW, created_by="t",
                                                                 source="", status="active")),
    ]
    for i, change in enumerate(changes):
        with engine.begin() as conn:
            change(conn)
        with engine.connect() as conn:
            version = policy_version(conn, NOW)
        assert (version in versions) == (i == 0)
        versions.add(version)
    ingest_frame(engine, Kind.DECISION, frame(decision_rows(1, bucket_ts=NOW)), now_ts=NOW, source="t",
                 quarantine_source="t", known_campaigns=None)
    with engine.connect() as conn:
        assert policy_version(conn, NOW) not in versions


def test_rule_hours_are_hours_of_the_day_in_china():
    class Pool:
        def answer(self, campaign_id, audience_package, hour, reference_bid):
            return RuleAnswer(f"h{hour}", reference_bid)

    ask = pool_answer_fn(Pool(), hour_of)
    assert ask("c1", "p", NOW, 1.0).rule_id == "h0"           # 16:00 UTC is midnight in Beijing
    assert ask("c1", "p", NOW + 8 * 3600 + 59, 1.0).rule_id == "h8"


def test_the_provider_answers_from_the_pool_in_force(tmp_path):
    engine = make_store(tmp_path)
    provider = rule_pool_provider(load_active_pool, hour_of)
    with engine.connect() as conn:
        assert provider(conn) == {}
    with engine.begin() as conn:
        conn.execute(s.rule_pool_versions.insert().values(
            version=1, created_ts=NOW, created_by="t", status="active",
            source='[[rules]]\nrule_id = "half"\naction = "multiplier"\nvalue = 0.5\n'))
    with engine.connect() as conn:
        answer = provider(conn)("c1", "parenting", NOW, 2.0)
    assert (answer.rule_id, answer.bid) == ("half", 1.0)
