"""Guard configuration: typed, validated, defaults from one TOML file.

`guards/guard_defaults.toml` holds every default. A deployment file
(BIDLENS_GUARD_CONFIG) may override any key, and per campaign under
`[<guard>.campaigns.<campaign_id>]`. Every value is checked on load; a bad one
raises InvalidValue naming the dotted key (e.g. `roi.campaigns.c07.floor`) and
the value.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from control.clock import PROMOTION_TZ_OFFSET_S
from control.domain import DEFAULT_ROI_FLOOR, InvalidValue

DEFAULTS_FILE = Path(__file__).with_name("guard_defaults.toml")


@dataclass(frozen=True, slots=True)
class MachineConfig:
    """The shared trip / cooldown / probation machine (guards.machine)."""

    consecutive: int = 3
    cooldown_s: int = 1800
    cooldown_backoff: float = 2.0
    max_cooldown_s: int = 14400
    canary_share: float = 0.1
    probation_evaluations: int = 5
    probation_max_s: int = 1800
    max_trips_per_hour: int = 2
    require_approval: bool = False
    stale_after_s: int = 600
    stale_action: str = "hold"
    action: str = "pool"          # what a trip does with the traffic: pool | bid_cut | pause | alert (a signal may choose)
    max_probation_failures: int = 3  # failed probations in a day after which only a person releases the campaign


@dataclass(frozen=True, slots=True)
class ObserveConfig:
    pred_window_s: int = 60
    spend_window_s: int = 300
    realised_window_s: int = 1800
    maturity_cdf: float = 0.55
    calibration_maturity_cdf: float = 0.35
    lag_minutes: tuple[int, ...] = (0, 5, 15, 30, 60, 120, 240, 480)
    lag_cdf: tuple[float, ...] = (0.35, 0.55, 0.69, 0.80, 0.89, 0.95, 0.98, 1.0)
    tz_offset_s: int = PROMOTION_TZ_OFFSET_S
    bucket_s: int = 60            # a decision bucket's length: a bucket's outcomes are known from its end
    sales_window_s: int = 21600   # the sales rate behind days of stock: orders that became known this far back
    feed_max_age_s: int = 21600   # a competitor price or stock reading older than this says nothing

    @property
    def maturity_s(self) -> int:
        """Age at which a bucket counts as mature: the lag curve first reaches maturity_cdf."""
        return self.age_at(self.maturity_cdf)

    @property
    def calibration_maturity_s(self) -> int:
        """The same for the model-wide calibration's pooled buckets (calibration_maturity_cdf)."""
        return self.age_at(self.calibration_maturity_cdf)

    def age_at(self, share_known: float) -> int:
        """Age in seconds at which the lag curve first reaches `share_known`."""
        for minutes, share in zip(self.lag_minutes, self.lag_cdf, strict=True):
            if share >= share_known:
                return minutes * 60
        return self.lag_minutes[-1] * 60


@dataclass(frozen=True, slots=True)
class RoiConfig:
    floor: float = DEFAULT_ROI_FLOOR
    min_pred_spend: float = 20.0
    pred_enabled: bool = True
    cusum_enabled: bool = True
    cusum_above: float = 0.10
    cusum_below: tuple[float, ...] = (0.075, 0.2, 0.35, 0.5)
    cusum_threshold: float = 8.1
    cusum_window_s: int = 7200
    realised_min_spend: float = 300.0
    restore_confidence: float = 0.9
    action_choice: str = "profit"
    min_bid_factor: float = 0.2
    action_review_s: int = 2400
    hysteresis: float = 0.2
    calibration_enabled: bool = True
    calibration_consecutive: int = 1
    calibration_min_orders: float = 100.0
    calibration_confidence: float = 0.99
    order_value_cv: float = 0.5
    machine: MachineConfig = field(default_factory=MachineConfig)


@dataclass(frozen=True, slots=True)
class PacingConfig:
    enabled: bool = True
    max_ahead: float = 0.3
    hysteresis: float = 0.1
    min_elapsed_s: int = 3600
    feature: str = "spend_pace"
    machine: MachineConfig = field(default_factory=MachineConfig)


@dataclass(frozen=True, slots=True)
class InventoryConfig:
    enabled: bool = True
    min_level: float = 0.3
    hysteresis: float = 0.05
    feature: str = "inventory_level"
    machine: MachineConfig = field(default_factory=MachineConfig)


