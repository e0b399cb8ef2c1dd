"""Ingest never half-stores (issue 16): files with bad bytes, oversized fields or a doubled header column;
NaN deep in a row; a crash in the middle of a keyed POST; a rerun of the same file; rows naming what the
catalogue does not know; a slot twice in a batch; a row dated in the future. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from api.app import create_app
from api.server import serve_in_thread
from app.current_policy import current_policy
from app.ingest import Kind, catalogue, ingest_file, ingest_frame
from app.tokens import Tokens
from cli.main import main
from control.clock import ManualClock
from control.domain import InvalidValue
from store import repo
from tests.api_support import CAMPAIGNS, NOW, count, decision_rows, frame, make_store, seeded_store

ROOT = Path(__file__).resolve().parents[1]


def _csv(path: Path, rows: list[dict]) -> tuple[str, list[str]]:
    table = pd.DataFrame(rows)
    table["features"] = [json.dumps(f) for f in table["features"]]
    header, *lines = table.to_csv(index=False).splitlines()
    path.write_text(header + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return header, lines


def _big_csv(path: Path, n: int) -> None:
    ids = np.arange(n)
    pd.DataFrame({
        "campaign_id": np.asarray(CAMPAIGNS, dtype=object)[ids % 3], "audience_package": "parenting",
        "bucket_ts": NOW - 60 * (ids // 3), "model_version": "m1", "bid": 1.25, "budget_share": 0.01,
        "audience_on": True, "pred_ctr": 0.02, "pred_cvr": 0.03, "pred_value": 2.75, "pred_roi": 2.2,
        "decided_reason": "model decided this slot because the value per click was high enough",
    }).to_csv(path, index=False)


@pytest.mark.slow
def test_a_bad_byte_deep_in_a_big_csv_is_one_quarantined_line_and_a_rerun_stores_nothing_twice(tmp_path):
    """Issue 16: one bad UTF-8 byte deep in a 40 MB CSV stopped the import after 104,044 rows were stored;
    a rerun stored them twice."""
    engine = make_store(tmp_path)
    path, n = tmp_path / "big.csv", 120_000
    _big_csv(path, n)
    data = path.read_bytes().split(b"\n")
    data[100_000] = data[100_000].replace(b",m1,", b",m\xff1,")  # data row 100,000 (the header is line 0)
    path.write_bytes(b"\n".join(data))
    report = ingest_file(engine, Kind.DECISION, path, now_ts=NOW, budget_bytes=16 << 20)
    assert (report.rows, report.accepted, report.refused) == (n, n - 1, 1)
    [bad] = report.first_refusals
    assert (bad.row_index, bad.field, bad.reason) == (99_999, "_line", "not valid UTF-8 (byte 25 of the line)")
    assert "m\\xff1" in bad.value and report.chunks > 1
    again = ingest_file(engine, Kind.DECISION, path, now_ts=NOW + 60, budget_bytes=16 << 20)
    assert (again.rows, again.accepted, again.skipped) == (0, 0, n)
    assert count(engine, "decisions") == n - 1 and count(engine, "quarantine") == 1


def test_an_interrupted_file_resumes_after_its_last_stored_chunk(tmp_path):
    engine = make_store(tmp_path)
    path = tmp_path / "day.jsonl"
    rows = decision_rows(3000)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")

    def crash_after_two_chunks(report):
        if report.chunks == 2:
            raise KeyboardInterrupt  # the machine goes down between chunks

    with pytest.raises(KeyboardInterrupt):
        ingest_file(engine, Kind.DECISION, path, now_ts=NOW, budget_bytes=1 << 20, progress=crash_after_two_chunks)
    stored = count(engine, "decisions")
    assert 0 < stored < 3000
    report = ingest_file(engine, Kind.DECISION, path, now_ts=NOW, budget_bytes=2 << 20)  # another budget, too
    assert report.skipped == stored and report.accepted == 3000 - stored
    assert count(engine, "decisions") == 3000
    with engine.connect() as conn:
        slots = conn.exec_driver_sql("SELECT COUNT(DISTINCT campaign_id || audience_package || bucket_ts) "
                                     "FROM decisions").scalar()
    assert slots == 3000  # nothing stored twice


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_field_longer_than_a_chunk_is_one_quarantined_line(tmp_path, suffix):
    """Issue 16: a field larger than the read block stopped the file."""
    engine = make_store(tmp_path)
    rows = decision_rows(30)
    rows[12]["decided_reason"] = "x" * 300_000  # over the chunk's share of a 1 MiB budget
    path = tmp_path / f"day{suffix}"
    if suffix == ".csv":
        _csv(path, rows)
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    report = ingest_file(engine, Kind.DECISION, path, now_ts=NOW, budget_bytes=1 << 20)
    assert (report.rows, report.accepted, report.refused) == (30, 29, 1)
    [long] = report.first_refusals
    assert long.row_index == 12 and long.field == "_line" and long.reason.startswith("line longer than")
    assert len(long.value) <= 1000 and count(engine, "decisions") == 29


def test_a_header_naming_a_column_twice_refuses_the_file(tmp_path, monkeypatch, capsys):
    """Issue 16: a duplicated header column ended in a traceback."""
    engine = make_store(tmp_path)
    path = tmp_path / "day.csv"
    header, lines = _csv(path, decision_rows(5))
    path.write_text(header + ",bid\n" + "\n".join(line + ",9.9" for line in lines) + "\n", encoding="utf-8")
    with pytest.raises(InvalidValue, match="header='bid'.*appears twice"):
        ingest_file(engine, Kind.DECISION, path, now_ts=NOW, budget_bytes=1 << 20)
    monkeypatch.setenv("BIDLENS_DATA_DIR", str(tmp_path))
    assert main(["ingest", "decisions", str(path)]) == 2
    assert "appears twice" in capsys.readouterr().err
    assert count(engine, "decisions") == count(engine, "quarantine") == 0


def test_bad_utf8_in_json_lines_is_quarantined_not_replaced(tmp_path):
    """Issue 16: invalid UTF-8 in JSON Lines was stored as U+FFFD."""
    engine = make_store(tmp_path)
    lines = [json.dumps(r).encode() for r in decision_rows(6)]
    lines[3] = lines[3].replace(b'"m1"', b'"m\xe91"')
    path = tmp_path / "day.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = ingest_file(engine, Kind.DECISION, path, now_ts=NOW, budget_bytes=1 << 20)
    assert (report.accepted, report.refused) == (5, 1)
    assert report.first_refusals[0].row_index == 3 and "not valid UTF-8" in report.first_refusals[0].reason
    with engine.connect() as conn:
        versions = set(conn.exec_driver_sql("SELECT model_version FROM decisions").scalars())
    assert versions == {"m1"}  # no U+FFFD stored


def test_nan_anywhere_in_a_row_is_a_refused_field_not_an_error(store_url):
    """Issue 16: on PostgreSQL a NaN inside `features` failed the quarantine write after the good rows were
    committed (HTTP 500), and each retry stored them again."""
    engine = seeded_store(store_url)
    rows = decision_rows(4)
    rows[1]["features"] = {"hour": float("nan")}
    rows[2]["features"] = {"hour": {"deeper": float("-inf")}}
    accepted, refusals = ingest_frame(engine, Kind.DECISION, frame(rows), now_ts=NOW, source="t",
                                      quarantine_source="t", known_campaigns=set(CAMPAIGNS))
    assert accepted == 2 and [(r.row_index, r.field) for r in refusals] == [(1, "features"), (2, "features")]
    with engine.connect() as conn:
        kept = [json.dumps(r) for r in conn.exec_driver_sql("SELECT row FROM quarantine ORDER BY row_index").scalars()]
    assert "nan" in kept[0] and "-inf" in kept[1]  # kept, as text: JSON has neither
    engine.dispose()


@pytest.mark.postgres
def test_a_keyed_post_with_nan_in_features_on_postgres_is_stored_once(postgres_url):
    engine = seeded_store(postgres_url)
    clock = ManualClock(NOW)
    _, secret = Tokens(engine, clock).create(None, "bidder", "pg")
    body = json.dumps({"rows": decision_rows(5)}).replace('"hour": 20.0', '"hour": NaN', 1)
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json", "Idempotency-Key": "b-1"}
    with serve_in_thread(create_app(engine, clock)) as url:
        first = requests.post(f"{url}/v1/decisions", data=body, headers=headers, timeout=30)
        again = requests.post(f"{url}/v1/decisions", data=body, headers=headers, timeout=30)
    assert first.status_code == again.status_code == 207
    assert again.headers.get("Idempotent-Replayed") == "true" and first.json() == again.json()
    assert count(engine, "decisions") == 4 and count(engine, "quarantine") == 1
    engine.dispose()


def test_refused_and_accepted_rows_commit_together(tmp_path, monkeypatch):
    engine = make_store(tmp_path)
    rows = decision_rows(5)
    rows[0]["bid"] = -1.0

    def broken(*_args, **_kwargs):
        raise OSError("disk full")  # the quarantine write fails ...

    monkeypatch.setattr(repo, "write_quarantine", broken)
    with pytest.raises(OSError):
        ingest_frame(engine, Kind.DECISION, frame(rows), now_ts=NOW, source="t", quarantine_source="t",
                     known_campaigns=set(CAMPAIGNS))
    assert count(engine, "decisions") == 0  # ... and the good rows are not stored without their refusals


_SLOW_SERVER = """
import sys, time
from api.app import create_app
from control.clock import ManualClock
from store.engine import open_store
import uvicorn

