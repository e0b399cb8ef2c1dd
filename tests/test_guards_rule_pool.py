"""Manual rule pool: answers, validation before going live, versions, shadow score, and the policy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.domain import (
    DecidedBy,
    GuardMode,
    GuardState,
    Override,
    OverrideField,
    OverrideScope,
    OverrideStatus,
    Slot,
)
from control.policy import KillSwitch, SlotPlan, resolve_policy, resolve_slot
from guards.pool_store import active_version, list_versions, load_active_pool, submit_pool
from guards.rule_pool import PoolBounds, load_rule_pool, validate_rule_pool
from guards.shadow import roi_comparison, shadow_score
from store import repo
from tests.guards_helpers import PACKAGES, T0, feed_minute, make_store

CAMPAIGNS = ["c1", "c2"]

GOOD = """
[[rules]]
rule_id = "base"
action = "multiplier"
value = 0.8

[[rules]]
rule_id = "pets-night"
action = "fixed_bid"
value = 1.2
priority = 5
audience_package = "pets"
hour_from = 0
hour_to = 8

[[rules]]
rule_id = "c2-cap"
action = "budget_cap"
value = 5000.0
campaign_id = "c2"

[[rules]]
rule_id = "beauty-off-late"
action = "audience_off"
audience_package = "beauty"
hour_from = 22
"""


def problems(text: str, bounds: PoolBounds | None = None):
    return validate_rule_pool(load_rule_pool(text), CAMPAIGNS, list(PACKAGES), bounds or PoolBounds())


def test_answers_follow_priority_and_kinds():
    pool = load_rule_pool(GOOD)
    assert problems(GOOD) == []
    night = pool.answer("c1", "pets", 3, reference_bid=2.0)
    assert (night.rule_id, night.bid, night.audience_on) == ("pets-night", 1.2, True)
    day = pool.answer("c2", "pets", 12, reference_bid=2.0)
    assert (day.rule_id, day.bid, day.budget_cap) == ("base", 1.6, 5000.0)
    assert pool.answer("c1", "beauty", 23, 1.0).audience_on is False


def test_gaps_are_refused_with_the_slot_named():
    text = GOOD.replace('value = 0.8\n', 'value = 0.8\nhour_from = 8\n', 1)
    found = problems(text)
    assert found and all(p.rule_id == "coverage" for p in found)
    # pets is covered 0-8 by pets-night; beauty is not covered at night at all.
    beauty = [p for p in found if "beauty" in p.reason]
    assert beauty[0].value == "0-8" and "c1" in beauty[0].reason


def test_contradictions_at_the_same_priority_are_refused():
    text = GOOD + '\n[[rules]]\nrule_id = "pets-night-2"\naction = "multiplier"\nvalue = 1.5\npriority = 5\n' \
                  'audience_package = "pets"\nhour_from = 6\nhour_to = 10\n'
    found = problems(text)
    assert [(p.rule_id, p.field) for p in found] == [("pets-night-2", "priority")]
    assert "pets-night" in found[0].reason


def test_bounds_and_unknown_names_are_refused_naming_rule_and_field():
    text = GOOD.replace("value = 1.2", "value = 80.0").replace('campaign_id = "c2"', 'campaign_id = "c9"')
    found = {(p.rule_id, p.field) for p in problems(text)}
    assert found == {("pets-night", "value"), ("c2-cap", "campaign_id")}
    assert {(p.rule_id, p.field) for p in problems(GOOD.replace("value = 0.8", "value = 7.0"))} == {("base", "value")}


def test_parse_errors_name_the_rule_and_field():
    with pytest.raises(Exception, match=r"rules\[0\]\.hour_to"):
        load_rule_pool('[[rules]]\nrule_id="x"\naction="fixed_bid"\nvalue=1.0\nhour_from=5\nhour_to=3\n')


def test_versions_refuse_invalid_and_keep_the_last_valid(tmp_path):
    engine = make_store(tmp_path / "b.db", CAMPAIGNS)
    with engine.begin() as conn:
        first = submit_pool(conn, GOOD, "ethan", T0, PoolBounds())
        bad = submit_pool(conn, GOOD.replace("value = 1.2", "value = 99.0"), "ethan", T0 + 60, PoolBounds())
        broken = submit_pool(conn, "[[rules]]\nrule_id = 1\n", "ethan", T0 + 120, PoolBounds())
    assert (first.status, bad.status, broken.status) == ("active", "refused", "refused")
    assert "pets-night" in bad.error and "value=99.0" in bad.error
    with engine.connect() as conn:
        assert active_version(conn).version == first.version
        version, pool = load_active_pool(conn)
        assert version == 1 and pool.answer("c1", "pets", 3, 1.0).rule_id == "pets-night"
        assert [v.status for v in list_versions(conn)] == ["active", "refused", "refused"]
        audit = repo.load_audit(conn, entity="rule_pool")
    assert [a.action for a in audit] == ["rule_pool.activate", "rule_pool.refuse", "rule_pool.refuse"]
    with engine.begin() as conn:
        second = submit_pool(conn, GOOD.replace("value = 0.8", "value = 0.9"), "mia", T0 + 180, PoolBounds())
        assert second.status == "active"
        assert [v.status for v in list_versions(conn)] == ["superseded", "refused", "refused", "active"]


def test_shadow_score_and_the_model_vs_pool_comparison(tmp_path):
    pool = load_rule_pool(GOOD)
    plan = pd.DataFrame({"campaign_id": ["c1", "c1", "c2"], "audience_package": ["pets", "beauty", "beauty"],
                         "bucket_ts": [T0 + 3600 * 12] * 3,  # 12:00 in Shanghai
                         "model_bid": [2.0, 2.0, 1.0], "pred_roi": [1.8, 1.8, 3.0]})
    scored = shadow_score(plan, pool)
    # base multiplier 0.8: pool bid 1.6 for a model bid of 2.0 -> ROI 1.8 x 2.0 / 1.6
    assert scored["pool_bid"].tolist() == pytest.approx([1.6, 1.6, 0.8])
    assert scored["pool_pred_roi"].tolist() == pytest.approx([2.25, 2.25, 3.75])
    assert scored["pool_rule_id"].tolist() == ["base"] * 3
    late = shadow_score(plan.assign(bucket_ts=T0 + 3600 * 23), pool)  # 23:00: beauty switched off
    assert np.isnan(late["pool_pred_roi"].to_numpy()[1:]).all()

    engine = make_store(tmp_path / "b.db", CAMPAIGNS)
    feed_minute(engine, 0, {"c1": 1.8, "c2": 2.6})
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE decisions SET pool_pred_roi = 2.3")
    with engine.connect() as conn:
        table = roi_comparison(conn, T0, T0 + 60).set_index("campaign_id")
    assert table.loc["c1", "model_pred_roi"] == pytest.approx(1.8)
    assert table.loc["ALL", "model_pred_roi"] == pytest.approx(2.2)
    assert table.loc["ALL", "pool_pred_roi"] == pytest.approx(2.3)


# A tripped campaign's slots are always served by the pool or an override.
rule_strategy = st.fixed_dictionaries({
    "campaign": st.sampled_from([None, *CAMPAIGNS]), "package": st.sampled_from([None, *PACKAGES]),
    "hours": st.tuples(st.integers(0, 23), st.integers(1, 24)).filter(lambda h: h[0] < h[1]),
    "action": st.sampled_from(["fixed_bid", "multiplier", "audience_off"]), "priority": st.integers(1, 3)})


def _pool_text(extra):
    lines = ['[[rules]]\nrule_id = "base"\naction = "multiplier"\nvalue = 0.8\n']
    for i, r in enumerate(extra):
        value = 1.0 if r["action"] != "audience_off" else 0.0
        lines.append(f'[[rules]]\nrule_id = "r{i}"\naction = "{r["action"]}"\nvalue = {value + 0.1 * i}\n'
                     f'priority = {r["priority"]}\nhour_from = {r["hours"][0]}\nhour_to = {r["hours"][1]}\n'
                     + (f'campaign_id = "{r["campaign"]}"\n' if r["campaign"] else "")
                     + (f'audience_package = "{r["package"]}"\n' if r["package"] else ""))
    return "\n".join(lines)


@settings(max_examples=60, deadline=None)
@given(st.lists(rule_strategy, max_size=6), st.sampled_from(sorted(set(GuardMode) - {GuardMode.MODEL,
                                                                                   GuardMode.FORCED_MODEL})),
       st.booleans(), st.integers(0, 23))
def test_tripped_slots_are_served_by_the_pool_or_an_override(extra, mode, with_override, hour):
    pool = load_rule_pool(_pool_text(extra))
    if validate_rule_pool(pool, CAMPAIGNS, list(PACKAGES)):
        return  # a refused pool never goes live
    bucket = T0 - 8 * 3600 + hour * 3600
    overrides = [Override(1, OverrideScope("c1", "pets"), OverrideField.BID, 1.0, "test", "olivia", T0 - 9 * 3600,
                          T0 + 86400, OverrideStatus.APPROVED, "mia", T0 - 9 * 3600)] if with_override else []
    guards = {"c1": GuardState("c1", mode, 0.1, 7)}
    answers = {(c, p): pool.answer(c, p, hour, 2.0) for c in CAMPAIGNS for p in PACKAGES}
    rows = []
    for p in PACKAGES:
        plan = SlotPlan(Slot("c1", p, bucket), 2.0, True, 0.5)
        decided = resolve_slot(plan, overrides, guards["c1"], KillSwitch(), answers[("c1", p)], bucket)
        assert decided.decided_by in (DecidedBy.RULE_POOL, DecidedBy.OVERRIDE)
        rows.append({"campaign_id": "c1", "audience_package": p, "bucket_ts": bucket, "bid": 2.0,
                     "audience_on": True, "budget_share": 0.5})
    policy = resolve_policy(pd.DataFrame(rows), overrides, guards, KillSwitch(), answers, bucket)
    assert set(policy["decided_by"]) <= {DecidedBy.RULE_POOL.value, DecidedBy.OVERRIDE.value}
