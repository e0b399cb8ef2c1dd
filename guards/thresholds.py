"""Guard thresholds people may edit (panel, CLI), layered on top of the guard config file.

The file (guards/guard_defaults.toml overlaid by BIDLENS_GUARD_CONFIG) gives every
guard's defaults and per-campaign values; edits kept in the store go on top:

    effective(campaign) = file defaults <- file per-campaign
                          <- edits for all campaigns <- edits for that campaign

An edit "for all campaigns" reaches every campaign, including those with their own
lines in the file; a campaign's own edit wins over everything. Each value passes the
file loader's own checks (guards.config.apply_table), so an edit is refused exactly
as the same key in the file would be, naming the dotted key
(`roi.campaigns.c07.floor=-1: must be >= 0.0`).

Pure: edits in, edits out. guards.threshold_store reads and writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from control.domain import InvalidValue
from guards.config import GUARD_CONFIG_TYPES, GuardSettings, MachineConfig, apply_table

# What people tune during a promotion: the floor (or limit), hysteresis, the minimum volume
# before a rule counts, and how fast the machine trips (consecutive) and cools down.
EDITABLE: dict[str, tuple[str, ...]] = {
    "roi": ("floor", "hysteresis", "min_pred_spend", "realised_min_spend", "consecutive", "cooldown_s"),
    "pacing": ("max_ahead", "hysteresis", "min_elapsed_s", "consecutive", "cooldown_s"),
    "inventory": ("min_level", "hysteresis", "consecutive", "cooldown_s"),
    "competitor": ("max_drop", "hysteresis", "consecutive", "cooldown_s"),
    "low_stock": ("min_days", "hysteresis", "consecutive"),
}
_MACHINE_FIELDS = frozenset(f.name for f in fields(MachineConfig))

# Where an effective value comes from.
FROM_FILE, FROM_ALL, FROM_CAMPAIGN = "file", "all_campaigns", "campaign"

Values = dict[str, float | int]


def field_type(guard: str, name: str) -> type:
    """int or float: the type the config file's default has."""
    default = GUARD_CONFIG_TYPES[guard]()
    return type(getattr(default.machine if name in _MACHINE_FIELDS else default, name))


def values_of(config, guard: str) -> Values:
    """The editable fields of one guard's config."""
    return {name: getattr(config.machine if name in _MACHINE_FIELDS else config, name) for name in EDITABLE[guard]}


def scope_key(guard: str, campaign_id: str | None) -> str:
    """The dotted prefix the config file uses for this scope (`roi`, `roi.campaigns.c07`)."""
    return guard if campaign_id is None else f"{guard}.campaigns.{campaign_id}"


@dataclass(frozen=True)
class ThresholdEdits:
    """The store's edits: per guard, values for all campaigns, and per campaign."""

    all_campaigns: dict[str, Values] = field(default_factory=dict)          # guard -> values
    campaigns: dict[str, dict[str, Values]] = field(default_factory=dict)   # guard -> campaign_id -> values

    def for_scope(self, guard: str, campaign_id: str | None) -> Values:
        if campaign_id is None:
            return dict(self.all_campaigns.get(guard, {}))
        return dict(self.campaigns.get(guard, {}).get(campaign_id, {}))

    def with_scope(self, guard: str, campaign_id: str | None, values: Values) -> ThresholdEdits:
        """A copy with the scope's values replaced (empty values: the scope has no edits)."""
        all_campaigns = {g: dict(v) for g, v in self.all_campaigns.items()}
        campaigns = {g: {c: dict(v) for c, v in per.items()} for g, per in self.campaigns.items()}
        target = all_campaigns if campaign_id is None else campaigns.setdefault(guard, {})
        key = guard if campaign_id is None else campaign_id
        if values:
            target[key] = dict(values)
        else:
            target.pop(key, None)
        return ThresholdEdits(all_campaigns, {g: per for g, per in campaigns.items() if per})

    def to_json(self) -> dict:
        return {"all_campaigns": self.all_campaigns, "campaigns": self.campaigns}

    @classmethod
    def from_json(cls, doc: dict | None) -> ThresholdEdits:
        doc = doc or {}
        return cls({g: dict(v) for g, v in doc.get("all_campaigns", {}).items()},
                   {g: {c: dict(v) for c, v in per.items()} for g, per in doc.get("campaigns", {}).items()})


