"""Scenarios as data: a TOML file with the world's parameters and timed events.

The schema is documented in docs/SIMULATOR.md. Loading is strict: an unknown
key, a value of the wrong kind or out of range, an event outside the day, an
unknown campaign, audience package or category is refused before anything runs,
with the file, the key and the value named (`ScenarioError`).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from control.domain import DEFAULT_ROI_FLOOR, InvalidValue
from sim.catalog import CATEGORIES, MINUTES_PER_DAY, PACKAGE_CODES, campaign_ids

SCENARIO_DIR = Path(__file__).parent / "scenarios"
VARIANTS = ("roi", "gmv")


class ScenarioError(InvalidValue):
    """A scenario file refused; names the file, the key and the value."""

    def __init__(self, source: str, key: str, value: object, reason: str):
        self.source = source
        super().__init__(key, value, reason)
        self.args = (f"{source}: {key} = {value!r}: {reason}",)

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class WorldParams:
    campaigns: int = 40             # number of campaigns (ids c01, c02, ...)
    catalog_seed: int = 818         # fixes the campaigns' attributes (not the run's noise)
    traffic_scale: float = 1.0      # multiplies auction opportunities
    promo_intensity: float = 1.0    # 0 an ordinary day, 1 a full promotion (midnight rush, peaks, discounts)
    competitor_bid_level: float = 1.0  # multiplies competitors' median bid
    competitor_pressure: float = 0.3   # how much competitors bid up at traffic peaks
    competitor_bid_spread: float = 0.45  # lognormal sigma of competitors' bids
    ctr_noise: float = 0.08         # the day's per-slot CTR deviation (lognormal sigma)
    cvr_noise: float = 0.12         # the day's per-slot CVR deviation (lognormal sigma)
    stock_days: float = 3.0         # opening stock, in days of expected orders
    lag_minutes: tuple[int, ...] = (0, 5, 15, 30, 60, 120, 240, 480)  # conversion lag offsets
    lag_shares: tuple[float, ...] = (0.35, 0.2, 0.14, 0.11, 0.09, 0.06, 0.03, 0.02)


@dataclass(frozen=True)
class BidderParams:
    variant: str = "roi"            # the model variant serving at minute 0: roi | gmv
    target_roi: float = 2.0         # roi variant: bid = predicted value per click / target_roi
    gmv_target_roi: float = 1.2     # gmv variant's divisor: it buys GMV at a thin return
    floor_roi: float = DEFAULT_ROI_FLOOR  # audience package off when predicted ROI is below this
    min_bid: float = 0.2            # yuan per click
    max_bid: float = 60.0           # yuan per click


_SHIFT_KEYS = {"until_minute", "ramp_minutes", "campaigns", "audience_packages", "categories"}
EVENT_KINDS = {
    # kind: (required keys, optional keys)
    "cvr_shift": ({"factor"}, _SHIFT_KEYS),
    "ctr_shift": ({"factor"}, _SHIFT_KEYS),
    "order_value_shift": ({"factor"}, _SHIFT_KEYS),
    "competitor_bid_surge": ({"factor"}, _SHIFT_KEYS),
    "competitor_price_drop": ({"drop"}, {"until_minute", "campaigns", "categories"}),
    "stockout": ({"campaigns"}, {"until_minute"}),
    "outcome_outage": (set(), {"until_minute"}),
    "switch_model": ({"variant"}, set()),
}


@dataclass(frozen=True)
class Event:
    kind: str
    at_minute: int
    until_minute: int = MINUTES_PER_DAY
    campaigns: tuple[str, ...] = ()          # empty: every campaign
    audience_packages: tuple[str, ...] = ()  # empty: every package
    categories: tuple[str, ...] = ()         # empty: every category
    factor: float = 1.0
    drop: float = 0.0
    variant: str = ""
    ramp_minutes: int = 0   # a shift reaches `factor` gradually over this many minutes (0: at once)

    def active(self, minute: int) -> bool:
        return self.at_minute <= minute < self.until_minute

    def factor_at(self, minute: int) -> float:
        """The shift's factor at this minute: moving from 1 to `factor` over the ramp, then held."""
        if self.ramp_minutes <= 0:
            return self.factor
        progress = min(1.0, (minute - self.at_minute + 1) / self.ramp_minutes)
        return 1.0 + (self.factor - 1.0) * progress


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    world: WorldParams = field(default_factory=WorldParams)
    bidder: BidderParams = field(default_factory=BidderParams)
    events: tuple[Event, ...] = ()
    source: str = "<memory>"

    def variant_at(self, minute: int) -> str:
        variant = self.bidder.variant
        for e in self.events:
            if e.kind == "switch_model" and e.at_minute <= minute:
                variant = e.variant
        return variant


