"""The bidder API enforces the launch gate: a version not approved to serve has its decisions refused
with a clear error and quarantined, not lost, unless an admin switched the gate off; the policy names
the version that should decide each slot. A real uvicorn server over a real SQLite file."""

from __future__ import annotations

import json

import requests
from sqlalchemy import select

from api.app import store_app
from api.server import serve_in_thread
from app.launch import Launches
from app.tokens import Tokens
from control.clock import ManualClock
from control.config import Settings
from store import schema as s
from tests.api_support import NOW, count, decision_rows, make_store
from tests.launch_support import ADMIN, ENGINEER, MANAGER, add_people, gate_report, register


def post(url, secret, rows):
    return requests.post(f"{url}/v1/decisions", data=json.dumps({"rows": rows}), timeout=30,
                         headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})


def test_an_unapproved_versions_decisions_are_quarantined_until_a_manager_approves_its_launch(tmp_path):
    engine = make_store(tmp_path)
    clock = ManualClock(NOW)
    settings = Settings(data_dir=str(tmp_path))
    launches = Launches(engine, clock, settings)
    register(engine, "m1", now_ts=NOW)
    _, secret = Tokens(engine, clock).create(None, "bidder", "prod-bidder")  # the machine's, before an admin exists
    add_people(engine)
    with serve_in_thread(store_app(engine, clock, settings)) as url:
        refused = post(url, secret, decision_rows(4))
        assert refused.status_code == 207
        body = refused.json()
        assert (body["accepted"], body["refused"]) == (0, 4)
        assert {(r["field"], r["value"]) for r in body["refusals"]} == {("model_version", "m1")}
        assert "not approved to serve" in body["refusals"][0]["reason"]
        with engine.connect() as conn:
            kept = conn.execute(select(s.quarantine.c.field, s.quarantine.c.reason, s.quarantine.c.row)).all()
        assert len(kept) == 4 and kept[0].field == "model_version" and kept[0].row["bid"] > 0  # kept, not lost
        assert count(engine, "decisions") == 0

        launches.record_gate(ENGINEER, "m1", gate_report("m1"))
        request = launches.request_launch(ENGINEER, "m1", "first model under the gate")
        launches.approve_launch(MANAGER, request.launch_id, request.version)
        accepted = post(url, secret, decision_rows(4, seed=2))
        assert accepted.status_code == 200 and accepted.json()["accepted"] == 4
        policy = requests.get(f"{url}/v1/policy", headers={"Authorization": f"Bearer {secret}"}, timeout=30).json()
        assert {slot["model_version"] for slot in policy["slots"]} == {"m1"}

        other = [dict(r, model_version="m2") for r in decision_rows(2, seed=3)]
        assert post(url, secret, other).json()["refused"] == 2
        launches.set_gate(ADMIN, False, "the bidder migrates to m2 this week; gate off meanwhile")
        assert post(url, secret, other).json()["accepted"] == 2
    assert count(engine, "quarantine") == 6 and count(engine, "decisions") == 6
