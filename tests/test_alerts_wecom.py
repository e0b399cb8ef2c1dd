"""The WeCom robot client against a local server speaking the robot protocol."""

from __future__ import annotations

import json
import logging
import re
import traceback

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from guards.alerts.local_server import LocalRobotServer
from guards.alerts.transport import OutboundMessage
from guards.alerts.wecom import TRUNCATION_MARK, WeComRobot, classify_answer, truncate_utf8
from tests.alerts_support import KEY


def test_truncation_cuts_on_a_character_boundary_with_marker():
    text = "告警" * 1000  # 3 bytes a character
    marker = len(TRUNCATION_MARK.encode())
    for limit in range(100, 112):  # every offset of the cut inside a 3-byte character
        out = truncate_utf8(text, limit)
        data = out.encode("utf-8")
        assert len(data) <= limit
        assert out.endswith(TRUNCATION_MARK)
        assert text.startswith(out[: -len(TRUNCATION_MARK)])
        assert len(data) > limit - marker - 3  # lost at most the one split character
    assert truncate_utf8("short", 4096) == "short"


@given(st.text(), st.integers(min_value=len(TRUNCATION_MARK.encode()), max_value=300))
def test_truncation_property(text, limit):
    out = truncate_utf8(text, limit)
    assert len(out.encode("utf-8")) <= limit
    if out != text:
        assert out.endswith(TRUNCATION_MARK) and text.startswith(out[: -len(TRUNCATION_MARK)])


def msg(content: str) -> OutboundMessage:
    return OutboundMessage("ops-1", "ops", content, (1,))


@pytest.fixture
def server():
    with LocalRobotServer(keys=[KEY]) as srv:
        yield srv


def test_markdown_sent_and_long_content_truncated_to_the_limit(server):
    robot = WeComRobot("ops", KEY, base_url=server.base_url)
    long = "## 熔断\n" + "预测 ROI 1.80，底线 2.00。" * 400
    assert len(long.encode()) > 4096
    out = robot.send(msg(long))
    assert out.ok, out
    got = server.state.received[-1]
    assert got.msgtype == "markdown" and len(got.content.encode()) <= 4096
    assert got.content.endswith(TRUNCATION_MARK)


def test_text_message_mentions_by_mobile_and_user(server):
    robot = WeComRobot("oncall", KEY, base_url=server.base_url, msgtype="text",
                       mentioned_list=["zhangsan"], mentioned_mobile_list=["13800001111"])
    assert robot.send(msg("x" * 3000)).ok
    body = server.state.received[-1].body
    assert body["text"]["mentioned_mobile_list"] == ["13800001111"]
    assert body["text"]["mentioned_list"] == ["zhangsan"]
    assert len(body["text"]["content"].encode()) <= 2048


@pytest.mark.parametrize("mode, retryable, rate_limited", [
    ("rate_limit", True, True), ("invalid_key", False, False), ("http500", True, False),
    ("drop", True, False), ("slow", True, False)])
def test_answers_are_classified(server, mode, retryable, rate_limited):
    server.set_mode(mode)
    server.state.slow_s = 0.6
    robot = WeComRobot("ops", KEY, base_url=server.base_url, timeout=(1.0, 0.2))
    out = robot.send(msg("hello"))
    assert not out.ok
    assert out.retryable is retryable and out.rate_limited is rate_limited
    assert KEY not in out.error


def test_unknown_key_is_permanent(server):
    out = WeComRobot("ops", "wrong-key", base_url=server.base_url).send(msg("hi"))
    assert out.permanent and out.errcode == 93000 and "wrong-key" not in out.error


@pytest.mark.parametrize("status, body, retryable", [
    (200, {"errcode": 0}, None), (200, {"errcode": 45009}, True), (200, {"errcode": -1}, True),
    (200, {"errcode": 40008}, False), (200, {"errcode": 44004}, False), (200, {"errcode": 40058}, False),
    (200, {"errcode": 93000}, False), (200, {"errcode": 12345}, False), (200, None, True),
    (502, None, True), (429, None, True), (404, None, False), (400, {"errcode": 0}, False)])
def test_classify_answer_table(status, body, retryable):
    out = classify_answer(status, body)
    if retryable is None:
        assert out.ok
    else:
        assert not out.ok and out.retryable is retryable


