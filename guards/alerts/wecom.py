"""WeCom (企业微信) group robot client over `requests`.

POST {base_url}?key=KEY with JSON; the answer is HTTP 200 with `errcode` in the
body even for errors, so success is HTTP 200 AND errcode == 0. Limits are bytes
of UTF-8 (a CJK character is 3): markdown content <= 4096, text content <= 2048.
A robot takes at most 20 messages a minute (errcode 45009 beyond that).

WeCom cannot drop a duplicate and shows a message it accepted even when the
sender timed out waiting for the answer. So the robot offers a probe: a request
WeCom answers without showing anything (an empty text, errcode 44004), which
tells whether the robot answers again before anything visible is resent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import requests

from guards.alerts.transport import (
    OutboundMessage,
    SendOutcome,
    http_status_outcome,
    redact,
    register_secret,
    register_url_secrets,
    request_failure,
)

DEFAULT_BASE_URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
MAX_BYTES = {"markdown": 4096, "text": 2048}
TRUNCATION_MARK = "…(truncated)"
RATE_LIMIT_PER_MIN = 20
CONNECT_TIMEOUT_S = 3.05
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}

ERRCODE_OK = 0
ERRCODE_BUSY = -1            # WeCom "system busy": retry
ERRCODE_RATE_LIMIT = 45009
ERRCODE_EMPTY = 44004        # the probe's expected answer: the robot is there, nothing was shown
PROBE_BODY = {"msgtype": "text", "text": {"content": ""}}
PERMANENT_ERRCODES = {
    93000: "invalid webhook url (bad or deleted key)",
    40008: "invalid message type",
    44004: "empty content",
    40058: "invalid parameter (e.g. content over the byte limit)",
}


def mention_tail(msgtype: str, mentioned_list: Sequence[str]) -> str:
    """What a markdown message carries after its content to @ people (<@userid>): never cut."""
    if msgtype == "markdown" and mentioned_list:
        return "\n" + " ".join(f"<@{u}>" for u in mentioned_list)
    return ""


def content_limit(msgtype: str, mentioned_list: Sequence[str] = ()) -> int:
    """Bytes of UTF-8 a message's own content may take (the @ tail comes out of the limit)."""
    return MAX_BYTES[msgtype] - len(mention_tail(msgtype, mentioned_list).encode("utf-8"))


def truncate_utf8(text: str, max_bytes: int, marker: str = TRUNCATION_MARK) -> str:
    """Cut `text` to at most max_bytes of UTF-8, on a character boundary, ending with marker."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    room = max_bytes - len(marker.encode("utf-8"))
    if room < 0:
        raise ValueError(f"max_bytes={max_bytes} is smaller than the truncation marker")
    # errors="ignore" drops the partial character the byte cut may split.
    return data[:room].decode("utf-8", errors="ignore") + marker


def classify_probe(status: int, body: object) -> SendOutcome:
    """A probe's answer: ok when the robot answers as a robot (any errcode but busy); rate limit kept."""
    by_status = http_status_outcome(status)
    if by_status is not None:
        return by_status
    code = body.get("errcode") if isinstance(body, dict) else None
    if not isinstance(code, int) or code == ERRCODE_BUSY:
        return SendOutcome(False, retryable=True, http_status=status, errcode=code,
                           error="probe: robot busy or no errcode")
    if code == ERRCODE_RATE_LIMIT:
        return SendOutcome(False, retryable=True, rate_limited=True, http_status=status, errcode=code,
                           error=f"probe: errcode {code} (rate limit)")
    return SendOutcome(True, http_status=status, errcode=code)


def classify_answer(status: int, body: object) -> SendOutcome:
    """WeCom's answer as an outcome: HTTP first, then errcode."""
    by_status = http_status_outcome(status)
    if by_status is not None:
        return by_status
    if not isinstance(body, dict) or not isinstance(body.get("errcode"), int):
        return SendOutcome(False, retryable=True, error="HTTP 200 without an errcode", http_status=status)
    code = body["errcode"]
    errmsg = redact(str(body.get("errmsg", "")))[:200]
    if code == ERRCODE_OK:
        return SendOutcome(True, http_status=status, errcode=code)
    if code == ERRCODE_RATE_LIMIT:
        return SendOutcome(False, retryable=True, rate_limited=True, http_status=status, errcode=code,
                           error=f"errcode {code} (rate limit): {errmsg}")
    if code == ERRCODE_BUSY:
        return SendOutcome(False, retryable=True, http_status=status, errcode=code,
                           error=f"errcode {code} (system busy): {errmsg}")
    why = PERMANENT_ERRCODES.get(code, "not retryable")
    return SendOutcome(False, retryable=False, http_status=status, errcode=code,
                       error=f"errcode {code} ({why}): {errmsg}")


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


