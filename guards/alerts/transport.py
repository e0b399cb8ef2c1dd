"""What every alert channel shares: the outcome of one send, and keeping secrets out of text.

Secrets (a WeCom key, a webhook URL with a token) are registered once; `redact`
replaces them in any text, and `SecretFilter` does the same for the log records
of urllib3/requests, which print request URLs (with `?key=...`) at DEBUG level.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

REDACTED = "***"
_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(secret: str) -> None:
    if secret:
        with _lock:
            _secrets.add(secret)
        _install_filter()


def register_url_secrets(url: str) -> None:
    """A URL with a token: the URL, its path and query and each query value, and any password.

    requests' errors print the path and query apart from the host, so the whole URL
    alone would not be found in them.
    """
    parts = urlsplit(url)
    register_secret(url)
    if parts.query:
        register_secret(parts.query)
        for _, value in parse_qsl(parts.query):
            if len(value) >= 4:
                register_secret(value)
    if len(parts.path) > 8:
        register_secret(parts.path)
    if parts.password:
        register_secret(parts.password)


def redact(text: object, *extra: str) -> str:
    out = str(text)
    with _lock:
        secrets = sorted(_secrets | {s for s in extra if s}, key=len, reverse=True)
    for s in secrets:
        out = out.replace(s, REDACTED)
    return out


class SecretFilter(logging.Filter):
    """Rewrites a record's message with every registered secret replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = SecretFilter()
# Loggers that print request URLs; a logger's filters see the records logged to it directly.
URL_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "requests", "guards.alerts")


def _install_filter() -> None:
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """One delivery attempt: ok, or why not and whether trying again can help."""

    ok: bool
    retryable: bool = False
    rate_limited: bool = False   # the receiver refused for rate: wait for the next window
    error: str = ""              # redacted, safe to store and show
    http_status: int | None = None
    errcode: int | None = None

    @property
    def permanent(self) -> bool:
        return not self.ok and not self.retryable


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message to a channel: fixed when planned, so a resend is the same message."""

    message_id: str
    channel: str
    content: str            # rendered for the channel's format (markdown / text)
    alert_ids: tuple[int, ...]
    alerts: tuple[dict, ...] = ()  # structured summary for JSON and log channels


class Channel(Protocol):
    name: str

    def send(self, message: OutboundMessage) -> SendOutcome: ...


def http_status_outcome(status: int) -> SendOutcome | None:
    """Classify a non-200 HTTP answer: 5xx and 429 retryable, other 4xx permanent."""
    if status == 200:
        return None
    if status == 429:
        return SendOutcome(False, retryable=True, rate_limited=True, error="HTTP 429", http_status=status)
    if status >= 500 or status in (408,):
        return SendOutcome(False, retryable=True, error=f"HTTP {status}", http_status=status)
    return SendOutcome(False, retryable=False, error=f"HTTP {status}", http_status=status)


def request_failure(exc: Exception, *secrets: str) -> SendOutcome:
    """A requests exception (timeout, refused, dropped) as a retryable outcome, key redacted.

    The exception's text carries the full URL with the key, so only its redacted
    form is kept and the exception object itself is never re-raised or logged.
    """
    return SendOutcome(False, retryable=True, error=f"{type(exc).__name__}: {redact(exc, *secrets)}")