def test_key_never_in_logs_errors_or_output(caplog, capsys):
    caplog.set_level(logging.DEBUG)  # urllib3 prints request URLs (with ?key=) at DEBUG
    with LocalRobotServer(keys=[KEY]) as srv:
        robot = WeComRobot("ops", KEY, base_url=srv.base_url, timeout=(0.5, 0.2))
        assert robot.send(msg("ok")).ok
        srv.set_mode("drop")
        dropped = robot.send(msg("dropped"))
        port = srv.port
    refused = WeComRobot("ops", KEY, base_url=f"http://127.0.0.1:{port}/cgi-bin/webhook/send",
                         timeout=(0.2, 0.2)).send(msg("refused"))
    assert "ConnectionError" in refused.error and "ConnectionError" in dropped.error
    logging.getLogger("urllib3.connectionpool").debug("leak attempt %s", f"/send?key={KEY}")
    text = caplog.text + repr(robot) + dropped.error + refused.error + "".join(capsys.readouterr())
    assert "/cgi-bin/webhook/send" in caplog.text  # the URL was logged, with the key redacted
    assert KEY not in text


def test_requests_exception_text_really_contains_the_key():
    """Why wrapping is needed: the raw exception of requests names the URL with its key."""
    with LocalRobotServer() as srv:
        port = srv.port
    with pytest.raises(requests.ConnectionError) as info:
        requests.post(f"http://127.0.0.1:{port}/x", params={"key": KEY}, timeout=0.2)
    assert KEY in "".join(traceback.format_exception(info.value))


def test_markdown_mentions_user_ids_and_survive_truncation(server):
    robot = WeComRobot("ops", KEY, base_url=server.base_url, mentioned_list=["zhangsan", "lisi"])
    assert robot.send(msg("告" * 3000)).ok
    content = server.state.received[-1].content
    assert content.endswith("\n<@zhangsan> <@lisi>") and TRUNCATION_MARK in content
    assert len(content.encode()) <= 4096


def test_probe_asks_the_robot_without_showing_anything(server):
    robot = WeComRobot("ops", KEY, base_url=server.base_url)
    out = robot.probe()
    assert out.ok and out.errcode == 44004 and server.state.received == []
    server.set_mode("drop")
    out = robot.probe()
    assert not out.ok and out.down and out.ambiguous
    server.set_mode("http500")
    assert robot.probe().down and not robot.probe().ambiguous
    server.set_mode("errcode")  # -1: WeCom busy
    assert not robot.probe().ok


def test_only_a_request_that_may_have_arrived_is_ambiguous(server):
    robot = WeComRobot("ops", KEY, base_url=server.base_url, timeout=(1.0, 0.2))
    server.state.slow_s = 0.5
    for mode, ambiguous in (("slow", True), ("accept_drop", True), ("drop", True), ("http500", False),
                            ("rate_limit", False), ("invalid_key", False)):
        server.set_mode(mode)
        assert robot.send(OutboundMessage("m", "ops", "hi", ())).ambiguous is ambiguous, mode
    port = server.port
    server.stop()
    refused = WeComRobot("ops", KEY, base_url=f"http://127.0.0.1:{port}/cgi-bin/webhook/send", timeout=(0.2, 0.2))
    out = refused.send(OutboundMessage("m", "ops", "hi", ()))
    assert out.down and not out.ambiguous, "a refused connection sent nothing"


def test_every_encoding_of_a_key_is_redacted_in_text_and_in_any_logger():
    from urllib.parse import quote, quote_plus

    from guards.alerts.transport import redact, register_secret

    key = "Ab3Q+Cd4R/Ef5S=Gh6T+"
    register_secret(key)
    encoded = quote(key, safe="")
    lower = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded)
    for form in (key, encoded, lower, quote_plus(key), quote(encoded, safe=""), json.dumps(key).replace("/", "\\/")):
        text = redact(f"POST /cgi-bin/webhook/send?key={form} HTTP/1.1")
        assert not any(part in text for part in ("Ab3Q", "Cd4R", "Ef5S", "Gh6T")), form
    assert redact("https://gw.example/send?token=unregistered-t0ken&x=1") == "https://gw.example/send?token=***&x=1"
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    other = logging.getLogger("urllib3.some_new_module")  # a logger nobody put a filter on
    handler = Keep()
    other.addHandler(handler)
    other.setLevel(logging.DEBUG)
    try:
        other.debug('"POST %s HTTP/1.1" 200', f"/send?key={lower}")
        try:
            raise ValueError(f"bad url /send?key={encoded}")
        except ValueError:
            other.exception("failed")
    finally:
        other.removeHandler(handler)
    assert len(records) == 2 and "key=***" in records[0]
    assert not any(part in "".join(records) for part in ("Ab3Q", "Cd4R", "Ef5S", "Gh6T"))
