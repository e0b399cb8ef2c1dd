"""The product's main path, end to end, on the real demo stack in a real headless Chromium.

`bidlens demo` runs as a user starts it (simulator as the bidder with every
decision explained, guard worker with its alert sender, local WeCom robot,
Streamlit panel), on a promotion clock 120x real time. The "818"-style incident
trips the ROI guard; the robot receives the WeCom message; an operator follows
its link, logs in, lands on the alert, acknowledges it, reads the decision's
explanation and proposes an override; a manager approves it; the live board
says the campaign is now decided by the override. Screenshots go to
artifacts/screenshots/demo_*.png.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_support import (
    ROOT,
    TIMEOUT_MS,
    free_port,
    launch,
    login,
    logout,
    open_page,
    require_browser,
    shot,
    wait_healthy,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "demo-e2e-password"
SPEED = 120  # simulated seconds per real second: the first trips come within seconds
TRIP = re.compile(r"【严重】ROI 守护熔断</font>\n> 计划：\*\*(c\d+)\*\*.*?\]\((http://[^)]+/alerts\?alert=(\d+))\)",
                  re.S)


def wait_for_trip_message(robot_log: Path, demo: subprocess.Popen, timeout_s: float = 240) -> re.Match:
    """The first single-trip WeCom message the local robot printed: campaign, link, alert id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if demo.poll() is not None:
            raise RuntimeError(f"bidlens demo exited with {demo.returncode}")
        found = TRIP.search(robot_log.read_text(encoding="utf-8")) if robot_log.exists() else None
        if found:
            return found
        time.sleep(1)  # a real robot process writes this log; nothing to inject
    raise TimeoutError(f"no trip message reached the robot in {timeout_s} s: {robot_log}")


@pytest.fixture
def demo(tmp_path):
    require_browser()
    panel_port, robot_port = free_port(), free_port()
    env = {**os.environ, "BIDLENS_DATA_DIR": str(tmp_path), "BIDLENS_PANEL_PORT": str(panel_port),
           "BIDLENS_DEMO_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT)}
    for name in ("BIDLENS_DB_URL", "BIDLENS_ALERTS_CONFIG", "BIDLENS_PANEL_URL"):
        env.pop(name, None)
    out = tmp_path / "demo.out"
    with out.open("w", encoding="utf-8") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "demo", "--speed", str(SPEED),
                                 "--robot-port", str(robot_port)], cwd=ROOT, env=env, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{panel_port}", proc, timeout_s=180, log=out)
        yield proc, tmp_path, panel_port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the demo stops its children on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_trip_reaches_wecom_and_a_person_follows_the_link_explains_and_overrides(demo):
    proc, data_dir, panel_port = demo
    message = wait_for_trip_message(data_dir / "demo-robot.log", proc)
    campaign, link, alert_id = message.group(1), message.group(2), message.group(3)
    # The link names the demo's own panel, so a person can follow it from the group chat.
    assert link.startswith(f"http://localhost:{panel_port}/alerts?alert=")

    playwright = require_browser()
    expect = playwright.expect
    with playwright.sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)

        page.goto(link.replace("localhost", "127.0.0.1"))
        login(page, "operator", PASSWORD)
        expect(page.get_by_text(f"告警 #{alert_id}")).to_be_visible()
        expect(page.get_by_text("处理：流量已切换到人工规则池").first).to_be_visible()
        shot(page, "demo_01_alert_from_wecom")
        page.locator(".st-key-focus_ack button").click()
        expect(page.get_by_text(f"告警 {alert_id} 已确认。")).to_be_visible()

        page.locator(".st-key-focus_explain button").click()
        page.get_by_role("heading", name="决策解释").wait_for()
        expect(page.get_by_text("主要原因")).to_be_visible()
        shot(page, "demo_02_explanation")

        open_page(page, "人工干预")
        page.get_by_label("原因").fill(f"guard tripped on {campaign}: hold the bid")
        page.get_by_role("button", name="提交审批").click()
        expect(page.get_by_text("已提交，等待主管审批。")).to_be_visible()
        logout(page)

        login(page, "manager", PASSWORD)
        open_page(page, "人工干预")
        page.get_by_role("tab", name=re.compile(r"待审批")).click()
        expect(page.get_by_text(f"guard tripped on {campaign}: hold the bid")).to_be_visible()
        shot(page, "demo_03_approval")
        page.get_by_role("button", name="批准").click()
        expect(page.get_by_text("已批准，立即生效")).to_be_visible()

        open_page(page, "实时看板")
        expect(page.locator("p", has_text=re.compile(rf"{campaign}.*决策方：人工干预"))).to_be_visible()
        shot(page, "demo_04_board_override")
        browser.close()
