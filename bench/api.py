"""Bidder API benchmarks: ingest over HTTP and from Parquet beside the store's raw batch write;
GET /v1/policy latency (full and 304) for 1,000 campaigns x 12 audience packages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import requests

from api.app import ApiConfig, create_app
from api.server import serve_in_thread
from app.current_policy import current_policy
from app.ingest import Kind, ingest_file
from app.tokens import Tokens
from bench.foundation import PACKAGES, synthetic_decisions
from bench.registry import BenchContext, BenchResult, benchmark
from control.clock import ManualClock
from control.domain import AudiencePackage, Campaign
from store import repo
from store.engine import open_store

START = 1_786_982_400
CLOCK = ManualClock(START + 86_400)  # the end of the promotion day: every synthetic bucket is past


def _store(path: Path, campaigns: int = 1000):
    engine = open_store(f"sqlite:///{path}")
    with engine.begin() as conn:
        repo.upsert_campaigns(conn, [Campaign(f"c{i:05d}", f"c{i}", "toys", 1000.0, 3000.0, 120.0, 0.3)
                                     for i in range(campaigns)])
        repo.upsert_audience_packages(conn, [AudiencePackage(p, p, p) for p in PACKAGES])
    return engine


def _rows(n: int):
    """n decisions for n different slots (a batch refuses a slot twice)."""
    frame = synthetic_decisions(n + n // 50, np.random.default_rng(11))
    frame = frame.drop_duplicates(["campaign_id", "audience_package", "bucket_ts"]).head(n).reset_index(drop=True)
    return frame, frame.to_dict("records")


def _percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1000, 3)


@benchmark("api.ingest")
def bench_ingest(ctx: BenchContext) -> list[BenchResult]:
    n = 5_000 if ctx.quick else 100_000
    work = Path(ctx.workdir)
    frame, records = _rows(n)

    raw = _store(work / "api-raw.db")
    start = time.perf_counter()
    for i in range(0, n, 1000):
        repo.write_decisions(raw, frame.iloc[i:i + 1000], received_ts=START, source="bench")
    raw_rate = n / (time.perf_counter() - start)

    engine = _store(work / "api-http.db")
    _, secret = Tokens(engine, CLOCK).create(None, "bidder", "bench")
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
    with serve_in_thread(create_app(engine, CLOCK, config=ApiConfig())) as url:
        start = time.perf_counter()
        for i in range(0, n, 1000):
            r = session.post(f"{url}/v1/decisions", data=json.dumps({"rows": records[i:i + 1000]}),
                             headers={"Idempotency-Key": f"bench-{i}"})
            assert r.status_code == 200 and r.json()["accepted"] == len(records[i:i + 1000]), r.text[:300]
        http_rate = n / (time.perf_counter() - start)

    parquet = work / "decisions.parquet"
    frame.to_parquet(parquet, row_group_size=50_000)
    file_engine = _store(work / "api-file.db")
    start = time.perf_counter()
    report = ingest_file(file_engine, Kind.DECISION, parquet, now_ts=CLOCK(), budget_bytes=256 << 20)
    file_rate = n / (time.perf_counter() - start)
    assert report.accepted == n

    baseline = "repo.write_decisions, 1,000-row batches"
    return [
        BenchResult("api.ingest.http", round(http_rate), "rows/s", baseline, round(raw_rate), True,
                    notes=f"{n:,} decision rows, POST /v1/decisions in batches of 1,000 with Idempotency-Key, "
                          "validation and store; one uvicorn process, SQLite"),
        BenchResult("api.ingest.parquet", round(file_rate), "rows/s", baseline, round(raw_rate), True,
                    notes=f"{n:,} rows, bidlens ingest (streamed, 256 MiB budget), validation and store"),
    ]


@benchmark("api.policy")
def bench_policy(ctx: BenchContext) -> list[BenchResult]:
    campaigns = 100 if ctx.quick else 1000
    repeats = 20 if ctx.quick else 200
    engine = _store(Path(ctx.workdir) / "api-policy.db", campaigns)
    grid = np.array([(c, p) for c in range(campaigns) for p in range(len(PACKAGES))])
    plan = synthetic_decisions(len(grid), np.random.default_rng(5), campaigns)
    plan["campaign_id"] = [f"c{c:05d}" for c in grid[:, 0]]
    plan["audience_package"] = [PACKAGES[p] for p in grid[:, 1]]
    plan["bucket_ts"] = CLOCK() - 60  # the last minute: in the policy's window, which ends at the clock
    repo.write_decisions(engine, plan, received_ts=START, source="bench")
    _, secret = Tokens(engine, CLOCK).create(None, "reader", "bench")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"

    in_process = []
    for _ in range(max(3, repeats // 20)):
        start = time.perf_counter()
        with engine.connect() as conn:
            current_policy(conn, CLOCK(), {})
        in_process.append(time.perf_counter() - start)

    with serve_in_thread(create_app(engine, CLOCK)) as url:
        cold = []
        for i in range(max(3, repeats // 20)):
            # A new decision changes the version: the next GET resolves and serializes again.
            repo.write_decisions(engine, plan.iloc[[i]], received_ts=START, source="bench")
            start = time.perf_counter()
            r = session.get(f"{url}/v1/policy")
            cold.append(time.perf_counter() - start)
        assert r.status_code == 200 and r.json()["count"] == len(grid)
        etag = r.headers["ETag"]
        full, not_modified = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            r = session.get(f"{url}/v1/policy")
            full.append(time.perf_counter() - start)
            start = time.perf_counter()
            r304 = session.get(f"{url}/v1/policy", headers={"If-None-Match": etag})
            not_modified.append(time.perf_counter() - start)
            assert r.status_code == 200 and r304.status_code == 304
    size_kb = round(len(r.content) / 1024)
    slots = f"{campaigns:,} campaigns x 12 packages = {len(grid):,} slots"
    return [
        BenchResult("api.policy.get.p50", _percentile_ms(full, 50), "ms", "current_policy in process (p50)",
                    _percentile_ms(in_process, 50), False,
                    notes=f"{slots}; {size_kb} KiB JSON; unchanged inputs: version check + cached body",
                    extra={"p99_ms": _percentile_ms(full, 99), "changed_p50_ms": _percentile_ms(cold, 50),
                           "changed_p99_ms": _percentile_ms(cold, 99)}),
        BenchResult("api.policy.get.p99", _percentile_ms(full, 99), "ms", "current_policy in process (p50)",
                    _percentile_ms(in_process, 50), False, notes=slots),
        BenchResult("api.policy.changed.p50", _percentile_ms(cold, 50), "ms", "current_policy in process (p50)",
                    _percentile_ms(in_process, 50), False,
                    notes=f"{slots}; first GET after an input changed: resolve + serialize"),
        BenchResult("api.policy.304.p50", _percentile_ms(not_modified, 50), "ms", "full 200 GET (p50)",
                    _percentile_ms(full, 50), False,
                    notes=f"{slots}; If-None-Match with the current ETag",
                    extra={"p99_ms": _percentile_ms(not_modified, 99)}),
        BenchResult("api.policy.304.p99", _percentile_ms(not_modified, 99), "ms", "full 200 GET (p99)",
                    _percentile_ms(full, 99), False, notes=slots),
    ]
