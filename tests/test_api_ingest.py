"""File ingestion: CSV, JSON Lines, Parquet, streamed in chunks; every row stored or quarantined."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from app.ingest import Kind, ingest_file
from cli.main import main
from tests.api_support import (
    CAMPAIGNS,
    NOW,
    count,
    decision_rows,
    make_store,
    outcome_rows,
    without_launch_gate,
)


def _csv_lines(rows: list[dict]) -> tuple[str, list[str]]:
    frame = pd.DataFrame(rows)
    frame["features"] = [json.dumps(f) for f in frame["features"]]
    text = frame.to_csv(index=False)
    header, *lines = text.splitlines()
    return header, lines


def test_a_csv_with_bad_rows_mixed_in_loses_nothing(tmp_path):
    engine = make_store(tmp_path)
    header, lines = _csv_lines(decision_rows(40, bucket_ts=NOW - 300))
    cols = header.split(",")

    def broken(i: int, column: str, value: str) -> str:
        cells = lines[i].split(",")
        cells[cols.index(column)] = value
        return ",".join(cells)

    lines[3] = broken(3, "bid", "NaN")
    lines[7] = broken(7, "bid", "-0.5")
    lines[11] = broken(11, "campaign_id", "ghost")
    lines[13] = broken(13, "bucket_ts", str(NOW + 10 * 86400))
    lines[17] = broken(17, "pred_roi", "lots")
    lines[19] = broken(19, "audience_on", "maybe")
    lines[23] = "c1,parenting,1"                 # malformed: too few fields
    lines[29] = broken(29, "bid", "")            # missing
    lines[31] = broken(31, "model_version", "m\x00")  # NUL: no store keeps it
    path = tmp_path / "day.csv"
    path.write_text(header + "\n" + "\n".join(lines) + "\n")

    report = ingest_file(engine, Kind.DECISION, path, now_ts=NOW, budget_bytes=64 << 20)

    assert (report.rows, report.accepted, report.refused) == (40, 31, 9)
    assert count(engine, "decisions") == 31
    assert count(engine, "quarantine", "WHERE kind = 'decision'") == 9
    refused = sorted((r.row_index, r.field) for r in report.first_refusals)
    assert refused == [(3, "bid"), (7, "bid"), (11, "campaign_id"), (13, "bucket_ts"), (17, "pred_roi"),
                       (19, "audience_on"), (23, "_line"), (29, "bid"), (31, "model_version")]
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT bid, bucket_ts, audience_on, features FROM decisions LIMIT 1").one()
        line = conn.exec_driver_sql("SELECT value FROM quarantine WHERE field = '_line'").scalar()
    assert isinstance(stored.bucket_ts, int) and stored.audience_on in (0, 1, True)
    assert json.loads(stored.features) == {"hour": 20.0, "price": 99.0}
    assert line == "c1,parenting,1"
    assert report.as_json()["quarantine"]["source"].endswith("day.csv")


def test_json_lines_with_a_broken_line(tmp_path):
    engine = make_store(tmp_path)
    rows = outcome_rows(10)
    rows[4]["known_ts"] = rows[4]["bucket_ts"] - 60
    lines = [json.dumps(r) for r in rows]
    lines.insert(6, "{truncated")
    lines.insert(8, "")
    path = tmp_path / "outcomes.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = ingest_file(engine, Kind.OUTCOME, path, now_ts=NOW, budget_bytes=64 << 20)
    assert (report.rows, report.accepted, report.refused) == (11, 9, 2)
    assert sorted((r.row_index, r.field) for r in report.first_refusals) == [(4, "known_ts"), (6, "_line")]
    assert count(engine, "outcomes") == 9 and count(engine, "quarantine") == 2


def test_a_parquet_file(tmp_path):
    engine = make_store(tmp_path)
    rows = decision_rows(500)
    rows[100]["bid"] = float("inf")
    rows[200]["campaign_id"] = "ghost"
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet", row_group_size=128)
    report = ingest_file(engine, Kind.DECISION, tmp_path / "d.parquet", now_ts=NOW, budget_bytes=64 << 20)
    assert (report.rows, report.accepted, report.refused) == (500, 498, 2)
    assert sorted(r.row_index for r in report.first_refusals) == [100, 200]
    assert count(engine, "decisions") == 498


def _big_csv(path, n: int) -> None:
    rng = np.random.default_rng(3)
    bids = rng.uniform(0.1, 3, n).round(4)
    bids[::1000] = -1.0  # one bad row per thousand
    frame = pd.DataFrame({
        "campaign_id": np.asarray(CAMPAIGNS, dtype=object)[np.arange(n) % 3], "audience_package": "parenting",
        "bucket_ts": NOW - 60 * (np.arange(n) // 3), "model_version": "m1", "bid": bids, "budget_share": 0.01,
        "audience_on": True, "pred_ctr": 0.02, "pred_cvr": 0.03, "pred_value": 2.0, "pred_roi": 2.2,
        "decided_reason": "model decided this slot because the value per click was high enough",
    })
    frame.to_csv(path, index=False)


@pytest.mark.slow
def test_a_file_bigger_than_the_memory_budget_streams_in_chunks(tmp_path):
    engine = make_store(tmp_path)
    path = tmp_path / "big.csv"
    n = 50_000
    _big_csv(path, n)
    budget = 2 << 20
    assert path.stat().st_size > 3 * budget
    tracemalloc.start()
    try:
        report = ingest_file(engine, Kind.DECISION, path, now_ts=NOW, budget_bytes=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (report.rows, report.accepted, report.refused) == (n, n - n // 1000, n // 1000)
    assert count(engine, "decisions") + count(engine, "quarantine") == n
    assert report.chunks > 4
    assert peak < 2 * budget, f"peak {peak / 2**20:.1f} MiB for a {budget / 2**20:.0f} MiB budget"


def test_the_cli_prints_a_json_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BIDLENS_DATA_DIR", str(tmp_path))
    engine = make_store(tmp_path)
    rows = decision_rows(6)
    rows[0]["bid"] = 2000.0
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    # The launch gate is on: model m1 was never approved, so its decisions are quarantined, not lost.
    assert main(["ingest", "decisions", str(tmp_path / "d.parquet"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows"], summary["accepted"], summary["refused"]) == (6, 0, 6)
    assert [r["field"] for r in summary["first_refusals"]] == ["bid"] + ["model_version"] * 5
    assert "not approved to serve" in summary["first_refusals"][1]["reason"]
    without_launch_gate(engine)
    # The same file again stores nothing twice (its progress is kept by SHA-256): the next file is another.
    again = decision_rows(6, seed=2)
    again[0]["bid"] = 2000.0
    pd.DataFrame(again).to_parquet(tmp_path / "d2.parquet")
    assert main(["ingest", "decisions", str(tmp_path / "d2.parquet"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows"], summary["accepted"], summary["refused"]) == (6, 5, 1)
    assert summary["quarantine"]["table"] == "quarantine"
    assert summary["first_refusals"][0]["field"] == "bid"
    assert main(["ingest", "decisions", str(tmp_path / "d.xlsx")]) == 2


def test_the_campaign_catalogue_loads_from_a_file_and_names_bad_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BIDLENS_DATA_DIR", str(tmp_path))
    engine = make_store(tmp_path)
    (tmp_path / "campaigns.csv").write_text(
        "campaign_id,name,category,daily_budget,budget_cap,avg_order_value,gross_margin,target_roi\n"
        "k1,Toys 818,toys,5000,8000,120,0.3,2.3\n"
        "k2,Prams,baby,lots,8000,900,0.25,\n"
        "k3,Tents,outdoor,3000,2000,400,0.3,2\n"
        "c1,Renamed,toys,1000,3000,120,0.3,\n")
    assert main(["campaigns", "import", str(tmp_path / "campaigns.csv"), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert (result["loaded"], result["refused"]) == (2, 2)
    assert [(r["index"], r["field"]) for r in result["refusals"]] == [(1, "daily_budget"), (2, "budget_cap")]
    with engine.connect() as conn:
        campaigns = conn.exec_driver_sql("SELECT campaign_id, name, target_roi FROM campaigns").all()
        audit = conn.exec_driver_sql("SELECT actor, action FROM audit_log").all()
    by_id = {c.campaign_id: c for c in campaigns}
    assert by_id["k1"].target_roi == 2.3 and by_id["c1"].name == "Renamed" and by_id["c1"].target_roi == 2.0
    assert "k2" not in by_id and "k3" not in by_id
    assert ("system", "campaigns.import") in audit
