"""What the browser tests share: Debian's Chromium under Playwright, a panel process, logins, screenshots."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from panel_support import missing

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking"]
TIMEOUT_MS = 30_000


def require_browser():
    """Playwright's sync API, or fail in CI / skip elsewhere when the browser or streamlit is missing."""
    if not Path(CHROMIUM).exists() or shutil.which("streamlit", path=str(Path(sys.executable).parent)) is None:
        missing(f"needs {CHROMIUM} and streamlit next to {sys.executable}")
    try:
        from playwright import sync_api
    except ImportError:
        missing("Playwright's Python package is not installed")
    SHOTS.mkdir(parents=True, exist_ok=True)
    return sync_api


def launch(pw):
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 60, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = log.read_text(encoding="utf-8") if log else proc.stdout.read()
            raise RuntimeError(f"process exited with {proc.returncode}: {said}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)  # polling a real server process; nothing to inject here
    raise TimeoutError(f"panel not healthy at {url} after {timeout_s} s")


def t(lang: str, key: str, **values) -> str:
    from panel.i18n import translate
    return translate(lang, key, **values)


def login(page, username: str, password: str, lang: str = "zh") -> None:
    page.get_by_label(t(lang, "login.username"), exact=True).fill(username)
    page.get_by_label(t(lang, "login.password"), exact=True).fill(password)
    page.get_by_role("button", name=t(lang, "login.submit")).click()
    page.get_by_text(t(lang, "app.clock")).wait_for(timeout=TIMEOUT_MS)


def logout(page, lang: str = "zh") -> None:
    page.get_by_role("button", name=t(lang, "app.logout")).click()
    page.get_by_label(t(lang, "login.username")).wait_for(timeout=TIMEOUT_MS)


def open_page(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title).wait_for(timeout=TIMEOUT_MS)


def settled(page) -> None:
    """Wait until the page's script run has finished: no element left from the run before."""
    page.wait_for_timeout(300)  # the rerun a click starts has begun
    page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]') && "
                           "!document.querySelector('[data-testid=\"stStatusWidget\"] [data-testid=\"stSpinner\"]')",
                           timeout=TIMEOUT_MS)


def main_lines(page) -> list[str]:
    """What the page's main area says, line by line (tables drawn on a canvas are not text; icons, which
    are ligatures such as "visibility" in an icon font, are not words)."""
    settled(page)
    text = page.locator('[data-testid="stMain"]').evaluate(
        """main => { const copy = main.cloneNode(true);
                     copy.querySelectorAll('[data-testid="stIconMaterial"], .material-symbols-rounded')
                         .forEach(icon => icon.remove());
                     document.body.appendChild(copy);
                     const text = copy.innerText; copy.remove(); return text; }""")
    return [line.strip() for line in text.splitlines() if line.strip()]


def shot(page, name: str) -> None:
    page.wait_for_timeout(800)  # let charts finish drawing before the picture
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
