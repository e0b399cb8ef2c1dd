"""End to end in a real headless Chromium: `streamlit run panel/app.py` on a seeded store.

An operator logs in and proposes an override, a manager logs in and approves
it, and the live board says the campaign is now decided by the override
("决策方：人工干预", and "decided by: override" in English). Screenshots of
each page go to artifacts/screenshots/ (kept by CI as artifacts).

Needs Debian's chromium at /usr/bin/chromium and Playwright's Python package;
in CI (CI=true) a missing browser fails the run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from browser_support import (
    ROOT,
    TIMEOUT_MS,
    free_port,
    launch,
    logout,
    open_page,
    require_browser,
    shot,
    wait_healthy,
)
from browser_support import login as login_as

from app.service import Control
from bench.panel_seed import PASSWORD, seed_store
from control.config import Settings
from store.engine import open_store

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _serve_panel(tmp_path, **settings):
    """A panel process on a freshly seeded store (`settings`: extra BIDLENS_* variables); yields its URL."""
    require_browser()
    url = f"sqlite:///{tmp_path / 'bidlens.db'}"
    control = Control(open_store(url), lambda: int(time.time()), Settings())  # the panel runs on real time
    seed_store(control)
    control.engine.dispose()
    port = free_port()
    env = {**os.environ, "BIDLENS_DB_URL": url, "BIDLENS_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT),
           **settings}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "panel" / "app.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def panel_url(tmp_path):
    yield from _serve_panel(tmp_path)


def _login(page, base: str, username: str) -> None:
    page.goto(base)
    login_as(page, username, PASSWORD)


def test_operator_proposes_manager_approves_board_shows_override(panel_url):
    playwright = require_browser()
    expect = playwright.expect
    with playwright.sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(panel_url)
        page.get_by_label("用户名").wait_for()
        shot(page, "01_login")

        _login(page, panel_url, "operator")
        shot(page, "02_board_operator")
        open_page(page, "人工干预")
        value = page.locator('[class*="st-key-ov_value_bid_c0001_"] input')
        value.fill("1.37")
        value.press("Tab")
        page.get_by_label("原因").fill("competitor surge on c0001")
        page.get_by_label("原因").press("Tab")  # the form checks what is typed before it can be submitted
        submit = page.get_by_role("button", name="提交审批")
        expect(submit).to_be_enabled()
        submit.click()
        expect(page.get_by_text("已提交，等待主管审批。")).to_be_visible()
        shot(page, "03_overrides_proposed")
        open_page(page, "决策解释")
        expect(page.get_by_text("主要原因")).to_be_visible()
        shot(page, "04_explorer")
        logout(page)

        _login(page, panel_url, "manager")
        open_page(page, "人工干预")
        page.get_by_role("tab", name="待审批").click()
        expect(page.get_by_text("competitor surge on c0001")).to_be_visible()
        shot(page, "05_approval_queue")
        page.get_by_role("button", name="批准").click()
        expect(page.get_by_text("已批准，立即生效")).to_be_visible()

        open_page(page, "实时看板")
        expect(page.locator("p", has_text=re.compile(r"c0001.*决策方：人工干预"))).to_be_visible()
        shot(page, "06_board_override")
        open_page(page, "守护")
        shot(page, "07_guards")
        open_page(page, "审计")
        expect(page.get_by_text("审计链完整")).to_be_visible()
        shot(page, "08_audit")

        page.get_by_text("English", exact=True).click()
        page.get_by_role("heading", name="Audit").wait_for()
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Live board", exact=True).click()
        expect(page.locator("p", has_text=re.compile(r"c0001.*decided by: override"))).to_be_visible()
        shot(page, "09_board_english")
        browser.close()


SESSION_S = 6


@pytest.fixture
def short_session_url(tmp_path):
    yield from _serve_panel(tmp_path, BIDLENS_SESSION_TIMEOUT_MIN=str(SESSION_S / 60))


def test_a_timed_out_live_board_shows_the_login_and_acknowledges_nothing(short_session_url, tmp_path):
    """Issue 16: the idle timeout was checked on full reruns only: a timed-out live board kept refreshing
    and its alert feed acknowledged an alert after expiry."""
    playwright = require_browser()
    expect = playwright.expect
    engine = open_store(f"sqlite:///{tmp_path / 'bidlens.db'}")

    def acked() -> int:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT count(*) FROM alerts WHERE acked_ts IS NOT NULL").scalar()

    acked_before = acked()
    with playwright.sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        _login(page, short_session_url, "operator")
        ack = page.get_by_role("button", name="确认", exact=True).first
        expect(ack).to_be_visible()
        page.get_by_text("暂停自动刷新").click()  # the board stops refreshing itself: nothing runs until a click
        expect(page.get_by_label("暂停自动刷新")).to_be_checked()
        page.wait_for_timeout(1000)  # the toggle's own run (an interaction) is over
        page.wait_for_timeout((SESSION_S + 2) * 1000)
        ack.click()  # inside the alert feed's fragment: only the fragment reruns
        expect(page.get_by_label("用户名")).to_be_visible()
        expect(page.get_by_text("会话已超时，请重新登录。")).to_be_visible()
        shot(page, "10_session_timed_out")
        assert acked() == acked_before

        _login(page, short_session_url, "operator")  # left alone, a refreshing board times out by itself
        expect(page.get_by_label("用户名")).to_be_visible(timeout=(SESSION_S * 3 + 10) * 1000)
        expect(page.get_by_text("会话已超时，请重新登录。")).to_be_visible()
        browser.close()
    engine.dispose()
