"""A throwaway PostgreSQL 15 server in a temporary folder, for tests and benchmarks.

Uses the machine's initdb/pg_ctl. PostgreSQL refuses to run as root, so as root
the data folder is handed to the `postgres` system user and the server runs as it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _find(binary: str) -> str:
    found = shutil.which(binary)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{binary}"), reverse=True):
        return str(candidate)
    raise PostgresUnavailable(f"{binary} not found: install PostgreSQL 15 (Debian package postgresql)")


@contextmanager
def temporary_postgres():
    """Yield a SQLAlchemy URL of a fresh server (superuser `bidlens`); stop and delete it after."""
    initdb, pg_ctl = _find("initdb"), _find("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="bidlens-pg-"))
    data = root / "data"
    port = _free_port()
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise PostgresUnavailable("running as root and no `postgres` user to run the server") from exc
        shutil.chown(root, "postgres")
        root.chmod(0o700)
        as_postgres = ["runuser", "-u", "postgres", "--"]

    def run(*cmd: str) -> None:
        result = subprocess.run([*as_postgres, *cmd], capture_output=True, text=True)
        if result.returncode != 0:
            raise PostgresUnavailable(f"{cmd[0]} failed: {result.stderr.strip()[-500:]}")

    try:
        run(initdb, "-D", str(data), "-U", "bidlens", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off", "start")
        yield f"postgresql+psycopg://bidlens@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