def slow_enrich(rows):
    print("in the middle", flush=True)
    time.sleep(60)  # killed here
    return rows

engine = open_store(sys.argv[1])
uvicorn.run(create_app(engine, ManualClock(int(sys.argv[3])), enrich=slow_enrich), host="127.0.0.1",
            port=int(sys.argv[2]), log_level="warning")
"""


def test_a_crash_in_the_middle_of_a_keyed_post_leaves_no_pending_key(tmp_path):
    """Issue 16: a crash in the middle of a keyed POST left the key "pending" forever (every retry 409)."""
    import socket
    import threading

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = make_store(tmp_path)
    _, secret = Tokens(engine, ManualClock(NOW)).create(None, "bidder", "crash")
    server = subprocess.Popen([sys.executable, "-c", _SLOW_SERVER, str(engine.url), str(port), str(NOW)],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)

    killed = threading.Event()

    def kill_in_the_middle() -> None:  # SIGKILL: no cleanup of any kind
        for line in server.stdout:
            if "in the middle" in line:
                os.kill(server.pid, signal.SIGKILL)
                killed.set()
                return

    threading.Thread(target=kill_in_the_middle, daemon=True).start()
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json", "Idempotency-Key": "k-1"}
    body = json.dumps({"rows": decision_rows(9)})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
                break
            except requests.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline, "the API server did not start"
                time.sleep(0.2)  # a real server process starting; nothing to inject
        with pytest.raises(requests.ConnectionError):
            requests.post(f"http://127.0.0.1:{port}/v1/decisions", data=body, headers=headers, timeout=30)
    finally:
        server.kill()
        server.wait(timeout=10)
    assert killed.is_set()  # in the middle of the request, not before it
    assert count(engine, "decisions") == 0 and count(engine, "idempotency_keys") == 0
    with serve_in_thread(create_app(engine, ManualClock(NOW))) as base:  # the server, restarted
        retry = requests.post(f"{base}/v1/decisions", data=body, headers=headers, timeout=30)
        assert retry.status_code == 200 and retry.json()["accepted"] == 9
        # A claim left pending by a server of before this rule is taken over, not a 409 forever.
        with engine.begin() as conn:
            token_id = conn.exec_driver_sql("SELECT MAX(token_id) FROM api_tokens").scalar()
            conn.exec_driver_sql("INSERT INTO idempotency_keys (key, created_ts, response) VALUES (?, ?, ?)",
                                 (f"{token_id}:decision:k-2", NOW, json.dumps({"state": "pending",
                                                                              "request_hash": "x"})))
        left = requests.post(f"{base}/v1/decisions", data=json.dumps({"rows": decision_rows(9, bucket_ts=NOW)}),
                             headers={**headers, "Idempotency-Key": "k-2"}, timeout=30)
        assert left.status_code == 200
    assert count(engine, "decisions") == 18


def test_rows_must_name_campaigns_and_packages_the_catalogue_knows(tmp_path, monkeypatch, capsys):
    """Issue 16: audience packages were not checked against the catalogue (bidi-control and zero-width
    junk was stored)."""
    engine = make_store(tmp_path)
    rows = decision_rows(6)
    rows[1]["audience_package"] = "pets"                       # not in the catalogue
    rows[2]["audience_package"] = "parenting\u202e"            # a bidi override after a real code
    rows[3]["audience_package"] = "pa\u200brenting"            # a zero-width space inside one
    rows[4]["model_version"] = "m1\u2066"                      # junk in free text
    known = catalogue(engine)
    accepted, refusals = ingest_frame(engine, Kind.DECISION, frame(rows), now_ts=NOW, source="t",
                                      quarantine_source="t", known_campaigns=known.campaigns,
                                      known_packages=known.packages)
    assert accepted == 2
    assert [(r.row_index, r.field, r.reason.split(" (")[0]) for r in refusals] == [
        (1, "audience_package", "unknown audience package"),
        (2, "audience_package", "must be a string of at most 64 characters"),
        (3, "audience_package", "must be a string of at most 64 characters"),
        (4, "model_version", "must be a string of at most 64 characters")]
    monkeypatch.setenv("BIDLENS_DATA_DIR", str(tmp_path))
    (tmp_path / "packages.csv").write_text("code,name_zh,name_en\npets,宠物,Pets\nbad\u200bcode,坏,Bad\n",
                                           encoding="utf-8")
    assert main(["packages", "import", str(tmp_path / "packages.csv"), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["loaded"] == 1 and result["refusals"][0]["field"] == "code"
    assert "pets" in catalogue(engine).packages


def test_a_slot_twice_in_one_batch_is_refused_with_its_reason(store_url):
    """Issue 16: duplicate slots in one batch were stored twice."""
    engine = seeded_store(store_url)
    rows = decision_rows(4)
    rows.append({**rows[2], "bid": 2.5})
    rows[0]["bid"] = -1.0  # refused: its double (row 5) stands
    rows.append({**rows[0], "bid": 0.9})
    accepted, refusals = ingest_frame(engine, Kind.DECISION, frame(rows), now_ts=NOW, source="t",
                                      quarantine_source="t", known_campaigns=set(CAMPAIGNS))
    assert accepted == 4 and [(r.row_index, r.field) for r in refusals] == [(0, "bid"), (4, "_slot")]
    assert refusals[1].value == f"campaign_id=c3, audience_package=parenting, bucket_ts={NOW - 600}"
    assert "earlier in the batch" in refusals[1].reason
    engine.dispose()


def test_one_future_row_neither_is_accepted_nor_shrinks_the_policy(store_url):
    """Issue 16: one decision row 3 hours in the future (allowed up to 24 h) shrank the served policy from
    189 slots to 1, so overrides, trips and the kill switch stopped reaching every other slot."""
    campaigns = tuple(f"k{i:02d}" for i in range(63))
    engine = seeded_store(store_url, campaigns)
    slots = decision_rows(189, bucket_ts=NOW - 60, campaigns=campaigns)
    assert len({(r["campaign_id"], r["audience_package"]) for r in slots}) == 189
    future = {**slots[5], "bucket_ts": NOW + 3 * 3600}
    accepted, refusals = ingest_frame(engine, Kind.DECISION, frame(slots + [future]), now_ts=NOW, source="t",
                                      quarantine_source="t", known_campaigns=set(campaigns))
    assert accepted == 189 and [(r.row_index, r.field) for r in refusals] == [(189, "bucket_ts")]
    assert "300 s ahead" in refusals[0].reason
    repo.write_decisions(engine, frame([future]), received_ts=NOW)  # stored anyway (an older server, a bug)
    with engine.connect() as conn:
        policy = current_policy(conn, NOW, {})
    assert len(policy) == 189 and set(policy["campaign_id"]) == set(campaigns)
    engine.dispose()
