"""A local server that speaks the WeCom group-robot protocol, for tests, benchmarks and demos.

It checks each request as WeCom does (key, JSON shape per msgtype, content bytes,
20 messages a minute per key on the clock it is given) and answers in WeCom's way
(HTTP 200, errcode in the body). It can be told to misbehave: answer the
rate-limit errcode, the invalid-key errcode, any errcode, HTTP 500, take the
message and answer late (as WeCom does: a message is shown even when its sender
timed out), drop the connection without taking the message, or take it and drop
the connection. `then(...)` queues modes for the next requests only. Every request
is logged with the server's own receive time (`requests`), so tests judge the rate
by what the robot saw. `/hook` is a generic JSON webhook that drops repeats of an
Idempotency-Key. Nothing it receives is printed (the URL carries the key).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from guards.alerts.wecom import MAX_BYTES, RATE_LIMIT_PER_MIN

ROBOT_PATH = "/cgi-bin/webhook/send"
HOOK_PATH = "/hook"
MODES = ("ok", "rate_limit", "invalid_key", "errcode", "http500", "slow", "drop", "accept_drop")


@dataclass(frozen=True)
class Received:
    ts: float
    key: str
    msgtype: str
    content: str
    body: dict


@dataclass(frozen=True)
class Request:
    """One request to the robot path, as the server saw it."""

    ts: float
    mode: str
    http_status: int | None      # None: the connection was dropped without an answer
    errcode: int | None
    probe: bool                  # empty content: asks for an answer, shows nothing
    accepted: bool               # shown in the group


@dataclass
class RobotState:
    keys: set[str]
    clock: Callable[[], float]
    rate_limit: int = RATE_LIMIT_PER_MIN
    window_s: float = 60.0
    mode: str = "ok"
    slow_s: float = 0.5
    errcode: int = -1                                             # the answer in mode "errcode"
    script: list[str] = field(default_factory=list)               # modes for the next requests, first first
    received: list[Received] = field(default_factory=list)       # accepted robot messages
    answers: list[tuple[float, int, int | None]] = field(default_factory=list)  # (ts, http, errcode)
    requests: list[Request] = field(default_factory=list)        # every robot request, answered or not
    hook_received: list[dict] = field(default_factory=list)       # first delivery of each id
    hook_duplicates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)  # wakes slow answers at stop

    def errcodes(self) -> list[int | None]:
        with self.lock:
            return [e for _, _, e in self.answers]

    def next_mode(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else self.mode


def _is_probe(raw: bytes) -> bool:
    try:
        body = json.loads(raw.decode("utf-8"))
        inner = body.get(body.get("msgtype")) if isinstance(body, dict) else None
        return isinstance(inner, dict) and inner.get("content") == ""
    except (UnicodeDecodeError, ValueError, TypeError):
        return False


def _check(state: RobotState, key: str | None, raw: bytes) -> tuple[int, str, Received | None]:
    if not key or key not in state.keys:
        return 93000, "invalid webhook url", None
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return 40058, "invalid Request Parameter: body is not UTF-8 JSON", None
    msgtype = body.get("msgtype") if isinstance(body, dict) else None
    if msgtype not in MAX_BYTES:
        return 40008, f"invalid message type {msgtype!r}", None
    inner = body.get(msgtype)
    content = inner.get("content") if isinstance(inner, dict) else None
    if not isinstance(content, str) or not content:
        return 44004, "empty content", None
    if len(content.encode("utf-8")) > MAX_BYTES[msgtype]:
        return 40058, f"{msgtype}.content exceed max length {MAX_BYTES[msgtype]}", None
    for lst in ("mentioned_list", "mentioned_mobile_list"):
        value = inner.get(lst)
        if value is not None and (msgtype != "text" or not isinstance(value, list)
                                  or not all(isinstance(v, str) for v in value)):
            return 40058, f"invalid {lst}", None
    now = state.clock()
    recent = [r for r in state.received if r.key == key and r.ts > now - state.window_s]
    if len(recent) >= state.rate_limit:
        return 45009, "api freq out of limit", None
    return 0, "ok", Received(now, key, msgtype, content, body)


class _Handler(BaseHTTPRequestHandler):
    server_version = "LocalRobot/1"
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # one write per answer: split header/body packets cost 40 ms of delayed ACK

    def log_message(self, format, *args):  # noqa: A002 - the URL holds the key: never print it
        return

    def _reply(self, status: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server's name
        state: RobotState = self.server.state  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlparse(self.path)
        if url.path == HOOK_PATH:
            return self._hook(state, raw)
        if url.path != ROBOT_PATH:
            return self._reply(404, {"error": "not found"})
        mode = state.next_mode()
        key = (parse_qs(url.query).get("key") or [None])[0]
        probe = _is_probe(raw)
        if mode in ("drop", "http500"):
            with state.lock:
                status = 500 if mode == "http500" else None
                state.requests.append(Request(state.clock(), mode, status, None, probe, False))
                if status:
                    state.answers.append((state.clock(), 500, None))
            if mode == "drop":
                self.close_connection = True
                return None
            return self._reply(500, {"error": "internal"})
        with state.lock:
            if mode == "rate_limit":
                code, msg, rec = 45009, "api freq out of limit", None
            elif mode == "invalid_key":
                code, msg, rec = 93000, "invalid webhook url", None
            elif mode == "errcode":
                code, msg, rec = state.errcode, "error", None
            else:  # ok, slow, accept_drop: checked and taken as WeCom does
                code, msg, rec = _check(state, key, raw)
            if rec is not None:
                state.received.append(rec)
            state.requests.append(Request(state.clock(), mode, None if mode == "accept_drop" else 200, code, probe,
                                          rec is not None))
            if mode != "accept_drop":
                state.answers.append((state.clock(), 200, code))
        if mode == "accept_drop":  # taken and shown, but the answer never comes
            self.close_connection = True
            return None
        if mode == "slow":  # taken and shown at once, answered late (after the client may have given up)
            state.release.wait(state.slow_s)
        return self._reply(200, {"errcode": code, "errmsg": msg})

    def _hook(self, state: RobotState, raw: bytes):
        ident = self.headers.get("Idempotency-Key", "")
        with state.lock:
            seen = {d.get("message_id") for d in state.hook_received}
            if ident and ident in seen:
                state.hook_duplicates += 1
            else:
                state.hook_received.append(json.loads(raw.decode("utf-8")))
        return self._reply(200, {"ok": True})


class LocalRobotServer:
    """Start with `with LocalRobotServer(keys=[...], clock=...) as srv:`; srv.base_url is the robot URL."""

    def __init__(self, keys: Iterable[str] = ("local-key",), clock: Callable[[], float] = time.time,
                 rate_limit: int = RATE_LIMIT_PER_MIN, window_s: float = 60.0, port: int = 0):
        self.state = RobotState(keys=set(keys), clock=clock, rate_limit=rate_limit, window_s=window_s)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.state = self.state  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{ROBOT_PATH}"

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{HOOK_PATH}"

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: must be one of {MODES}")
        self.state.mode = mode

    def then(self, *modes: str) -> None:
        """Answer the next requests in these modes, one each, then go back to the standing mode."""
        for mode in modes:
            if mode not in MODES:
                raise ValueError(f"mode={mode!r}: must be one of {MODES}")
        with self.state.lock:
            self.state.script.extend(modes)

    def messages(self) -> list[Request]:
        """Requests that were messages (not probes), answered or not."""
        with self.state.lock:
            return [r for r in self.state.requests if not r.probe]

    def start(self) -> LocalRobotServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LocalRobotServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
