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
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from panel_support import missing

from bench.panel_seed import PASSWORD, seed_store
from control.config import Settings
from control.service import Control
from store.engine import open_store

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking"]
TIMEOUT_MS = 30_000

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)  # polling a real server process; nothing to inject here
    raise TimeoutError(f"panel not healthy at {url} after {timeout_s} s")


@pytest.fixture
def panel_url(tmp_path):
    if not Path(CHROMIUM).exists() or shutil.which("streamlit", path=str(Path(sys.executable).parent)) is None:
        missing(f"needs {CHROMIUM} and streamlit next to {sys.executable}")
    url = f"sqlite:///{tmp_path / 'bidlens.db'}"
    control = Control(open_store(url), lambda: int(time.time()), Settings())  # the panel runs on real time
    seed_store(control)
    control.engine.dispose()
    port = _free_port()
    env = {**os.environ, "BIDLENS_DB_URL": url, "BIDLENS_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "panel" / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _login(page, base: str, username: str) -> None:
    page.goto(base)
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.get_by_text("大促时钟").wait_for(timeout=TIMEOUT_MS)


def _logout(page) -> None:
    page.get_by_role("button", name="退出登录").click()
    page.get_by_label("用户名").wait_for(timeout=TIMEOUT_MS)


def _open(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title).wait_for(timeout=TIMEOUT_MS)


def _shot(page, name: str) -> None:
    page.wait_for_timeout(800)  # let charts finish drawing before the picture
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_operator_proposes_manager_approves_board_shows_override(panel_url):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        missing("Playwright's Python package is not installed")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(panel_url)
        page.get_by_label("用户名").wait_for()
        _shot(page, "01_login")

        _login(page, panel_url, "operator")
        _shot(page, "02_board_operator")
        _open(page, "人工干预")
        page.get_by_label("原因").fill("competitor surge on c0001")
        page.get_by_role("button", name="提交审批").click()
        expect(page.get_by_text("已提交，等待主管审批。")).to_be_visible()
        _shot(page, "03_overrides_proposed")
        _open(page, "决策解释")
        expect(page.get_by_text("主要原因")).to_be_visible()
        _shot(page, "04_explorer")
        _logout(page)

        _login(page, panel_url, "manager")
        _open(page, "人工干预")
        page.get_by_role("tab", name="待审批（1）").click()
        expect(page.get_by_text("competitor surge on c0001")).to_be_visible()
        _shot(page, "05_approval_queue")
        page.get_by_role("button", name="批准").click()
        expect(page.get_by_text("已批准，立即生效")).to_be_visible()

        _open(page, "实时看板")
        expect(page.locator("p", has_text=re.compile(r"c0001.*决策方：人工干预"))).to_be_visible()
        _shot(page, "06_board_override")
        _open(page, "守护")
        _shot(page, "07_guards")
        _open(page, "审计")
        expect(page.get_by_text("审计链完整")).to_be_visible()
        _shot(page, "08_audit")

        page.get_by_text("English", exact=True).click()
        page.get_by_role("heading", name="Audit").wait_for()
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Live board", exact=True).click()
        expect(page.locator("p", has_text=re.compile(r"c0001.*decided by: override"))).to_be_visible()
        _shot(page, "09_board_english")
        browser.close()
