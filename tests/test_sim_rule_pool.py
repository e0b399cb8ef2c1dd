import pytest

from control.domain import InvalidValue, RuleAnswer
from guards.rule_pool import load_rule_pool
from sim.catalog import PACKAGE_CODES, campaign_ids
from sim.kit import load_default_pool

POOL = """
[[rules]]
rule_id = "base"
action = "multiplier"
value = 1.0

[[rules]]
rule_id = "pets-evening"
action = "multiplier"
value = 1.5
priority = 10
audience_package = "pets"
hour_from = 19
hour_to = 22

[[rules]]
rule_id = "c01-fixed"
action = "fixed_bid"
value = 3.0
priority = 10
campaign_id = "c01"

[[rules]]
rule_id = "c02-fixed-low"
action = "fixed_bid"
value = 9.0
priority = 5
campaign_id = "c02"

[[rules]]
rule_id = "c02-boost"
action = "multiplier"
value = 2.0
priority = 6
campaign_id = "c02"

[[rules]]
rule_id = "night-off"
action = "audience_off"
audience_package = "lapsed_buyers"
hour_from = 2
hour_to = 8

[[rules]]
rule_id = "cap-small"
action = "budget_cap"
value = 1000.0
priority = 1
campaign_id = "c03"

[[rules]]
rule_id = "cap-big"
action = "budget_cap"
value = 5000.0
priority = 2
campaign_id = "c03"
"""


def test_the_highest_priority_bid_rule_decides_and_a_tie_goes_to_the_fixed_bid():
    pool = load_rule_pool(POOL)
    assert pool.answer("c05", "pets", 20, 2.0) == RuleAnswer("pets-evening", 3.0)
    assert pool.answer("c05", "pets", 12, 2.0) == RuleAnswer("base", 2.0)
    assert pool.answer("c01", "pets", 20, 2.0) == RuleAnswer("c01-fixed", 3.0)  # tie at 10: fixed wins
    assert pool.answer("c02", "pets", 12, 2.0) == RuleAnswer("c02-boost", 4.0)  # 6 beats 5


def test_audience_off_and_budget_cap_apply_alongside_the_bid():
    pool = load_rule_pool(POOL)
    assert pool.answer("c05", "lapsed_buyers", 3, 1.0).audience_on is False
    assert pool.answer("c05", "lapsed_buyers", 8, 1.0).audience_on is True  # hour_to is exclusive
    assert pool.answer("c03", "pets", 0, 1.0).budget_cap == 5000.0
    assert pool.answer("c04", "pets", 0, 1.0).budget_cap is None


def test_a_slot_without_a_bid_rule_has_no_answer():
    pool = load_rule_pool('[[rules]]\nrule_id = "x"\naction = "fixed_bid"\nvalue = 1.0\ncampaign_id = "c01"\n')
    assert pool.answer("c02", "pets", 0, 1.0) is None


@pytest.mark.parametrize(("text", "field"), [
    ('[[rules]]\nrule_id = "x"\naction = "raise"\n', "rules[0].action"),
    ('[[rules]]\nrule_id = "x"\naction = "fixed_bid"\nvalue = -1.0\n', "rules[0].value"),
    ('[[rules]]\nrule_id = "x"\naction = "fixed_bid"\nhour_to = 30\n', "rules[0].hour_to"),
    ('[[rules]]\nrule_id = "x"\naction = "fixed_bid"\ncolour = "red"\n', "rules[0].colour"),
    ('[[rules]]\nrule_id = "x"\naction = "fixed_bid"\n[[rules]]\nrule_id = "x"\naction = "fixed_bid"\n',
     "rules[1].rule_id"),
])
def test_a_bad_rule_is_refused_naming_the_rule_and_field(text, field):
    with pytest.raises(InvalidValue) as caught:
        load_rule_pool(text)
    assert caught.value.field == field


def test_the_default_pool_answers_every_slot_of_the_default_catalog_every_hour():
    pool = load_default_pool()
    for hour in range(24):
        for cid in campaign_ids(40):
            for code in PACKAGE_CODES:
                answer = pool.answer(cid, code, hour, 2.0)
                assert answer is not None and answer.bid > 0 and answer.budget_cap is not None


@pytest.mark.slow
def test_the_shipped_default_pool_is_what_the_generator_writes_from_history(monkeypatch, tmp_path):
    import sim.train as train

    shipped = train.RULE_POOL_FILE.read_text(encoding="utf-8")
    monkeypatch.setattr(train, "RULE_POOL_FILE", tmp_path / "pool.toml")
    assert train.write_default_rule_pool() == shipped