@dataclass(frozen=True)
class ThresholdEdit:
    """One person's change to one guard's thresholds, for all campaigns (campaign_id None) or one."""

    guard: str
    campaign_id: str | None
    values: Values
    reason: str


def _check_guard(guard: str) -> None:
    if guard not in EDITABLE:
        raise InvalidValue("guard", guard, f"must be one of {list(EDITABLE)}")


def check_reason(reason: str) -> None:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidValue("reason", reason, "a threshold change needs a reason")


def scoped_config(file: GuardSettings, edits: ThresholdEdits, guard: str, campaign_id: str | None):
    """One guard's effective config for all campaigns (None) or one campaign; InvalidValue if the layers clash."""
    prefix = scope_key(guard, campaign_id)
    base = file.defaults[guard] if campaign_id is None else file.for_campaign(guard, campaign_id)
    config = apply_table(prefix, base, edits.for_scope(guard, None))
    if campaign_id is not None:
        config = apply_table(prefix, config, edits.for_scope(guard, campaign_id))
    return config


def effective_settings(file: GuardSettings, edits: ThresholdEdits) -> GuardSettings:
    """The file's settings with the store's edits on top (what the guard worker evaluates with)."""
    defaults = {g: scoped_config(file, edits, g, None) for g in file.defaults}
    per_campaign = {}
    for g in file.defaults:
        ids = set(file.per_campaign.get(g, {})) | set(edits.campaigns.get(g, {}))
        per_campaign[g] = {c: scoped_config(file, edits, g, c) for c in sorted(ids)}
    return GuardSettings(file.observe, defaults, per_campaign)


def apply_edit(file: GuardSettings, edits: ThresholdEdits, edit: ThresholdEdit) -> ThresholdEdits:
    """The edits with `edit` applied, every value checked as the config file's would be."""
    _check_guard(edit.guard)
    check_reason(edit.reason)
    prefix = scope_key(edit.guard, edit.campaign_id)
    if not edit.values:
        raise InvalidValue(f"{prefix}", {}, "nothing to change")
    for name, value in edit.values.items():
        if name not in EDITABLE[edit.guard]:
            raise InvalidValue(f"{prefix}.{name}", value, f"not editable; editable: {list(EDITABLE[edit.guard])}")
    current = scoped_config(file, edits, edit.guard, edit.campaign_id)
    typed = values_of(apply_table(prefix, current, dict(edit.values)), edit.guard)
    merged = edits.for_scope(edit.guard, edit.campaign_id) | {k: typed[k] for k in edit.values}
    result = edits.with_scope(edit.guard, edit.campaign_id, merged)
    effective_settings(file, result)  # an edit for all campaigns must fit every campaign's own values too
    return result


def reset(edits: ThresholdEdits, campaign_id: str | None, guard: str | None = None) -> ThresholdEdits:
    """Drop the scope's edits (every guard's when guard is None): it follows the layers below again."""
    guards = list(EDITABLE) if guard is None else [guard]
    if guard is not None:
        _check_guard(guard)
    for g in guards:
        edits = edits.with_scope(g, campaign_id, {})
    return edits


def describe(file: GuardSettings, edits: ThresholdEdits, guard: str, campaign_id: str | None) -> dict[str, dict]:
    """Each editable field of the scope: its effective value, its file value, and which layer set it."""
    _check_guard(guard)
    effective = values_of(scoped_config(file, edits, guard, campaign_id), guard)
    in_file = values_of(file.defaults[guard] if campaign_id is None else file.for_campaign(guard, campaign_id), guard)
    own = edits.for_scope(guard, campaign_id)
    everyone = edits.for_scope(guard, None)
    return {name: {"value": effective[name], "file": in_file[name],
                   "source": FROM_CAMPAIGN if campaign_id is not None and name in own
                   else FROM_ALL if name in everyone else FROM_FILE}
            for name in EDITABLE[guard]}
