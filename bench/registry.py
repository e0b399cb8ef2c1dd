"""Named benchmarks: each measures a figure and its baseline in the same run.

A benchmark is a function decorated with `@benchmark("name")` that takes a
BenchContext and returns one or more BenchResult. Modules listed in
BENCH_MODULES register theirs when imported.
"""

from __future__ import annotations

import importlib
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

BENCH_MODULES = ["bench.foundation", "bench.alerts", "bench.panel", "bench.guards", "bench.api", "bench.explain",
                 "bench.sim", "bench.auth"]


@dataclass(frozen=True)
class BenchResult:
    name: str
    value: float
    unit: str
    baseline: str          # what the value is compared with, measured in the same run
    baseline_value: float
    higher_is_better: bool
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """How many times better than the baseline (> 1 means ahead)."""
        if self.higher_is_better:
            return self.value / self.baseline_value if self.baseline_value else float("inf")
        return self.baseline_value / self.value if self.value else float("inf")

    def as_json(self) -> dict:
        data = asdict(self)
        data["ratio"] = round(self.ratio, 3)
        return data


@dataclass(frozen=True)
class BenchContext:
    """What a benchmark may use: a scratch folder, the PostgreSQL URL if one is up, a size factor."""

    workdir: str
    postgres_url: str | None = None
    quick: bool = False  # smaller sizes, for the test that checks the harness


BenchFn = Callable[[BenchContext], list[BenchResult]]
REGISTRY: dict[str, BenchFn] = {}


def benchmark(name: str) -> Callable[[BenchFn], BenchFn]:
    def register(fn: BenchFn) -> BenchFn:
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        REGISTRY[name] = fn
        return fn
    return register


def load_all() -> dict[str, BenchFn]:
    for module in BENCH_MODULES:
        importlib.import_module(module)
    return REGISTRY


def run(names: list[str], ctx: BenchContext) -> list[BenchResult]:
    registry = load_all()
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise KeyError(f"unknown benchmark(s) {unknown}; known: {sorted(registry)}")
    results: list[BenchResult] = []
    for name in names or sorted(registry):
        results.extend(registry[name](ctx))
    return results


def machine() -> str:
    import os
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of `repeat` calls, seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
