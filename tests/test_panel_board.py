"""The panel's read models in the core (app.board, app.explorer) against plain SQL on a real store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from panel_support import seeded_control

from app import board, explorer
from bench.panel_seed import BID_FORMULA, _bucket_decisions, _outcomes
from control.clock import day_start
from control.domain import DecidedBy, OverrideStatus
from store import repo


@pytest.fixture
def store(tmp_path):
    return seeded_control(tmp_path)


def _view(control, window_s=3600):
    with control.engine.connect() as conn:
        newest = board.latest_bucket(conn)
        return board.build_board(conn, repo.load_campaigns(conn), board.bucket_slots(conn, newest), newest,
                                 control.clock(), window_s)


def _sql(control, query: str, **params) -> pd.DataFrame:
    with control.engine.connect() as conn:
        return pd.read_sql_query(query, conn.connection.driver_connection, params=params)


def test_kpis_and_campaign_figures_match_plain_sql(store):
    control, seeded, _ = store
    view = _view(control)
    day = _sql(control, "SELECT campaign_id, SUM(spend) spend, SUM(gmv) gmv FROM outcomes "
                        "WHERE bucket_ts >= :d GROUP BY campaign_id", d=day_start(seeded.last_bucket))
    assert view.kpis.spend == pytest.approx(day["spend"].sum())
    assert view.kpis.gmv == pytest.approx(day["gmv"].sum())
    assert view.kpis.profit == pytest.approx((day["gmv"] * 0.3).sum() - day["spend"].sum())
    assert view.kpis.realised_roi == pytest.approx(day["gmv"].sum() / day["spend"].sum())
    window = _sql(control, "SELECT campaign_id, SUM(gmv) / SUM(spend) roi FROM outcomes WHERE bucket_ts >= :s "
                           "GROUP BY campaign_id", s=seeded.last_bucket - 3600).set_index("campaign_id")
    table = view.campaigns.set_index("campaign_id")
    assert np.allclose(table["realised_roi"], window["roi"].reindex(table.index))
    pace = day.set_index("campaign_id")["spend"] / table["daily_budget"]
    assert np.allclose(table["pace"], pace.reindex(table.index))
    assert view.kpis.active_trips == len(seeded.tripped)
    assert (table["packages"] == len(seeded.packages)).all()


def test_a_new_bucket_and_a_late_conversion_are_on_the_next_board(store):
    control, seeded, _ = store
    before = _view(control, window_s=86_400)
    rng = np.random.default_rng(3)
    bucket = seeded.last_bucket + seeded.bucket_s
    frame, _ = _bucket_decisions(rng, seeded.campaigns, seeded.packages, bucket, [])
    repo.write_decisions(control.engine, frame, received_ts=bucket + 1)
    late = _outcomes(rng, frame, bucket).assign(bucket_ts=seeded.first_bucket, known_ts=bucket)  # a late conversion
    repo.write_outcomes(control.engine, late)
    after = _view(control, window_s=86_400)
    assert after.latest_bucket == bucket
    assert after.kpis.spend == pytest.approx(before.kpis.spend + late["spend"].sum())
    first = _sql(control, "SELECT SUM(spend) s, SUM(gmv) g FROM outcomes WHERE bucket_ts = :b", b=seeded.first_bucket)
    realised = after.series[after.series["series"] == "realised"].set_index("bucket_ts")["roi"]
    assert realised.loc[seeded.first_bucket] == pytest.approx(first["g"][0] / first["s"][0])


def test_who_decides_follows_guards_overrides_their_expiry_and_the_kill_switch(store):
    control, seeded, clock = store
    table = _view(control).campaigns.set_index("campaign_id")
    assert (table.loc[seeded.tripped, "decided_by"] == DecidedBy.RULE_POOL.value).all()
    assert table.loc[seeded.tripped[0], "guard"] == "tripped"
    row = table.loc[seeded.campaigns[-1]]
    [override] = control.overrides([OverrideStatus.APPROVED])
    assert (row["decided_by"], row["override_by"], row["override_until"]) == (
        DecidedBy.OVERRIDE.value, "operator → manager #1", override.expires_ts)
    assert table.loc[seeded.campaigns[1], "decided_by"] == DecidedBy.MODEL.value

    manager = next(u for u in control.users() if u.username == "manager")
    control.set_kill_switch(manager, True, "test")
    table = _view(control).campaigns.set_index("campaign_id")
    assert set(table["decided_by"].drop(seeded.campaigns[-1])) == {DecidedBy.RULE_POOL.value}
    assert table.loc[seeded.campaigns[-1], "decided_by"] == DecidedBy.OVERRIDE.value

    clock.advance(override.expires_ts - clock())
    table = _view(control).campaigns.set_index("campaign_id")
    assert table.loc[seeded.campaigns[-1], "decided_by"] == DecidedBy.RULE_POOL.value
    assert table.loc[seeded.campaigns[-1], "override_by"] == ""


def test_series_shadow_and_trip_periods(store):
    control, seeded, _ = store
    view = _view(control, window_s=24 * 300)
    assert set(view.series["series"]) == {"predicted", "realised", "rule_pool_predicted"}
    predicted = view.series[view.series["series"] == "predicted"].set_index("bucket_ts")["roi"]
    sql = _sql(control, "SELECT bucket_ts, AVG(pred_roi) r FROM decisions GROUP BY bucket_ts").set_index("bucket_ts")
    assert np.allclose(predicted, sql["r"].reindex(predicted.index))
    assert len(view.shadow) == len(seeded.campaigns) and view.shadow["pool_better"].all()  # the seed's pool wins
    assert view.trips[["campaign_id", "end"]].values.tolist() == [[seeded.tripped[0], seeded.last_bucket]]


def test_explorer_queries_find_the_slot_decision_at_a_time(store):
    control, seeded, _ = store
    c, p = seeded.tripped[0], seeded.packages[0]
    with control.engine.connect() as conn:
        buckets = explorer.slot_buckets(conn, c, p)
        at_last = explorer.find_decision_id(conn, c, p, seeded.last_bucket)
        between = explorer.find_decision_id(conn, c, p, seeded.last_bucket - 1)
        before_any = explorer.find_decision_id(conn, c, p, seeded.first_bucket - 1)
        version, meta, formula = explorer.decision_model(conn, at_last)
    assert buckets == sorted(buckets, reverse=True) and buckets[0] == seeded.last_bucket
    assert len(buckets) == (seeded.last_bucket - seeded.first_bucket) // seeded.bucket_s + 1
    rows = _sql(control, "SELECT decision_id, bucket_ts FROM decisions WHERE campaign_id = :c AND "
                         "audience_package = :p", c=c, p=p).set_index("bucket_ts")["decision_id"]
    assert at_last == rows[seeded.last_bucket]
    assert between == rows[seeded.last_bucket - seeded.bucket_s]
    assert before_any is None
    assert version == meta["model_version"] and len(meta["meta"]["features"]) == 8
    assert formula == BID_FORMULA
