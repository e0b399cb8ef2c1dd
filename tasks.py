#!/usr/bin/env python3
"""The README's two commands. Needs only Python 3.11+ and this clone.

    python3 tasks.py demo   # .venv + install + store + the live demo (panel, simulator, guard worker)
    python3 tasks.py test   # .venv + install + the whole test suite (starts its own PostgreSQL, Chromium)

Both create or update `.venv` in the repo root; installing is skipped when the
requirement files have not changed since the last install.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
REQUIREMENT_FILES = ["requirements.txt", "requirements-test.txt", "constraints.txt", "pyproject.toml"]


def requirements_digest() -> str:
    digest = hashlib.sha256()
    for name in REQUIREMENT_FILES:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> Path:
    if sys.version_info < (3, 11):  # noqa: UP036 - tasks.py runs on whatever python3 the machine has
        sys.exit(f"BidLens needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    python = BIN / "python"
    if not python.exists():
        print(f"creating {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".bidlens-installed"
    digest = requirements_digest()
    if not stamp.exists() or stamp.read_text() != digest:
        print("installing requirements (first time: a few minutes) ...", flush=True)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-r", str(ROOT / "requirements-test.txt"), "-c", str(ROOT / "constraints.txt"),
                        "-e", str(ROOT)], check=True)
        stamp.write_text(digest)
    return python


def run(command: list[str]) -> int:
    """Run the command and pass SIGTERM and SIGINT on to it: a parent that dies alone would leave the
    demo (and its panel, guard worker and robot) running. Its exit code is ours.

    The child gets a process group of its own, so a Ctrl-C reaches it once (through us), not twice."""
    child = subprocess.Popen(command, process_group=0)

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    return child.wait()  # PEP 475: the wait resumes after each forwarded signal


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    python = ensure_venv()
    os.chdir(ROOT)
    if argv[0] == "demo":
        return run([str(BIN / "bidlens"), "demo", *argv[1:]])
    return run([str(python), "-m", "pytest", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