# --- parsing and validation -------------------------------------------------------------------

def _number(src: str, key: str, value: object, *, minimum: float = 0.0, strict: bool = False,
            maximum: float | None = None, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ScenarioError(src, key, value, "must be a whole number" if integer else "must be a number")
    if not math.isfinite(value):
        raise ScenarioError(src, key, value, "must be finite")
    if value < minimum or (strict and value == minimum):
        raise ScenarioError(src, key, value, f"must be {'>' if strict else '>='} {minimum}")
    if maximum is not None and value > maximum:
        raise ScenarioError(src, key, value, f"must be <= {maximum}")
    return value


def _check_keys(src: str, prefix: str, table: object, allowed: set[str]) -> dict:
    if not isinstance(table, dict):
        raise ScenarioError(src, prefix, table, "must be a table")
    for key in table:
        if key not in allowed:
            raise ScenarioError(src, f"{prefix}.{key}" if prefix else key, table[key],
                                f"unknown key; known: {sorted(allowed)}")
    return table


def _params(src: str, prefix: str, cls, table: dict):
    defaults = cls()
    _check_keys(src, prefix, table, {f.name for f in fields(cls)})
    values = {}
    for f in fields(cls):
        if f.name not in table:
            continue
        key, value, default = f"{prefix}.{f.name}", table[f.name], getattr(defaults, f.name)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ScenarioError(src, key, value, "must be a string")
            values[f.name] = value
        elif isinstance(default, tuple):
            if not isinstance(value, list) or not value:
                raise ScenarioError(src, key, value, "must be a non-empty list")
            is_int = isinstance(default[0], int)
            values[f.name] = tuple(_number(src, f"{key}[{i}]", v, integer=is_int) for i, v in enumerate(value))
        elif isinstance(default, int):
            values[f.name] = int(_number(src, key, value, integer=True, strict=f.name == "campaigns"))
        else:
            values[f.name] = float(_number(src, key, value))
    return replace(defaults, **values)


def _check_world(src: str, w: WorldParams) -> None:
    for name in ("traffic_scale", "competitor_bid_level", "competitor_bid_spread"):
        if getattr(w, name) <= 0:
            raise ScenarioError(src, f"world.{name}", getattr(w, name), "must be > 0")
    if w.promo_intensity > 2:
        raise ScenarioError(src, "world.promo_intensity", w.promo_intensity, "must be <= 2")
    if w.campaigns > 500:
        raise ScenarioError(src, "world.campaigns", w.campaigns, "must be <= 500")
    if len(w.lag_minutes) != len(w.lag_shares):
        raise ScenarioError(src, "world.lag_shares", list(w.lag_shares),
                            f"needs one share per lag_minutes entry ({len(w.lag_minutes)})")
    if abs(sum(w.lag_shares) - 1.0) > 1e-6:
        raise ScenarioError(src, "world.lag_shares", list(w.lag_shares), "must add up to 1")
    if list(w.lag_minutes) != sorted(set(w.lag_minutes)):
        raise ScenarioError(src, "world.lag_minutes", list(w.lag_minutes), "must be increasing")


def _check_bidder(src: str, b: BidderParams) -> None:
    if b.variant not in VARIANTS:
        raise ScenarioError(src, "bidder.variant", b.variant, f"must be one of {list(VARIANTS)}")
    for name in ("target_roi", "gmv_target_roi", "max_bid"):
        if getattr(b, name) <= 0:
            raise ScenarioError(src, f"bidder.{name}", getattr(b, name), "must be > 0")
    if b.min_bid > b.max_bid:
        raise ScenarioError(src, "bidder.min_bid", b.min_bid, f"must be <= max_bid ({b.max_bid})")


def _names(src: str, key: str, value: object, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ScenarioError(src, key, value, f"must be a non-empty list of {what}")
    for i, v in enumerate(value):
        if v not in known:
            raise ScenarioError(src, f"{key}[{i}]", v, f"unknown {what}")
    return tuple(value)


def _event(src: str, i: int, table: object, world: WorldParams) -> Event:
    prefix = f"events[{i}]"
    if not isinstance(table, dict):
        raise ScenarioError(src, prefix, table, "must be a table")
    kind = table.get("kind")
    if kind not in EVENT_KINDS:
        raise ScenarioError(src, f"{prefix}.kind", kind, f"must be one of {sorted(EVENT_KINDS)}")
    required, optional = EVENT_KINDS[kind]
    _check_keys(src, prefix, table, {"kind", "at_minute"} | required | optional)
    for key in sorted(required | {"at_minute"}):
        if key not in table:
            raise ScenarioError(src, f"{prefix}.{key}", None, f"is required for a {kind} event")
    last = MINUTES_PER_DAY - 1
    at = int(_number(src, f"{prefix}.at_minute", table["at_minute"], integer=True, maximum=last))
    until = MINUTES_PER_DAY
    if "until_minute" in table:
        until = int(_number(src, f"{prefix}.until_minute", table["until_minute"], integer=True,
                            maximum=MINUTES_PER_DAY))
        if until <= at:
            raise ScenarioError(src, f"{prefix}.until_minute", until, f"must be after at_minute ({at})")
    values: dict = {"kind": kind, "at_minute": at, "until_minute": until}
    if "campaigns" in table:
        values["campaigns"] = _names(src, f"{prefix}.campaigns", table["campaigns"],
                                     campaign_ids(world.campaigns), "campaign")
    if "audience_packages" in table:
        values["audience_packages"] = _names(src, f"{prefix}.audience_packages",
                                             table["audience_packages"], PACKAGE_CODES, "audience package")
    if "categories" in table:
        values["categories"] = _names(src, f"{prefix}.categories", table["categories"],
                                      tuple(c.code for c in CATEGORIES), "category")
    if "factor" in table:
        values["factor"] = float(_number(src, f"{prefix}.factor", table["factor"], strict=True))
    if "ramp_minutes" in table:
        values["ramp_minutes"] = int(_number(src, f"{prefix}.ramp_minutes", table["ramp_minutes"], integer=True,
                                             maximum=until - at))
    if "drop" in table:
        values["drop"] = float(_number(src, f"{prefix}.drop", table["drop"], maximum=0.99))
    if "variant" in table:
        if table["variant"] not in VARIANTS:
            raise ScenarioError(src, f"{prefix}.variant", table["variant"], f"must be one of {list(VARIANTS)}")
        values["variant"] = table["variant"]
    return Event(**values)


def parse_scenario(text: str, source: str = "<text>") -> Scenario:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, "<file>", None, f"not valid TOML: {exc}") from None
    _check_keys(source, "", doc, {"name", "description", "world", "bidder", "events"})
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ScenarioError(source, "name", name, "must be a non-empty string")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(source, "description", description, "must be a string")
    world = _params(source, "world", WorldParams, doc.get("world", {}))
    _check_world(source, world)
    bidder = _params(source, "bidder", BidderParams, doc.get("bidder", {}))
    _check_bidder(source, bidder)
    raw_events = doc.get("events", [])
    if not isinstance(raw_events, list):
        raise ScenarioError(source, "events", raw_events, "must be an array of tables ([[events]])")
    events = tuple(_event(source, i, e, world) for i, e in enumerate(raw_events))
    return Scenario(name, description, world, bidder, events, source)


def load_scenario_file(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), "<file>", None, f"cannot be read: {exc.strerror}") from None
    return parse_scenario(text, str(path))


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name: str) -> Scenario:
    """A shipped scenario by name (see `shipped_scenarios`)."""
    path = SCENARIO_DIR / f"{name}.toml"
    if not path.exists():
        raise ScenarioError(name, "scenario", name, f"unknown scenario; shipped: {shipped_scenarios()}")
    return load_scenario_file(path)


# --- writing (round trip) ---------------------------------------------------------------------

def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def dump_scenario(scenario: Scenario) -> str:
    """The scenario as TOML; `parse_scenario(dump_scenario(s))` equals `s` (but its source)."""
    lines = [f"name = {_toml_value(scenario.name)}",
             f"description = {_toml_value(scenario.description)}", ""]
    for title, params in (("world", scenario.world), ("bidder", scenario.bidder)):
        lines.append(f"[{title}]")
        lines += [f"{f.name} = {_toml_value(getattr(params, f.name))}" for f in fields(params)]
        lines.append("")
    default = Event("cvr_shift", 0)
    for e in scenario.events:
        lines.append("[[events]]")
        lines.append(f"kind = {_toml_value(e.kind)}")
        required = EVENT_KINDS[e.kind][0] | {"at_minute"}
        for f in fields(Event):
            value = getattr(e, f.name)
            if f.name == "kind" or (f.name not in required and value == getattr(default, f.name)):
                continue
            lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)
