import math

import pandas as pd
import pytest

from app.ingest import Kind, prepare
from control.domain import (
    Campaign,
    InvalidValue,
    Override,
    OverrideField,
    OverrideScope,
    Rule,
    RuleAction,
    Slot,
)
from control.validation import validate_decisions, validate_outcomes

SLOT = Slot("c001", "gifting", 1_786_982_400)


def decision(**changes) -> pd.DataFrame:
    values = dict(campaign_id="c001", audience_package="gifting", bucket_ts=SLOT.bucket_ts, model_version="v1",
                  bid=1.2, budget_share=0.1, audience_on=True, pred_ctr=0.02, pred_cvr=0.03, pred_value=2.5,
                  pred_roi=2.1)
    values.update(changes)
    return pd.DataFrame([values])


@pytest.mark.parametrize("field,value", [
    ("bid", math.nan), ("bid", math.inf), ("bid", -0.5), ("budget_share", 1.5),
    ("budget_share", -0.1), ("pred_ctr", 2.0), ("model_version", ""),
])
def test_a_decision_row_with_a_bad_value_is_refused_naming_field_and_value(field, value):
    result = validate_decisions(decision(**{field: value}), SLOT.bucket_ts)
    assert result.accepted.empty
    [refusal] = result.refused
    assert refusal.field == field
    assert refusal.value == value or (refusal.value != refusal.value and value != value)


def test_empty_campaign_id_is_refused():
    with pytest.raises(InvalidValue, match="campaign_id=''"):
        Slot("", "gifting", 0)


def test_feature_values_must_be_finite():
    _, refusals = prepare(decision(features={"recent_cvr": math.nan}), Kind.DECISION)
    assert [r.field for r in refusals] == ["features"]


def test_outcome_cannot_be_known_before_its_bucket():
    outcome = pd.DataFrame([dict(campaign_id="c001", audience_package="gifting", bucket_ts=SLOT.bucket_ts,
                                 known_ts=SLOT.bucket_ts - 1, impressions=0, clicks=0, spend=0.0, orders=0,
                                 gmv=0.0)])
    [refusal] = validate_outcomes(outcome, SLOT.bucket_ts).refused
    assert refusal.field == "known_ts"


def test_campaign_budget_cap_not_below_budget():
    with pytest.raises(InvalidValue) as info:
        Campaign("c1", "n", "beauty", daily_budget=1000, budget_cap=500, avg_order_value=100, gross_margin=0.3)
    assert info.value.field == "budget_cap"


def test_override_audience_value_is_zero_or_one():
    with pytest.raises(InvalidValue):
        Override(1, OverrideScope("c1"), OverrideField.AUDIENCE_ON, 0.5, "r", "op", 0, 10)


def test_rule_hours_and_matching():
    rule = Rule("r1", RuleAction.FIXED_BID, 1.0, campaign_id=None, audience_package="gifting",
                hour_from=20, hour_to=24)
    assert rule.matches("any", "gifting", 23)
    assert not rule.matches("any", "gifting", 19)
    assert not rule.matches("any", "pets", 21)
    with pytest.raises(InvalidValue) as info:
        Rule("r2", RuleAction.FIXED_BID, 1.0, hour_from=10, hour_to=10)
    assert info.value.field == "hour_to"
