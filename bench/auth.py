"""Login benchmark: one whole login (the per-source throttle, the try reserved under a row lock, one argon2id
verification, the audit entry) beside the password hash it replaced, alone."""

from __future__ import annotations

import base64
import hashlib
import statistics
import time
from pathlib import Path

from app.service import Control
from bench.registry import BenchContext, BenchResult, benchmark
from control.clock import ManualClock
from control.config import Settings
from control.domain import Role
from store.engine import open_store

PASSWORD = "a long benchmark password"


def _scrypt_before(password: str, salt: bytes) -> bytes:
    """The hash logins verified before issue 16: stdlib scrypt at N=2^14, r=8, p=1."""
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)


@benchmark("auth.login")
def bench_login(ctx: BenchContext) -> list[BenchResult]:
    repeats = 5 if ctx.quick else 40
    control = Control(open_store(f"sqlite:///{Path(ctx.workdir) / 'auth.db'}"), ManualClock(1_786_982_400),
                      Settings(data_dir=ctx.workdir))
    control.add_user(None, "mia", "Mia", Role.MANAGER, PASSWORD)
    logins, old = [], []
    salt = base64.b64decode("MDEyMzQ1Njc4OWFiY2RlZg==")
    for _ in range(repeats):
        start = time.perf_counter()
        control.login("mia", PASSWORD, source="bench")
        logins.append(time.perf_counter() - start)
        start = time.perf_counter()
        _scrypt_before(PASSWORD, salt)
        old.append(time.perf_counter() - start)
    ms = lambda samples: round(statistics.median(samples) * 1000, 2)  # noqa: E731
    return [BenchResult("auth.login.p50", ms(logins), "ms", "scrypt N=2^14 alone (the hash before) p50", ms(old),
                        False, notes=f"{repeats} logins on SQLite: throttle, row-locked try, argon2id "
                                     "(m=19 MiB, t=2, p=1), audit entry")]