class WeComRobot:
    """One group robot. The key is kept out of repr, errors and logs."""

    idempotent = False  # WeCom shows every copy it accepts: a resend must say it is one

    def __init__(self, name: str, key: str, *, base_url: str = DEFAULT_BASE_URL, msgtype: str = "markdown",
                 mentioned_list: Sequence[str] = (), mentioned_mobile_list: Sequence[str] = (),
                 timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, 10.0), session: requests.Session | None = None,
                 people: Mapping[str, tuple[str, str]] | None = None):
        if msgtype not in MAX_BYTES:
            raise ValueError(f"msgtype={msgtype!r}: must be one of {sorted(MAX_BYTES)}")
        if not key:
            raise ValueError(f"robot {name!r}: empty key")
        self.name = name
        self.msgtype = msgtype
        self.base_url = base_url
        self.mentioned_list = list(mentioned_list)
        self.mentioned_mobile_list = list(mentioned_mobile_list)
        self.timeout = timeout
        self.people = dict(people or {})  # username -> (WeCom userid, mobile): whom a text message mentions
        self._key = key
        self._session = session or requests.Session()
        register_secret(key)
        if "?" in base_url:  # a gateway URL may carry a token of its own
            register_url_secrets(base_url)

    def __repr__(self) -> str:
        return f"WeComRobot(name={self.name!r}, msgtype={self.msgtype!r}, base_url={self.base_url!r})"

    @property
    def max_bytes(self) -> int:
        return MAX_BYTES[self.msgtype]

    def body(self, content: str, notify: Sequence[str] = ()) -> dict:
        """The request body; `notify`: usernames the message is addressed to (a text message mentions those
        the config knows; markdown mentions them in its content, see guards.alerts.templates)."""
        # Messages are fitted to content_limit when rendered; cutting here is the last resort.
        tail = mention_tail(self.msgtype, self.mentioned_list)
        if tail:  # markdown @-mentions are <@userid> in the content; kept whole, after the text
            return {"msgtype": "markdown", "markdown": {
                "content": truncate_utf8(content, self.max_bytes - len(tail.encode("utf-8"))) + tail}}
        inner: dict = {"content": truncate_utf8(content, self.max_bytes)}
        if self.msgtype == "text":
            known = [self.people[n] for n in notify if n in self.people]
            users = _unique([*self.mentioned_list, *(u for u, _ in known if u)])
            mobiles = _unique([*self.mentioned_mobile_list, *(m for _, m in known if m)])
            if users:
                inner["mentioned_list"] = users
            if mobiles:
                inner["mentioned_mobile_list"] = mobiles
        return {"msgtype": self.msgtype, self.msgtype: inner}

    def _request(self, body: dict, read_timeout_s: float | None) -> tuple[int, object] | SendOutcome:
        timeout = self.timeout if read_timeout_s is None else (self.timeout[0], read_timeout_s)
        try:
            # WeCom wants UTF-8 JSON; send the characters, not \u escapes.
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            response = self._session.post(self.base_url, params={"key": self._key}, data=data,
                                          headers=JSON_HEADERS, timeout=timeout)
        except requests.RequestException as exc:
            return request_failure(exc, self._key)
        except Exception as exc:  # noqa: BLE001 - any other error may print the URL: keep its redacted text only
            return SendOutcome(False, retryable=True, error=f"{type(exc).__name__}: {redact(exc, self._key)}")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        return response.status_code, answer

    def post(self, content: str, *, read_timeout_s: float | None = None, notify: Sequence[str] = ()) -> SendOutcome:
        answer = self._request(self.body(content, notify), read_timeout_s)
        return answer if isinstance(answer, SendOutcome) else classify_answer(*answer)

    def send(self, message: OutboundMessage, *, read_timeout_s: float | None = None) -> SendOutcome:
        """Post the message; read_timeout_s replaces the read timeout (the outbox waits longer for a slow robot)."""
        notify = _unique([n for alert in message.alerts for n in (alert.get("payload") or {}).get("notify") or ()])
        return self.post(message.content, read_timeout_s=read_timeout_s, notify=notify)

    def probe(self, *, read_timeout_s: float | None = None) -> SendOutcome:
        """Ask whether the robot answers, showing nothing: an empty text is refused with 44004."""
        answer = self._request(PROBE_BODY, read_timeout_s)
        return answer if isinstance(answer, SendOutcome) else classify_probe(*answer)
