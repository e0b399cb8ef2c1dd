"""The API's write and read paths on both stores: a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import json

import requests

from api.app import create_app
from api.server import serve_in_thread
from app.tokens import Tokens
from control.clock import ManualClock
from tests.api_support import NOW, count, decision_rows, outcome_rows, seeded_store


def test_batches_quarantine_idempotency_and_policy(store_url):
    engine = seeded_store(store_url)
    clock = ManualClock(NOW)
    _, secret = Tokens(engine, clock).create(None, "bidder", "stores")
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    rows = decision_rows(9)
    rows[4]["bid"] = -2.0
    body = json.dumps({"rows": rows})
    try:
        with serve_in_thread(create_app(engine, clock)) as url:
            first = requests.post(f"{url}/v1/decisions", data=body, timeout=30,
                                  headers={**headers, "Idempotency-Key": "k-1"})
            again = requests.post(f"{url}/v1/decisions", data=body, timeout=30,
                                  headers={**headers, "Idempotency-Key": "k-1"})
            outcomes = requests.post(f"{url}/v1/outcomes", data=json.dumps({"rows": outcome_rows(3)}),
                                     headers=headers, timeout=30)
            policy = requests.get(f"{url}/v1/policy", headers=headers, timeout=30)
            unchanged = requests.get(f"{url}/v1/policy", timeout=30,
                                     headers={**headers, "If-None-Match": policy.headers["ETag"]})
    finally:
        counts = (count(engine, "decisions"), count(engine, "quarantine"), count(engine, "outcomes"))
        engine.dispose()
    assert (first.status_code, again.status_code, outcomes.status_code) == (207, 207, 200)
    assert again.json() == first.json() and first.json()["refusals"][0]["index"] == 4
    assert counts == (8, 1, 3)
    assert policy.json()["count"] == 8 and unchanged.status_code == 304