@dataclass(frozen=True, slots=True)
class CompetitorConfig:
    """Competitor price drop: a competitor more than `max_drop` below its reference price -> pull the item."""

    enabled: bool = True
    max_drop: float = 0.15
    hysteresis: float = 0.05      # back when every drop is at most max_drop - hysteresis
    feature: str = "competitor_price_index"
    machine: MachineConfig = field(default_factory=MachineConfig)


@dataclass(frozen=True, slots=True)
class LowStockConfig:
    """Safety stock: fewer than `min_days` of sales left at the current rate -> a replenishment alert."""

    enabled: bool = True
    min_days: float = 7.0
    hysteresis: float = 1.0       # days: back once stock covers min_days + hysteresis
    machine: MachineConfig = field(default_factory=MachineConfig)


# (minimum, maximum) per field; None = unbounded on that side.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "consecutive": (1, 1000), "cooldown_s": (0, None), "cooldown_backoff": (1.0, 100.0),
    "max_cooldown_s": (0, None), "max_probation_failures": (1, 1000), "canary_share": (0.0, 1.0), "probation_evaluations": (1, 1000),
    "probation_max_s": (1, None), "max_trips_per_hour": (1, 1000), "stale_after_s": (1, None),
    "pred_window_s": (1, None), "spend_window_s": (1, None), "realised_window_s": (1, None),
    "maturity_cdf": (0.01, 1.0), "calibration_maturity_cdf": (0.01, 1.0), "floor": (0.0, 1000.0),
    "min_pred_spend": (0.0, None),
    "realised_min_spend": (0.0, None), "cusum_above": (0.0, 10.0), "cusum_below": (0.01, 0.99),
    "cusum_threshold": (0.1, 100.0), "cusum_window_s": (60, 86400), "restore_confidence": (0.5, 0.999999), "min_bid_factor": (0.01, 1.0), "action_review_s": (0, None),
    "hysteresis": (0.0, None),
    "max_ahead": (0.0, None), "min_elapsed_s": (0, None), "min_level": (0.0, 1.0),
    "tz_offset_s": (-86400, 86400), "bucket_s": (1, 86400), "calibration_consecutive": (1, 1000), "calibration_min_orders": (1.0, None),
    "calibration_confidence": (0.5, 0.999999), "order_value_cv": (0.0, 10.0),
    "max_drop": (0.0, 0.99), "min_days": (0.0, 365.0), "sales_window_s": (600, None), "feed_max_age_s": (60, None),
}
_CHOICES = {"stale_action": ("pool", "hold"), "action": ("pool", "bid_cut", "pause", "alert"),
            "action_choice": ("profit", "pool", "bid_cut", "pause")}


