import math

import pytest

from control.domain import (
    Campaign,
    InvalidValue,
    ModelDecision,
    Outcome,
    Override,
    OverrideField,
    OverrideScope,
    Rule,
    RuleAction,
    Slot,
)

SLOT = Slot("c001", "gifting", 1_786_982_400)


def decision(**changes):
    values = dict(slot=SLOT, model_version="v1", bid=1.2, budget_share=0.1, audience_on=True,
                  pred_ctr=0.02, pred_cvr=0.03, pred_value=2.5, pred_roi=2.1)
    values.update(changes)
    return ModelDecision(**values)


@pytest.mark.parametrize("field,value", [
    ("bid", math.nan), ("bid", math.inf), ("bid", -0.5), ("budget_share", 1.5),
    ("budget_share", -0.1), ("pred_ctr", 2.0), ("model_version", ""),
])
def test_model_decision_refuses_bad_values_naming_field_and_value(field, value):
    with pytest.raises(InvalidValue) as info:
        decision(**{field: value})
    assert info.value.field == field
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_empty_campaign_id_is_refused():
    with pytest.raises(InvalidValue, match="campaign_id=''"):
        Slot("", "gifting", 0)


def test_feature_values_must_be_finite():
    with pytest.raises(InvalidValue) as info:
        decision(features={"recent_cvr": math.nan})
    assert info.value.field == "features.recent_cvr"


def test_outcome_cannot_be_known_before_its_bucket():
    with pytest.raises(InvalidValue) as info:
        Outcome(SLOT, known_ts=SLOT.bucket_ts - 1)
    assert info.value.field == "known_ts"


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
