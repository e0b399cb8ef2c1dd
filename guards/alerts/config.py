"""Alert routing and channel configuration, read from a TOML file outside the repo.

Secrets are never in the file: a WeCom channel names the environment variable
that holds its key (`key_env`), a webhook channel its URL's (`url_env`).

    [channels.ops]                 # a WeCom group robot
    type = "wecom"
    key_env = "BIDLENS_WECOM_KEY_OPS"
    language = "zh"                # zh | en | both
    msgtype = "markdown"           # markdown | text (text can @ people)
    mentioned_mobile_list = ["13800001111"]
    group_wait_s = 30
    repeat_interval_s = 3600

    [channels.audit_file]
    type = "log_file"
    path = "alerts.log"            # relative: inside BIDLENS_DATA_DIR

    [[routes]]                     # first match wins unless continue = true
    severity = ["critical"]
    campaign = ["818-*"]           # glob patterns
    channels = ["ops", "audit_file"]

    [people.operator]              # a person alerts are addressed to (e.g. an override's proposer)
    wecom_userid = "zhangsan"      # mentioned as <@zhangsan> in markdown, in mentioned_list in text
    mobile = "13800001111"         # text messages: mentioned_mobile_list

    [[promotions]]                 # for response-time figures per promotion
    name = "818"
    start = "2026-08-10"           # dates in China time (UTC+8), end inclusive
    end = "2026-08-18"
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from control.clock import PROMOTION_TZ
from control.domain import InvalidValue
from guards.alerts.events import AlertEvent, AlertKind, Severity
from guards.alerts.wecom import (
    CONNECT_TIMEOUT_S,
    DEFAULT_BASE_URL,
    MAX_BYTES,
    RATE_LIMIT_PER_MIN,
    content_limit,
)

CHANNEL_TYPES = ("wecom", "webhook", "log_file")
LANGUAGES = ("zh", "en", "both")
OTHER_RATE_LIMIT = 600  # per rate window, for webhook and log-file channels unless configured
JSON_MAX_BYTES = 16384  # generic webhook and log lines: no receiver limit, keep messages readable


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    name: str
    type: str
    language: str = "zh"
    msgtype: str = "markdown"
    key_env: str = ""
    base_url: str = DEFAULT_BASE_URL
    url: str = ""
    url_env: str = ""
    path: str = ""
    mentioned_list: tuple[str, ...] = ()
    mentioned_mobile_list: tuple[str, ...] = ()
    group_wait_s: int = 30
    repeat_interval_s: int = 3600
    rate_limit: int = RATE_LIMIT_PER_MIN  # messages per rate window; WeCom's robot limit
    rate_window_s: int = 60
    timeout_s: float = 10.0

    @property
    def max_bytes(self) -> int:
        """Bytes of UTF-8 a rendered message may take (WeCom: its limit less the markdown @ tail)."""
        return content_limit(self.msgtype, self.mentioned_list) if self.type == "wecom" else JSON_MAX_BYTES

    def send_bound_s(self, read_timeout_s: float | None = None) -> float:
        """The longest a send can take (connect + read timeouts, and a margin): it may reach the robot until then."""
        return CONNECT_TIMEOUT_S + (self.timeout_s if read_timeout_s is None else read_timeout_s) + 1.0

    @property
    def fmt(self) -> str:
        """How messages are rendered for this channel: markdown or plain text."""
        return self.msgtype if self.type == "wecom" else "markdown"


@dataclass(frozen=True, slots=True)
class Route:
    channels: tuple[str, ...]
    campaigns: tuple[str, ...] = ()   # glob patterns; empty: any
    guards: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    cont: bool = False                # keep matching later routes

    def matches(self, event: AlertEvent) -> bool:
        def ok(patterns: tuple[str, ...], value: str | None) -> bool:
            return not patterns or (value is not None and any(fnmatch.fnmatchcase(value, p) for p in patterns))
        return (ok(self.campaigns, event.campaign_id) and ok(self.guards, event.guard)
                and ok(self.severities, event.severity.value) and ok(self.kinds, event.kind.value))


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    backoff_base_s: int = 5
    backoff_max_s: int = 300
    give_up_after_s: int = 86400   # a message still failing after this is dead (visible)
    lease_s: int = 60              # a send not recorded within this is presumed crashed (maybe delivered)
    probe_max_s: int = 15          # while a robot does not answer, probe it at least this often

    @property
    def slow_read_timeout_s(self) -> float:
        """The longest read timeout for a robot that answers late: a send must end well within its lease."""
        return self.lease_s / 2 - CONNECT_TIMEOUT_S - 1.0
    pass_budget_s: float = 20.0    # one delivery pass stops starting sends after this


@dataclass(frozen=True, slots=True)
class Person:
    """How to mention a user of BidLens in WeCom (both optional: unknown people are named, not mentioned)."""

    wecom_userid: str = ""
    mobile: str = ""


@dataclass(frozen=True, slots=True)
class Promotion:
    name: str
    start_ts: int
    end_ts: int  # exclusive


@dataclass(frozen=True)
class AlertsConfig:
    channels: Mapping[str, ChannelConfig]
    routes: tuple[Route, ...]
    delivery: DeliveryPolicy = DeliveryPolicy()
    templates: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # lang -> kind -> title
    promotions: tuple[Promotion, ...] = ()
    data_dir: str = "."
    people: Mapping[str, Person] = field(default_factory=dict)  # username -> how to mention them

    def route(self, event: AlertEvent) -> tuple[str, ...]:
        """The channels an event goes to: routes in order, first match wins unless `continue`."""
        chosen: list[str] = []
        for r in self.routes:
            if r.matches(event):
                chosen += [c for c in r.channels if c not in chosen]
                if not r.cont:
                    break
        return tuple(chosen)

    def channel(self, name: str) -> ChannelConfig:
        if name not in self.channels:
            raise InvalidValue("channel", name, f"not configured; known: {sorted(self.channels)}")
        return self.channels[name]


# Without a file: every alert to DATA_DIR/alerts.log; the safety-stock breaker's to a replenishment log of
# its own, repeated at most daily (the plan's replenishment group).
DEFAULT_DOCUMENT = {
    "channels": {"log": {"type": "log_file", "path": "alerts.log", "group_wait_s": 0},
                 "replenishment": {"type": "log_file", "path": "replenishment.log", "group_wait_s": 0,
                                   "repeat_interval_s": 86400}},
    "routes": [{"guard": ["low_stock"], "channels": ["replenishment"]}, {"channels": ["log"]}],
}


def _strings(where: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidValue(where, value, "must be a string or a list of strings")
    return tuple(value)


def _date_ts(where: str, value: object, days: int = 0) -> int:
    if isinstance(value, dt.datetime):
        return int((value if value.tzinfo else value.replace(tzinfo=PROMOTION_TZ)).timestamp())
    try:
        day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    except ValueError:
        raise InvalidValue(where, value, "must be a date YYYY-MM-DD") from None
    return int(dt.datetime.combine(day + dt.timedelta(days=days), dt.time(), PROMOTION_TZ).timestamp())


def _channel(name: str, doc: object) -> ChannelConfig:
    where = f"channels.{name}"
    if not isinstance(doc, dict):
        raise InvalidValue(where, doc, "must be a table")
    if {"key", "webhook", "webhook_url"} & set(doc):  # checked first: the value must not reach an error
        raise InvalidValue(where, "***", "put the key in an environment variable and name it in key_env")
    known = set(ChannelConfig.__slots__) - {"name"}
    unknown = set(doc) - known
    if unknown:  # the value is not shown: a misnamed setting may hold a secret
        raise InvalidValue(f"{where}.{sorted(unknown)[0]}", "…", "unknown setting")
    values = dict(doc)
    for lst in ("mentioned_list", "mentioned_mobile_list"):
        if lst in values:
            values[lst] = _strings(f"{where}.{lst}", values[lst])
    if values.get("type") != "wecom":  # WeCom's 20 a minute is WeCom's: a file or a webhook takes more
        values.setdefault("rate_limit", OTHER_RATE_LIMIT)
    cfg = ChannelConfig(name=name, **values)
    if cfg.type not in CHANNEL_TYPES:
        raise InvalidValue(f"{where}.type", cfg.type, f"must be one of {list(CHANNEL_TYPES)}")
    if cfg.language not in LANGUAGES:
        raise InvalidValue(f"{where}.language", cfg.language, f"must be one of {list(LANGUAGES)}")
    if cfg.msgtype not in MAX_BYTES:
        raise InvalidValue(f"{where}.msgtype", cfg.msgtype, f"must be one of {sorted(MAX_BYTES)}")
    if cfg.msgtype == "markdown" and (cfg.mentioned_mobile_list or "@all" in cfg.mentioned_list):
        raise InvalidValue(f"{where}.msgtype", cfg.msgtype,
                           "markdown can mention user ids only; use msgtype = \"text\" for mobiles or @all")
    if cfg.type == "wecom" and not cfg.key_env:
        raise InvalidValue(f"{where}.key_env", "", "a WeCom channel needs the name of the variable holding its key")
    if cfg.type == "webhook" and not (cfg.url or cfg.url_env):
        raise InvalidValue(f"{where}.url", "", "a webhook channel needs url or url_env")
    if cfg.type == "log_file" and not cfg.path:
        raise InvalidValue(f"{where}.path", "", "a log_file channel needs a path")
    for num in ("group_wait_s", "repeat_interval_s", "rate_window_s"):
        if not isinstance(getattr(cfg, num), int) or getattr(cfg, num) < 0:
            raise InvalidValue(f"{where}.{num}", getattr(cfg, num), "must be a whole number >= 0")
    if not isinstance(cfg.rate_limit, int) or cfg.rate_limit < 1:
        raise InvalidValue(f"{where}.rate_limit", cfg.rate_limit, "must be a whole number >= 1")
    return cfg


def _person(name: str, doc: object) -> Person:
    where = f"people.{name}"
    if not isinstance(doc, dict):
        raise InvalidValue(where, doc, "must be a table")
    unknown = set(doc) - set(Person.__slots__)
    if unknown:
        raise InvalidValue(f"{where}.{sorted(unknown)[0]}", "…", "unknown setting; known: wecom_userid, mobile")
    person = Person(**{k: str(v) for k, v in doc.items()})
    if person.mobile and not (person.mobile.isdigit() and 5 <= len(person.mobile) <= 15):
        raise InvalidValue(f"{where}.mobile", person.mobile, "must be a phone number (digits only)")
    return person


def _route(i: int, doc: object, channels: Mapping[str, ChannelConfig]) -> Route:
    where = f"routes[{i}]"
    if not isinstance(doc, dict):
        raise InvalidValue(where, doc, "must be a table")
    names = _strings(f"{where}.channels", doc.get("channels", []))
    if not names:
        raise InvalidValue(f"{where}.channels", [], "must name at least one channel")
    for n in names:
        if n not in channels:
            raise InvalidValue(f"{where}.channels", n, f"no such channel; known: {sorted(channels)}")
    unknown = set(doc) - {"channels", "campaign", "guard", "severity", "kind", "continue"}
    if unknown:
        raise InvalidValue(f"{where}.{sorted(unknown)[0]}", doc[sorted(unknown)[0]], "unknown setting")
    severities = _strings(f"{where}.severity", doc.get("severity", []))
    for s in severities:
        if s not in [v.value for v in Severity]:
            raise InvalidValue(f"{where}.severity", s, f"must be one of {[v.value for v in Severity]}")
    kinds = _strings(f"{where}.kind", doc.get("kind", []))
    for k in kinds:
        if k not in [v.value for v in AlertKind]:
            raise InvalidValue(f"{where}.kind", k, f"must be one of {[v.value for v in AlertKind]}")
    return Route(channels=names, campaigns=_strings(f"{where}.campaign", doc.get("campaign", [])),
                 guards=_strings(f"{where}.guard", doc.get("guard", [])), severities=severities,
                 kinds=kinds, cont=bool(doc.get("continue", False)))


def parse_config(doc: Mapping, data_dir: str = ".") -> AlertsConfig:
    """Validate a config document (parsed TOML); errors name the setting and the value."""
    channels_doc = doc.get("channels") or {}
    if not isinstance(channels_doc, dict) or not channels_doc:
        raise InvalidValue("channels", channels_doc, "must define at least one channel")
    channels = {name: _channel(name, c) for name, c in channels_doc.items()}
    routes_doc = doc.get("routes") or [{"channels": list(channels)}]
    routes = tuple(_route(i, r, channels) for i, r in enumerate(routes_doc))
    last = routes[-1]
    if last.campaigns or last.guards or last.severities or last.kinds:
        raise InvalidValue(f"routes[{len(routes) - 1}]", "has matchers",
                           "the last route must match everything (no campaign/guard/severity/kind), "
                           "so no alert is left without a channel")
    delivery_doc = doc.get("delivery") or {}
    unknown = set(delivery_doc) - set(DeliveryPolicy.__dataclass_fields__)
    if unknown:
        raise InvalidValue(f"delivery.{sorted(unknown)[0]}", delivery_doc[sorted(unknown)[0]], "unknown setting")
    templates = doc.get("templates") or {}
    for lang, titles in templates.items():
        if lang not in ("zh", "en") or not isinstance(titles, dict):
            raise InvalidValue(f"templates.{lang}", titles, "must be [templates.zh] or [templates.en] tables")
        for kind in titles:
            if kind not in [v.value for v in AlertKind]:
                raise InvalidValue(f"templates.{lang}.{kind}", titles[kind], "unknown alert kind")
    promotions = tuple(
        Promotion(str(p.get("name") or f"promotion {i}"), _date_ts(f"promotions[{i}].start", p.get("start")),
                  _date_ts(f"promotions[{i}].end", p.get("end"), days=1))
        for i, p in enumerate(doc.get("promotions") or []))
    delivery = DeliveryPolicy(**delivery_doc)
    slowest = max(c.timeout_s for c in channels.values())
    if delivery.lease_s <= 2 * slowest:  # a live send must never look crashed
        raise InvalidValue("delivery.lease_s", delivery.lease_s, f"must exceed twice the longest timeout_s ({slowest})")
    people_doc = doc.get("people") or {}
    if not isinstance(people_doc, dict):
        raise InvalidValue("people", people_doc, "must be tables [people.USERNAME]")
    people = {name: _person(name, p) for name, p in people_doc.items()}
    return AlertsConfig(channels=channels, routes=routes, delivery=delivery,
                        templates=templates, promotions=promotions, data_dir=data_dir, people=people)


def load_config(path: str, data_dir: str = ".") -> AlertsConfig:
    """The config at `path`, or the built-in one (everything to DATA_DIR/alerts.log) when empty."""
    if not path:
        return parse_config(DEFAULT_DOCUMENT, data_dir)
    p = Path(path)
    if not p.is_file():
        raise InvalidValue("BIDLENS_ALERTS_CONFIG", path, "no such file")
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InvalidValue("BIDLENS_ALERTS_CONFIG", path, f"not valid TOML: {exc}") from None
    return parse_config(doc, data_dir)