def _typed(key: str, value: object, default: object) -> object:
    """`value` checked against the type of `default` and the field's range."""
    name = key.rsplit(".", 1)[-1]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InvalidValue(key, value, "must be true or false")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple) or not value:
            raise InvalidValue(key, value, "must be a non-empty list")
        return tuple(_typed(f"{key}[{i}]", v, default[0]) for i, v in enumerate(value))
    if isinstance(default, str):
        if not isinstance(value, str) or not value:
            raise InvalidValue(key, value, "must be a non-empty string")
        if name in _CHOICES and value not in _CHOICES[name]:
            raise InvalidValue(key, value, f"must be one of {list(_CHOICES[name])}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(key, value, "must be a number")
    if isinstance(default, int) and not isinstance(value, int):
        raise InvalidValue(key, value, "must be a whole number")
    if not math.isfinite(value):
        raise InvalidValue(key, value, "must be finite")
    low, high = _RANGES.get(name.split("[")[0], (None, None))
    if low is not None and value < low:
        raise InvalidValue(key, value, f"must be >= {low}")
    if high is not None and value > high:
        raise InvalidValue(key, value, f"must be <= {high}")
    return type(default)(value)


def apply_table(prefix: str, base, table: dict, extra_keys: frozenset[str] = frozenset()):
    """A copy of dataclass `base` with `table`'s keys applied; machine keys go to `base.machine`."""
    own = {f.name for f in fields(base)} - {"machine"}
    machine_keys = {f.name for f in fields(MachineConfig)} if hasattr(base, "machine") else set()
    changes, machine_changes = {}, {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}"
        if key in extra_keys:
            continue
        if key in own:
            changes[key] = _typed(dotted, value, getattr(base, key))
        elif key in machine_keys:
            machine_changes[key] = _typed(dotted, value, getattr(base.machine, key))
        else:
            known = sorted(own | machine_keys | extra_keys)
            raise InvalidValue(dotted, value, f"unknown key; known: {known}")
    if machine_changes:
        changes["machine"] = replace(base.machine, **machine_changes)
    result = replace(base, **changes)
    _check(prefix, result)
    return result


def _check(prefix: str, config) -> None:
    if isinstance(config, ObserveConfig):
        if len(config.lag_minutes) != len(config.lag_cdf):
            raise InvalidValue(f"{prefix}.lag_cdf", list(config.lag_cdf),
                               f"needs one share per lag_minutes entry ({len(config.lag_minutes)})")
        if list(config.lag_minutes) != sorted(set(config.lag_minutes)):
            raise InvalidValue(f"{prefix}.lag_minutes", list(config.lag_minutes), "must be increasing")
        if list(config.lag_cdf) != sorted(config.lag_cdf) or config.lag_cdf[-1] != 1.0:
            raise InvalidValue(f"{prefix}.lag_cdf", list(config.lag_cdf),
                               "must be non-decreasing shares ending at 1.0")
    machine = getattr(config, "machine", None)
    if machine is not None and machine.max_cooldown_s < machine.cooldown_s:
        raise InvalidValue(f"{prefix}.max_cooldown_s", machine.max_cooldown_s, "must be >= cooldown_s")


GUARD_CONFIG_TYPES = {"roi": RoiConfig, "pacing": PacingConfig, "inventory": InventoryConfig,
                      "competitor": CompetitorConfig, "low_stock": LowStockConfig}


@dataclass(frozen=True)
class GuardSettings:
    """Every guard's default config, per-campaign configs, and the observation parameters."""

    observe: ObserveConfig
    defaults: dict[str, object]                 # guard name -> its config
    per_campaign: dict[str, dict[str, object]]  # guard name -> campaign_id -> its config

    def for_campaign(self, guard: str, campaign_id: str):
        return self.per_campaign.get(guard, {}).get(campaign_id, self.defaults[guard])

    def feature_names(self) -> dict[str, str]:
        """Observation column (guards.observe.FEATURE_COLUMNS) -> the feature that carries it in decisions."""
        return {"spend_pace": self.defaults["pacing"].feature,
                "inventory_level": self.defaults["inventory"].feature,
                "competitor_price_index": self.defaults["competitor"].feature}


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_guard_settings(text: str = "", source: str = "<text>") -> GuardSettings:
    """The defaults file overlaid with `text` (TOML); raises InvalidValue naming key and value."""
    raw = tomllib.loads(DEFAULTS_FILE.read_text(encoding="utf-8"))
    if text:
        try:
            raw = _merge(raw, tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise InvalidValue("guard_config", source, f"not valid TOML: {exc}") from None
    allowed = {"machine", "observe", *GUARD_CONFIG_TYPES}
    for key in raw:
        if key not in allowed:
            raise InvalidValue(key, raw[key], f"unknown section; known: {sorted(allowed)}")
    machine = apply_table("machine", MachineConfig(), raw.get("machine", {}))
    observe = apply_table("observe", ObserveConfig(), raw.get("observe", {}))
    defaults, per_campaign = {}, {}
    for name, cls in GUARD_CONFIG_TYPES.items():
        table = raw.get(name, {})
        base = apply_table(name, cls(machine=machine), table, frozenset({"campaigns"}))
        defaults[name] = base
        campaigns = table.get("campaigns", {})
        if not isinstance(campaigns, dict):
            raise InvalidValue(f"{name}.campaigns", campaigns, "must be a table of campaign tables")
        per_campaign[name] = {cid: apply_table(f"{name}.campaigns.{cid}", base, sub)
                              for cid, sub in campaigns.items()}
    return GuardSettings(observe, defaults, per_campaign)


def load_guard_settings(path: str | Path | None = None) -> GuardSettings:
    if not path:
        return parse_guard_settings()
    path = Path(path)
    return parse_guard_settings(path.read_text(encoding="utf-8"), str(path))
