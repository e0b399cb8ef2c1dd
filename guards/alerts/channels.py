"""Where alert messages go: WeCom robots, a generic JSON webhook, a log file.

`build_channels` turns the config into live channels, reading each secret from
its environment variable; a channel that cannot be built is reported by name
(never with its secret) and its alerts wait in the outbox.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

from guards.alerts.config import AlertsConfig, ChannelConfig, Person
from guards.alerts.templates import Style
from guards.alerts.transport import (
    Channel,
    OutboundMessage,
    SendOutcome,
    http_status_outcome,
    register_url_secrets,
    request_failure,
)
from guards.alerts.wecom import CONNECT_TIMEOUT_S, JSON_HEADERS, WeComRobot


class JsonWebhook:
    """POSTs {message_id, channel, text, alerts} as JSON; 2xx is success.

    The message id also goes in an Idempotency-Key header, so a receiver can drop
    the resend that follows a crash between sending and recording it.
    """

    idempotent = True  # a resend is the same message with the same id: the receiver drops it

    def __init__(self, name: str, url: str, *, timeout: float = 10.0, session: requests.Session | None = None):
        self.name = name
        self._url = url
        self.timeout = timeout
        self._session = session or requests.Session()
        register_url_secrets(url)  # a webhook URL often carries a token

    def __repr__(self) -> str:
        return f"JsonWebhook(name={self.name!r})"

    def send(self, message: OutboundMessage) -> SendOutcome:
        body = {"message_id": message.message_id, "channel": message.channel, "text": message.content,
                "alerts": list(message.alerts)}
        try:
            response = self._session.post(
                self._url, data=json.dumps(body, ensure_ascii=False, default=str).encode("utf-8"),
                headers={**JSON_HEADERS, "Idempotency-Key": message.message_id}, timeout=self.timeout)
        except requests.RequestException as exc:
            return request_failure(exc, self._url)
        if 200 <= response.status_code < 300:
            return SendOutcome(True, http_status=response.status_code)
        return http_status_outcome(response.status_code)


class LogFile:
    """Appends one JSON line per message (with its message id) to a file."""

    idempotent = True  # a line written twice carries the same message id

    def __init__(self, name: str, path: Path):
        self.name = name
        self.path = path
        self._lock = threading.Lock()

    def send(self, message: OutboundMessage) -> SendOutcome:
        line = json.dumps({"message_id": message.message_id, "channel": message.channel,
                           "alert_ids": list(message.alert_ids), "text": message.content,
                           "alerts": list(message.alerts)}, ensure_ascii=False, default=str)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            return SendOutcome(False, retryable=True, error=f"{type(exc).__name__}: {exc.strerror}")
        return SendOutcome(True)


@dataclass
class Channels:
    """The live channels of one config, and those that could not be built (with why)."""

    config: AlertsConfig
    transports: dict[str, Channel]
    errors: dict[str, str] = field(default_factory=dict)
    panel_url: str = "http://localhost:8501"

    def style(self, name: str) -> Style:
        c = self.config.channel(name)
        return Style(language=c.language, fmt=c.fmt, panel_url=self.panel_url, titles=self.config.templates,
                     userids={n: p.wecom_userid for n, p in self.config.people.items() if p.wecom_userid})


def build_transport(c: ChannelConfig, environ: Mapping[str, str], data_dir: str,
                    session: requests.Session | None = None, people: Mapping[str, Person] | None = None) -> Channel:
    if c.type == "wecom":
        key = environ.get(c.key_env, "")
        if not key:
            raise LookupError(f"channel {c.name}: environment variable {c.key_env} is not set")
        return WeComRobot(c.name, key, base_url=c.base_url, msgtype=c.msgtype, mentioned_list=c.mentioned_list,
                          mentioned_mobile_list=c.mentioned_mobile_list, timeout=(CONNECT_TIMEOUT_S, c.timeout_s),
                          session=session, people={n: (p.wecom_userid, p.mobile) for n, p in (people or {}).items()})
    if c.type == "webhook":
        url = environ.get(c.url_env, "") if c.url_env else c.url
        if not url:
            raise LookupError(f"channel {c.name}: environment variable {c.url_env} is not set")
        return JsonWebhook(c.name, url, timeout=c.timeout_s, session=session)
    path = Path(c.path)
    return LogFile(c.name, path if path.is_absolute() else Path(data_dir) / path)


def build_channels(config: AlertsConfig, environ: Mapping[str, str] | None = None, *,
                   panel_url: str = "http://localhost:8501", session: requests.Session | None = None) -> Channels:
    environ = os.environ if environ is None else environ
    transports, errors = {}, {}
    for name, c in config.channels.items():
        try:
            transports[name] = build_transport(c, environ, config.data_dir, session, config.people)
        except (LookupError, ValueError) as exc:
            errors[name] = str(exc)
    return Channels(config, transports, errors, panel_url)
