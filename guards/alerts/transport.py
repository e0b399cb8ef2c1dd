"""What every alert channel shares: the outcome of one send, and keeping secrets out of text.

Secrets (a WeCom key, a webhook URL with a token) are registered once; `redact`
replaces every encoding of them in any text: raw, percent-encoded in upper or
lower case (a key with `+ / =` travels as `%2B %2F %3D` in the request URL),
doubly encoded, JSON-escaped; and any `key=`/`token=` query value of any URL,
registered or not. Once a secret is registered, every log record of the process
is scrubbed as it is made (message, formatted exception, stack), so urllib3's
DEBUG lines with the request URL never carry the key, whichever logger made them.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

REDACTED = "***"
_secrets: set[str] = set()
_lock = threading.Lock()
_pattern: re.Pattern | None = None
# A credential-like query value in any URL, even one never registered (another robot's key).
_QUERY_SECRET = re.compile(r"(?i)([?&](?:key|token|access_token|secret|password|sig|signature)=)[^&#\s'\"<>]+")


def _char_pattern(ch: str) -> str:
    """Every way one character of a secret can appear in a URL, a log line or JSON."""
    alternatives = [re.escape(ch)]
    # %XX per UTF-8 byte, hex in either case, optionally encoded twice (%25XX)
    alternatives.append("".join("%(?:25)?" + "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{b:02x}")
                                for b in ch.encode("utf-8")))
    if ch == " ":
        alternatives.append(r"\+")
    if ch == "/":
        alternatives.append(r"\\/")
    return "(?:" + "|".join(alternatives) + ")"


def secret_pattern(secret: str) -> str:
    return "".join(_char_pattern(ch) for ch in secret)


def register_secret(secret: str) -> None:
    global _pattern
    if secret:
        with _lock:
            if secret not in _secrets:
                _secrets.add(secret)
                _pattern = re.compile("|".join(secret_pattern(s) for s in sorted(_secrets, key=len, reverse=True)))
        _install_scrubber()


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
        pattern = _pattern
    for s in sorted((s for s in extra if s), key=len, reverse=True):
        out = re.sub(secret_pattern(s), REDACTED, out)
    if pattern is not None:
        out = pattern.sub(REDACTED, out)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, out)


def _scrub(record: logging.LogRecord) -> None:
    """Replace the record's message (and exception and stack text) by its redacted form."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record is logging's to report, not ours
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[0] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        cleaned = redact(text)
        if cleaned != text:  # formatters print exc_text when it is set: the exception object keeps its URL
            record.exc_text = cleaned
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class SecretFilter(logging.Filter):
    """Rewrites a record's message with every registered secret replaced (for handlers of one's own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub(record)
        return True


_installed = False


def _install_scrubber() -> None:
    """Scrub every record of the process as it is made: a logger filter sees only its own logger's records."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        base = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = base(*args, **kwargs)
        _scrub(record)
        return record

    logging.setLogRecordFactory(factory)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """One delivery attempt: ok, or why not and whether trying again can help."""

    ok: bool
    retryable: bool = False
    rate_limited: bool = False   # the receiver refused for rate: wait for the next window
    error: str = ""              # redacted, safe to store and show
    http_status: int | None = None
    errcode: int | None = None
    # The request was (or may have been) written but no answer came: a read timeout, a connection
    # closed before the answer, a gateway timeout. The receiver may have shown the message.
    ambiguous: bool = False

    @property
    def permanent(self) -> bool:
        return not self.ok and not self.retryable

    @property
    def down(self) -> bool:
        """The receiver did not answer as a receiver: no answer at all, or a server error."""
        return not self.ok and (self.http_status is None or self.http_status >= 500)


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
    """Classify a non-200 HTTP answer: 5xx and 429 retryable, other 4xx permanent.

    504 is a gateway that gave up waiting for the receiver, which may still take the
    message: as ambiguous as a read timeout of our own.
    """
    if status == 200:
        return None
    if status == 429:
        return SendOutcome(False, retryable=True, rate_limited=True, error="HTTP 429", http_status=status)
    if status >= 500 or status in (408,):
        return SendOutcome(False, retryable=True, error=f"HTTP {status}", http_status=status,
                           ambiguous=status == 504)
    return SendOutcome(False, retryable=False, error=f"HTTP {status}", http_status=status)


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (requests -> urllib3 -> http.client / socket)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 20:
        e = todo.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [x for x in (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args)
                 if isinstance(x, BaseException)]
    return seen


def maybe_delivered(exc: BaseException) -> bool:
    """Whether a failed request may still have reached the receiver (no answer after writing it).

    A read timeout, or a connection closed or reset after the request went out, is
    ambiguous; a refused or timed-out connection, or an unresolvable name, never sent anything.
    """
    import http.client

    import requests
    import urllib3.exceptions as u3

    causes = _causes(exc)
    if any(isinstance(e, (requests.ConnectTimeout, u3.NewConnectionError, u3.ConnectTimeoutError,
                          u3.NameResolutionError, ConnectionRefusedError)) for e in causes):
        return False
    return any(isinstance(e, (requests.ReadTimeout, requests.exceptions.ChunkedEncodingError, u3.ProtocolError,
                              u3.ReadTimeoutError, http.client.RemoteDisconnected, ConnectionResetError,
                              BrokenPipeError)) for e in causes)


def request_failure(exc: Exception, *secrets: str) -> SendOutcome:
    """A requests exception (timeout, refused, dropped) as a retryable outcome, key redacted.

    The exception's text carries the full URL with the key, so only its redacted
    form is kept and the exception object itself is never re-raised or logged.
    """
    return SendOutcome(False, retryable=True, error=f"{type(exc).__name__}: {redact(exc, *secrets)}",
                       ambiguous=maybe_delivered(exc))
