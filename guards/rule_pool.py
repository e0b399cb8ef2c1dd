"""The manual rule pool (人工规则池): human-written rules, evaluated per slot.

A pool is a TOML document of `[[rules]]` tables with the fields of
`control.domain.Rule` (rule_id, action, value, priority, campaign_id,
audience_package, hour_from, hour_to, note). For a slot (campaign, audience
package, hour) the highest-priority matching rule of each action kind applies
(ties: the rule listed first):

- the bid comes from the best `fixed_bid` or `multiplier` rule, whichever has the
  higher priority (a tie goes to `fixed_bid`): the value itself, or the value
  times the slot's reference bid;
- `audience_off` switches the audience package off;
- `budget_cap` caps the campaign's spend for the day.

A slot with no bid rule has no answer (None): a gap, which pool validation refuses.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields

from control.domain import InvalidValue, Rule, RuleAction, RuleAnswer

_RULE_FIELDS = {f.name for f in fields(Rule)}


def _rule(i: int, table: object) -> Rule:
    if not isinstance(table, dict):
        raise InvalidValue(f"rules[{i}]", table, "must be a table")
    for key in table:
        if key not in _RULE_FIELDS:
            raise InvalidValue(f"rules[{i}].{key}", table[key], f"unknown key; known: {sorted(_RULE_FIELDS)}")
    values = dict(table)
    try:
        values["action"] = RuleAction(values.get("action"))
    except ValueError:
        raise InvalidValue(f"rules[{i}].action", values.get("action"),
                           f"must be one of {[a.value for a in RuleAction]}") from None
    try:
        return Rule(**values)
    except InvalidValue as exc:
        raise InvalidValue(f"rules[{i}].{exc.field}", exc.value, exc.reason) from None
    except TypeError as exc:  # a required field missing
        raise InvalidValue(f"rules[{i}]", table, str(exc)) from None


@dataclass(frozen=True)
class RulePool:
    rules: tuple[Rule, ...]

    def _best(self, action: RuleAction, campaign_id: str, audience_package: str, hour: int) -> Rule | None:
        best = None
        for rule in self.rules:
            if rule.action is action and rule.matches(campaign_id, audience_package, hour) \
                    and (best is None or rule.priority > best.priority):
                best = rule
        return best

    def answer(self, campaign_id: str, audience_package: str, hour: int,
               reference_bid: float) -> RuleAnswer | None:
        fixed = self._best(RuleAction.FIXED_BID, campaign_id, audience_package, hour)
        multiplier = self._best(RuleAction.MULTIPLIER, campaign_id, audience_package, hour)
        if fixed is None and multiplier is None:
            return None
        if fixed is not None and (multiplier is None or fixed.priority >= multiplier.priority):
            bid_rule, bid = fixed, fixed.value
        else:
            bid_rule, bid = multiplier, multiplier.value * reference_bid
        off = self._best(RuleAction.AUDIENCE_OFF, campaign_id, audience_package, hour)
        cap = self._best(RuleAction.BUDGET_CAP, campaign_id, audience_package, hour)
        return RuleAnswer(bid_rule.rule_id, bid, audience_on=off is None,
                          budget_cap=None if cap is None else cap.value)


def load_rule_pool(text: str) -> RulePool:
    """Parse a rule pool TOML document; a bad rule raises InvalidValue naming rules[i].field."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidValue("rule_pool", None, f"not valid TOML: {exc}") from None
    unknown = set(doc) - {"rules"}
    if unknown:
        key = sorted(unknown)[0]
        raise InvalidValue(key, doc[key], "unknown key; a rule pool has only [[rules]]")
    raw = doc.get("rules", [])
    if not isinstance(raw, list):
        raise InvalidValue("rules", raw, "must be an array of tables ([[rules]])")
    rules = tuple(_rule(i, t) for i, t in enumerate(raw))
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        if rule.rule_id in seen:
            raise InvalidValue(f"rules[{i}].rule_id", rule.rule_id, "is used by an earlier rule")
        seen.add(rule.rule_id)
    return RulePool(rules)
