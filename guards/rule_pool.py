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

Before a pool goes live, `validate_rule_pool` checks it against the campaigns and
audience packages the guard may switch (docs/GUARDS.md, "Manual rule pool"):
every slot and hour has a bid (no gaps), no two rules of the same kind and
priority that both match some slot say different things (contradictions),
bids and multipliers within bounds, no unknown campaign or package. Each
problem names the rule and the field.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from control.clock import PROMOTION_TZ_OFFSET_S
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

    def bid_rule(self, campaign_id: str, audience_package: str, hour: int) -> Rule | None:
        """The rule that sets the slot's bid (fixed_bid or multiplier), None for a gap."""
        fixed = self._best(RuleAction.FIXED_BID, campaign_id, audience_package, hour)
        multiplier = self._best(RuleAction.MULTIPLIER, campaign_id, audience_package, hour)
        if fixed is not None and (multiplier is None or fixed.priority >= multiplier.priority):
            return fixed
        return multiplier

    def answer(self, campaign_id: str, audience_package: str, hour: int,
               reference_bid: float) -> RuleAnswer | None:
        bid_rule = self.bid_rule(campaign_id, audience_package, hour)
        if bid_rule is None:
            return None
        bid = bid_rule.value if bid_rule.action is RuleAction.FIXED_BID else bid_rule.value * reference_bid
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


# --- validation before a pool goes live ----------------------------------------------------

@dataclass(frozen=True, slots=True)
class PoolBounds:
    min_bid: float = 0.05         # yuan per click
    max_bid: float = 50.0         # yuan per click (control.config max_bid)
    max_multiplier: float = 3.0   # on the reference bid (control.config max_bid_multiple)


@dataclass(frozen=True, slots=True)
class PoolProblem:
    """One reason a pool is refused: the rule (or "coverage" for a gap) and the field."""

    rule_id: str
    field: str
    value: object
    reason: str

    def __str__(self) -> str:
        return f"rule {self.rule_id}: {self.field}={self.value!r}: {self.reason}"


_BID_ACTIONS = (RuleAction.FIXED_BID, RuleAction.MULTIPLIER)


def _kind(action: RuleAction) -> str:
    return "bid" if action in _BID_ACTIONS else action.value


def _masks(rules: Sequence[Rule], campaigns: Sequence[str], packages: Sequence[str]) -> np.ndarray:
    """(rules, campaigns, packages, 24) booleans: where each rule matches."""
    campaigns_arr = np.asarray(campaigns, dtype=object)
    packages_arr = np.asarray(packages, dtype=object)
    hours = np.arange(24)
    out = np.zeros((len(rules), len(campaigns), len(packages), 24), dtype=bool)
    for k, r in enumerate(rules):
        c = np.ones(len(campaigns), bool) if r.campaign_id is None else campaigns_arr == r.campaign_id
        p = np.ones(len(packages), bool) if r.audience_package is None else packages_arr == r.audience_package
        h = (hours >= r.hour_from) & (hours < r.hour_to)
        out[k] = c[:, None, None] & p[None, :, None] & h[None, None, :]
    return out


def validate_rule_pool(pool: RulePool, campaigns: Sequence[str], packages: Sequence[str],
                       bounds: PoolBounds = PoolBounds()) -> list[PoolProblem]:
    """Every problem that keeps `pool` from going live for these campaigns and packages."""
    problems: list[PoolProblem] = []
    known_c, known_p = set(campaigns), set(packages)
    for r in pool.rules:
        if r.campaign_id is not None and r.campaign_id not in known_c:
            problems.append(PoolProblem(r.rule_id, "campaign_id", r.campaign_id, "unknown campaign"))
        if r.audience_package is not None and r.audience_package not in known_p:
            problems.append(PoolProblem(r.rule_id, "audience_package", r.audience_package,
                                        "unknown audience package"))
        if r.action is RuleAction.FIXED_BID and not bounds.min_bid <= r.value <= bounds.max_bid:
            problems.append(PoolProblem(r.rule_id, "value", r.value,
                                        f"a fixed bid must be within [{bounds.min_bid}, {bounds.max_bid}] yuan"))
        if r.action is RuleAction.MULTIPLIER and not 0 < r.value <= bounds.max_multiplier:
            problems.append(PoolProblem(r.rule_id, "value", r.value,
                                        f"a multiplier must be in (0, {bounds.max_multiplier}]"))
        if r.action is RuleAction.BUDGET_CAP and r.value <= 0:
            problems.append(PoolProblem(r.rule_id, "value", r.value, "a budget cap must be > 0"))

    rules = pool.rules
    masks = _masks(rules, list(campaigns), list(packages))
    # Contradictions: same kind, same priority, overlapping slots, different effect.
    for a in range(len(rules)):
        for b in range(a + 1, len(rules)):
            ra, rb = rules[a], rules[b]
            if _kind(ra.action) != _kind(rb.action) or ra.priority != rb.priority:
                continue
            if (ra.action, ra.value) == (rb.action, rb.value) or ra.action is RuleAction.AUDIENCE_OFF:
                continue
            overlap = masks[a] & masks[b]
            if overlap.any():
                ci, pi, h = (int(x[0]) for x in np.nonzero(overlap))
                problems.append(PoolProblem(
                    rb.rule_id, "priority", rb.priority,
                    f"contradicts rule {ra.rule_id} at the same priority (both match e.g. "
                    f"{campaigns[ci]} / {packages[pi]} at {h}:00): {ra.action.value}={ra.value} vs "
                    f"{rb.action.value}={rb.value}"))
    # Gaps: every slot the guard may switch needs a bid in every hour.
    bid_rows = [k for k, r in enumerate(rules) if r.action in _BID_ACTIONS]
    covered = masks[bid_rows].any(axis=0) if bid_rows else np.zeros(masks.shape[1:], dtype=bool)
    for ci, pi in zip(*np.nonzero(~covered.all(axis=2)), strict=True):
        hours = np.nonzero(~covered[ci, pi])[0]
        problems.append(PoolProblem(
            "coverage", "hours", _hour_ranges(hours),
            f"no bid rule answers campaign {campaigns[ci]}, audience package {packages[pi]}"))
    return problems


def _hour_ranges(hours: np.ndarray) -> str:
    spans, start = [], None
    for i, h in enumerate(hours.tolist()):
        if start is None:
            start = h
        if i + 1 == len(hours) or hours[i + 1] != h + 1:
            spans.append(f"{start}-{h + 1}")
            start = None
    return ",".join(spans)


def hour_of(ts: np.ndarray | int, tz_offset_s: int = PROMOTION_TZ_OFFSET_S):
    """Hour of the promotion day's clock (China time by default) for epoch seconds."""
    return (np.asarray(ts) + tz_offset_s) // 3600 % 24
