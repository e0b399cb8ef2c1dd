"""`python3 tasks.py demo` stops every part of the demo on SIGTERM or SIGINT.

The README's command is what people start (and what a process supervisor or a
terminal stops): a signal to it must reach the demo, and the demo must stop the
panel, the guard worker and the local robot, not leave them running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_support import ROOT, free_port, wait_healthy

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (read from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_tasks_py_demo_stops_every_part(tmp_path, signum):
    panel_port, robot_port = free_port(), free_port()
    env = {**os.environ, "BIDLENS_DATA_DIR": str(tmp_path), "BIDLENS_PANEL_PORT": str(panel_port),
           "BIDLENS_DEMO_PASSWORD": "stop-test-password"}
    for name in ("BIDLENS_DB_URL", "BIDLENS_ALERTS_CONFIG", "BIDLENS_PANEL_URL"):
        env.pop(name, None)
    log = tmp_path / "tasks.out"
    with log.open("w", encoding="utf-8") as sink:
        # As a non-interactive shell starts a background job: SIGINT arrives ignored.
        tasks = subprocess.Popen([sys.executable, str(ROOT / "tasks.py"), "demo", "--robot-port", str(robot_port)],
                                 cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    started: list[int] = []
    try:
        wait_healthy(f"http://127.0.0.1:{panel_port}", tasks, timeout_s=240, log=log)
        [demo] = _children(tasks.pid)
        parts = _children(demo)
        started += [demo, *parts]
        assert len(parts) == 3, parts  # robot, guard worker, panel
        tasks.send_signal(signum)
        tasks.wait(timeout=60)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in (demo, *parts)) and time.monotonic() < deadline:
            time.sleep(0.2)  # real processes shutting down; nothing to inject
        assert not [p for p in (demo, *parts) if _alive(p)], log.read_text(encoding="utf-8")
        assert "demo: stopped after" in log.read_text(encoding="utf-8")
    finally:  # a failed run must not leave its processes to the next test
        if tasks.poll() is None:
            tasks.kill()
        for pid in started:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
