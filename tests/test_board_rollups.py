"""The live board's rollups (store.schema.board_rollups / board_series) equal the raw rows' sums, whoever
wrote them: the store's writers, the API's and the file's ingest, the simulator's live runner; on SQLite and
PostgreSQL; with late conversions, across five-minute and day boundaries, after a new promotion day, and
for rows written before migration 0006."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from api_support import CAMPAIGNS, NOW, PACKAGES, decision_rows, seeded_store

from app import ingest
from control.clock import day_start
from store import repo
from store import schema as s

KEYS = ["period_s", "period_ts", "campaign_id"]


def _table(conn, name: str) -> pd.DataFrame:
    return pd.DataFrame(conn.execute(s.metadata.tables[name].select()).mappings().all())


def _expected(conn) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rollups summed from scratch out of the raw decision and outcome rows."""
    decisions = _table(conn, "decisions")
    outcomes = _table(conn, "outcomes")
    parts = []
    if len(decisions):
        parts.append(pd.DataFrame({"campaign_id": decisions["campaign_id"], "bucket_ts": decisions["bucket_ts"],
                                   **repo.decision_sums(decisions)}))
    if len(outcomes):
        parts.append(outcomes[["campaign_id", "bucket_ts", *s.ROLLUP_OUTCOME_SUMS]].astype(
            {c: float for c in s.ROLLUP_OUTCOME_SUMS}))
    rows = pd.concat(parts, ignore_index=True).reindex(columns=["campaign_id", "bucket_ts", *s.ROLLUP_SUMS])
    rows[list(s.ROLLUP_SUMS)] = rows[list(s.ROLLUP_SUMS)].fillna(0.0)
    bucket = rows["bucket_ts"].to_numpy(np.int64)
    rollups = pd.concat([
        rows.assign(period_s=s.ROLLUP_PERIOD_S, period_ts=bucket - bucket % s.ROLLUP_PERIOD_S),
        rows.assign(period_s=s.ROLLUP_DAY, period_ts=day_start(bucket)),
    ]).groupby(KEYS)[list(s.ROLLUP_SUMS)].sum()
    return rollups, rows.groupby("bucket_ts")[list(s.ROLLUP_SUMS)].sum()


def assert_rollups_are_the_raw_sums(engine) -> None:
    with engine.connect() as conn:
        rollups, series = _expected(conn)
        kept = _table(conn, "board_rollups").set_index(KEYS).sort_index()
        kept_series = _table(conn, "board_series").set_index("bucket_ts").sort_index()
    pd.testing.assert_frame_equal(kept[list(s.ROLLUP_SUMS)], rollups.sort_index(), check_exact=False, rtol=1e-9,
                                  check_dtype=False, check_index_type=False)
    pd.testing.assert_frame_equal(kept_series[list(s.ROLLUP_SUMS)], series.sort_index(), check_exact=False,
                                  rtol=1e-9, check_dtype=False, check_index_type=False)


def _decisions(bucket_ts: int, seed: int) -> pd.DataFrame:
    frame = pd.DataFrame(decision_rows(18, bucket_ts=bucket_ts, seed=seed))
    rng = np.random.default_rng(seed)
    return frame.assign(audience_on=rng.random(18) > 0.3,
                        pool_pred_roi=np.where(rng.random(18) > 0.5, rng.uniform(1, 3, 18), np.nan),
                        decided_by=rng.choice(["model", "rule_pool", "override"], 18),
                        decided_reason="test").drop(columns="features")


def _outcomes(bucket_ts: int, known_ts: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"campaign_id": np.repeat(CAMPAIGNS, 3), "audience_package": np.tile(PACKAGES, 3),
                         "bucket_ts": bucket_ts, "known_ts": known_ts, "impressions": rng.integers(0, 50, 9),
                         "clicks": rng.integers(0, 5, 9), "spend": rng.uniform(0, 9, 9), "orders": rng.integers(0, 2, 9),
                         "gmv": rng.uniform(0, 300, 9)})


def test_every_writer_keeps_the_rollups_equal_to_the_raw_sums(store_url, tmp_path):
    engine = seeded_store(store_url)
    day_end = day_start(NOW) + 86_400 - 60  # 23:59 of the promotion day: its outcomes arrive the next day
    buckets = [NOW + 60, NOW + 120, NOW + 300, day_end]
    for k, bucket in enumerate(buckets):  # the store's writers, as the simulator and the demo use them
        repo.write_decisions(engine, _decisions(bucket, k), received_ts=bucket + 1)
        repo.write_outcomes(engine, _outcomes(bucket, bucket + 60, k))
    # Late conversions: into an earlier bucket of the same five minutes, of another, and of the day before.
    repo.write_outcomes(engine, _outcomes(NOW + 60, NOW + 900, 10))
    repo.write_outcomes(engine, _outcomes(NOW + 300, NOW + 3600, 11))
    repo.write_outcomes(engine, _outcomes(day_end, day_end + 600, 12))
    assert_rollups_are_the_raw_sums(engine)

    # The bidder API's path and a file, through app.ingest (validation, then the same writers).
    rows = decision_rows(9, bucket_ts=NOW + 180, seed=5)
    accepted, refused = ingest.ingest_frame(engine, ingest.Kind.DECISION, ingest.records_frame(rows, ingest.Kind.DECISION),
                                            now_ts=NOW + 240, source="api", quarantine_source="api",
                                            known_campaigns=set(CAMPAIGNS))
    assert (accepted, refused) == (9, [])
    path = tmp_path / "outcomes.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _outcomes(NOW + 180, NOW + 240, 6).to_dict("records")))
    report = ingest.ingest_file(engine, ingest.Kind.OUTCOME, path, now_ts=NOW + 300, budget_bytes=1 << 20)
    assert report.accepted == 9
    assert_rollups_are_the_raw_sums(engine)

    with engine.begin() as conn:  # a new promotion day starts from nothing
        repo.clear_promotion_day(conn)
    with engine.connect() as conn:
        assert _table(conn, "board_rollups").empty and _table(conn, "board_series").empty
    repo.write_decisions(engine, _decisions(NOW + 86_400, 7), received_ts=NOW + 86_401)
    assert_rollups_are_the_raw_sums(engine)


def test_the_live_simulator_keeps_the_rollups(sqlite_url):
    import sim_support

    from control.config import Settings
    from sim.catalog import DAY_START_TS
    from sim.live import run_live
    from store.engine import open_store

    engine = open_store(sqlite_url)
    run_live(engine, Settings(data_dir=sim_support._DATA_DIR), clock=lambda: DAY_START_TS + 10**6, max_buckets=7)
    assert_rollups_are_the_raw_sums(engine)


def test_migration_0006_sums_the_rows_written_before_it(tmp_path):
    from alembic import command
    from sqlalchemy import create_engine, insert

    from store.migrate import alembic_config, upgrade

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    command.upgrade(alembic_config(engine), "0003_decision_slot_index")
    with engine.begin() as conn:  # rows as a store before 0006 holds them, without any rollup
        for k, bucket in enumerate((NOW + 60, NOW + 360, day_start(NOW) - 60)):
            frame = _decisions(bucket, k).assign(model_bid=lambda f: f["bid"], source="sim", received_ts=bucket)
            conn.execute(insert(s.decisions), frame[[c for c in repo.DECISION_WRITE_COLUMNS if c in frame]]
                         .replace({np.nan: None}).to_dict("records"))
            conn.execute(insert(s.outcomes), _outcomes(bucket, bucket + 60, k).assign(source="sim").to_dict("records"))
    upgrade(engine)
    assert_rollups_are_the_raw_sums(engine)
