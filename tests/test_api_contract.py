"""The bidder API's contract, over a real uvicorn server on 127.0.0.1 and a real SQLite file store."""

from __future__ import annotations

import json

import pytest
import requests

from api.app import ApiConfig, create_app
from api.server import serve_in_thread as serve
from api.shadow import shadow_filler
from app.current_policy import rule_pool_provider
from app.service import Control
from app.tokens import Tokens
from control.clock import ManualClock
from control.config import Settings
from control.domain import GuardMode, OverrideField, Role
from guards.pool_store import load_active_pool
from guards.rule_pool import hour_of
from store import repo
from store import schema as s
from tests.api_support import NOW, count, decision_rows, make_store, outcome_rows

GENERIC_401 = {"error": {"code": "unauthorized", "message": "missing or invalid token"}}


# Rules name hours of the day in Beijing: NOW - 20 s is 23:59:40 there, so "late" answers.
POOL_TOML = """
[[rules]]
rule_id = "r-fixed"
action = "fixed_bid"
value = 0.5

[[rules]]
rule_id = "late"
action = "fixed_bid"
value = 0.7
priority = 1
hour_from = 23
hour_to = 24
"""


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    engine = make_store(folder)
    clock = ManualClock(NOW)
    tokens = Tokens(engine, clock)
    app = create_app(engine, clock, config=ApiConfig(max_batch_rows=50, max_body_bytes=200_000),
                     pool_provider=rule_pool_provider(load_active_pool, hour_of), enrich=shadow_filler(engine))
    with serve(app) as url:
        yield {"url": url, "engine": engine, "clock": clock, "tokens": tokens}


@pytest.fixture()
def bidder(api):
    _, secret = api["tokens"].create(None, "bidder", "test-bidder")
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture()
def reader(api):
    _, secret = api["tokens"].create(None, "reader", "test-reader")
    return {"Authorization": f"Bearer {secret}"}


def post(api, path, payload, headers, **extra) -> requests.Response:
    body = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
    return requests.post(api["url"] + path, data=body,
                         headers={"Content-Type": "application/json", **headers, **extra}, timeout=30)


def get(api, path, headers, **params) -> requests.Response:
    return requests.get(api["url"] + path, headers=headers, params=params, timeout=30)


def test_a_valid_batch_is_stored_whole(api, bidder):
    before = count(api["engine"], "decisions")
    r = post(api, "/v1/decisions", {"rows": decision_rows(12, seed=2)}, bidder)
    assert r.status_code == 200
    body = r.json()
    assert (body["accepted"], body["refused"], body["refusals"]) == (12, 0, [])
    assert count(api["engine"], "decisions") == before + 12
    assert count(api["engine"], "decisions", "WHERE source = 'api'") >= 12


def test_bad_rows_are_quarantined_with_reasons_and_good_rows_stored(api, bidder):
    rows = decision_rows(10, seed=3)
    rows[1]["bid"] = -1.0
    rows[2]["bid"] = 5000.0                      # a decimal point off
    rows[3]["campaign_id"] = "nobody"
    rows[4]["bucket_ts"] = NOW + 3 * 86400       # far in the future
    rows[5]["bid"] = "1.2"                       # a string is not a number
    rows[7]["pred_ctr"] = 1.5
    text = json.dumps({"rows": rows + ["not an object"]})
    # JSON has no NaN, but Python's parser accepts the literal: that row is refused, not the batch.
    text = text.replace(f'"bid": {json.dumps(rows[6]["bid"])}', '"bid": NaN', 1)
    decisions, quarantined = count(api["engine"], "decisions"), count(api["engine"], "quarantine")
    r = post(api, "/v1/decisions", text, bidder)
    assert r.status_code == 207
    body = r.json()
    refused = [(x["index"], x["field"]) for x in body["refusals"]]
    assert refused == [(1, "bid"), (2, "bid"), (3, "campaign_id"), (4, "bucket_ts"), (5, "bid"),
                       (6, "bid"), (7, "pred_ctr"), (10, "_row")]
    assert body["accepted"] == 3 and body["refused"] == 8
    assert count(api["engine"], "decisions") == decisions + 3
    assert count(api["engine"], "quarantine") == quarantined + 8
    with api["engine"].connect() as conn:
        stored = conn.execute(s.quarantine.select().where(
            s.quarantine.c.received_ts == body["quarantine"]["received_ts"],
            s.quarantine.c.source == body["quarantine"]["source"])).all()
    assert sorted((q.row_index, q.field) for q in stored) == refused
    assert {q.reason for q in stored} >= {"unknown campaign", "bid above 1000.0 yuan per click"}
    assert next(q for q in stored if q.row_index == 3).row["campaign_id"] == "nobody"


def test_outcome_batches_go_through_the_same_checks(api, bidder):
    rows = outcome_rows(4)
    rows[2]["clicks"] = 500  # more clicks than impressions
    r = post(api, "/v1/outcomes", {"rows": rows}, bidder)
    assert r.status_code == 207
    assert r.json()["refusals"] == [{"index": 2, "field": "clicks", "reason": "more clicks than impressions",
                                     "value": "500.0"}]
    assert count(api["engine"], "outcomes", "WHERE source = 'api'") >= 3


@pytest.mark.parametrize(("body", "status", "code"), [
    ("{not json", 400, "malformed_json"),
    ('{"rows": []}', 422, "invalid_batch"),
    ('[{"campaign_id": "c1"}]', 422, "invalid_batch"),
    (json.dumps({"rows": decision_rows(51)}), 413, "batch_too_large"),
    (json.dumps({"rows": decision_rows(50), "pad": "x" * 300_000}), 413, "body_too_large"),
])
def test_batch_level_errors(api, bidder, body, status, code):
    before = count(api["engine"], "decisions")
    r = post(api, "/v1/decisions", body, bidder)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    assert count(api["engine"], "decisions") == before


def test_a_non_json_body_is_refused_as_such(api, bidder):
    r = post(api, "/v1/decisions", "a,b\n1,2\n", bidder, **{"Content-Type": "text/csv"})
    assert r.status_code == 415


def test_a_resent_batch_is_stored_once_and_its_response_replayed(api, bidder):
    rows = decision_rows(6, seed=5)
    rows[0]["bid"] = -3.0
    before, quarantined = count(api["engine"], "decisions"), count(api["engine"], "quarantine")
    first = post(api, "/v1/decisions", {"rows": rows}, bidder, **{"Idempotency-Key": "batch-0001"})
    again = post(api, "/v1/decisions", {"rows": rows}, bidder, **{"Idempotency-Key": "batch-0001"})
    assert first.status_code == again.status_code == 207
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(api["engine"], "decisions") == before + 5
    assert count(api["engine"], "quarantine") == quarantined + 1
    other = post(api, "/v1/decisions", {"rows": rows[1:]}, bidder, **{"Idempotency-Key": "batch-0001"})
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_key_reused")
    fresh = post(api, "/v1/decisions", {"rows": rows}, bidder, **{"Idempotency-Key": "batch-0002"})
    assert fresh.status_code == 207 and "Idempotent-Replayed" not in fresh.headers
    assert count(api["engine"], "decisions") == before + 10


def test_no_wrong_or_revoked_token_gets_401_without_detail(api, bidder):
    for headers in ({}, {"Authorization": "Bearer blt_wrong"}, {"Authorization": "Basic Ym9iOnB3"},
                    {"Authorization": "Bearer " + bidder["Authorization"][7:] + "x"}):
        for r in (get(api, "/v1/policy", headers), post(api, "/v1/decisions", {"rows": decision_rows(1)}, headers)):
            assert (r.status_code, r.json()) == (401, GENERIC_401)
    token, secret = api["tokens"].create(None, "bidder", "soon-revoked")
    headers = {"Authorization": f"Bearer {secret}"}
    assert get(api, "/v1/guards", headers).status_code == 200
    api["tokens"].revoke(None, token.token_id)
    r = get(api, "/v1/guards", headers)
    assert (r.status_code, r.json()) == (401, GENERIC_401)


def test_a_reader_token_reads_but_may_not_post(api, reader):
    assert get(api, "/v1/policy", reader).status_code == 200
    assert get(api, "/v1/guards", reader).status_code == 200
    before = count(api["engine"], "decisions")
    for path in ("/v1/decisions", "/v1/outcomes"):
        r = post(api, path, {"rows": decision_rows(1)}, reader)
        assert (r.status_code, r.json()) == (403, {"error": {"code": "forbidden",
                                                              "message": "this token may not do that"}})
    assert count(api["engine"], "decisions") == before


def _control(api) -> Control:
    return Control(api["engine"], api["clock"], Settings())


def test_policy_etag_changes_exactly_when_an_input_changes(api, bidder):
    post(api, "/v1/decisions", {"rows": decision_rows(9, seed=8)}, bidder)
    first = get(api, "/v1/policy", bidder)
    etag = first.headers["ETag"]
    assert first.json()["version"] == etag.strip('"')
    assert get(api, "/v1/policy", {**bidder, "If-None-Match": etag}).status_code == 304
    assert get(api, "/v1/policy", {**bidder, "If-None-Match": f'W/{etag}, "x"'}).status_code == 304

    post(api, "/v1/decisions", {"rows": decision_rows(1, seed=9, bucket_ts=NOW - 60)}, bidder)
    changed = get(api, "/v1/policy", {**bidder, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    slot = next(x for x in changed.json()["slots"]
                if (x["campaign_id"], x["audience_package"]) == ("c1", "parenting"))
    assert slot["bucket_ts"] == NOW - 60  # the newest decision of the slot is its plan


def test_an_approved_override_is_served_until_it_expires(api, bidder):
    post(api, "/v1/decisions", {"rows": decision_rows(9, seed=10, bucket_ts=NOW - 30)}, bidder)
    control = _control(api)
    for name, role in (("op", Role.OPERATOR), ("boss", Role.MANAGER)):
        if name not in {u.username for u in control.users()}:
            control.add_user(None, name, name, role, "pw-long-enough-1")
    users = {u.username: u for u in control.users()}
    etag = get(api, "/v1/policy", bidder).headers["ETag"]
    proposed = control.propose_override(users["op"], campaign_id="c2", audience_package="moving",
                                        field=OverrideField.BID, value=1.25, reason="test",
                                        expires_ts=NOW + 600)
    assert get(api, "/v1/policy", {**bidder, "If-None-Match": etag}).status_code == 200  # proposed: a change
    control.approve_override(users["boss"], proposed.override_id, proposed.version)
    r = get(api, "/v1/policy", bidder, campaign_id="c2", audience_package="moving")
    (slot,) = r.json()["slots"]
    assert (slot["decided_by"], slot["bid"], slot["override_ids"]) == ("override", 1.25, [proposed.override_id])
    etag = r.headers["ETag"]
    api["clock"].now_ts = NOW + 601  # expired, though nobody has written anything yet
    try:
        r = get(api, "/v1/policy", {**bidder, "If-None-Match": etag}, campaign_id="c2", audience_package="moving")
        assert r.status_code == 200
        assert r.json()["slots"][0]["decided_by"] == "model"
    finally:
        api["clock"].now_ts = NOW


def test_a_tripped_guard_or_the_kill_switch_hands_the_slot_to_the_rule_pool(api, bidder):
    post(api, "/v1/decisions", {"rows": decision_rows(9, seed=11, bucket_ts=NOW - 20)}, bidder)
    engine = api["engine"]
    _activate_pool(engine)
    with engine.begin() as conn:
        conn.execute(s.guard_states.insert().values(guard="roi", campaign_id="c3", mode=GuardMode.TRIPPED.value,
                                                    state={}, event_id=77, version=1, updated_ts=NOW))
    slots = get(api, "/v1/policy", bidder, campaign_id="c3").json()["slots"]
    assert slots and all((x["decided_by"], x["rule_id"], x["bid"], x["guard_event_id"], x["reason"])
                         == ("rule_pool", "late", 0.7, 77, "guard:tripped") for x in slots)
    guards = get(api, "/v1/guards", bidder).json()
    assert guards["guards"] == [{"campaign_id": "c3", "mode": "tripped", "canary_share": 0.0, "action": "pool",
                                 "bid_factor": 1.0, "event_id": 77}]

    etag = get(api, "/v1/policy", bidder).headers["ETag"]
    with engine.begin() as conn:
        repo.set_flag(conn, repo.KILL_SWITCH_KEY, {"global": False, "campaigns": ["c1"]}, "t", NOW)
    r = get(api, "/v1/policy", {**bidder, "If-None-Match": etag}, campaign_id="c1")
    assert r.status_code == 200
    assert {(x["decided_by"], x["reason"]) for x in r.json()["slots"]} == {("rule_pool", "kill_switch")}
    assert get(api, "/v1/guards", bidder).json()["kill_switch"] == {"global_on": False, "campaigns": ["c1"]}
    with engine.begin() as conn:
        repo.set_flag(conn, repo.KILL_SWITCH_KEY, {"global": False, "campaigns": []}, "t", NOW)
        conn.execute(s.guard_states.delete())


def _activate_pool(engine) -> None:
    with engine.begin() as conn:
        if conn.execute(s.rule_pool_versions.select()).first() is None:
            conn.execute(s.rule_pool_versions.insert().values(version=1, created_ts=NOW, created_by="t",
                                                              source=POOL_TOML, status="active"))


def test_decisions_get_the_rule_pools_shadow_score_unless_they_bring_their_own(api, bidder):
    _activate_pool(api["engine"])
    rows = decision_rows(2, seed=12, bucket_ts=NOW - 20)
    rows[1]["pool_bid"], rows[1]["pool_pred_roi"] = 0.9, 2.5
    assert post(api, "/v1/decisions", {"rows": rows}, bidder).status_code == 200
    with api["engine"].connect() as conn:
        stored = conn.exec_driver_sql("SELECT model_bid, pred_roi, pool_bid, pool_pred_roi FROM decisions "
                                      "ORDER BY decision_id DESC LIMIT 2").all()[::-1]
    assert stored[0].pool_bid == 0.7  # the "late" rule at 23:59 Beijing time
    assert stored[0].pool_pred_roi == pytest.approx(stored[0].pred_roi * stored[0].model_bid / 0.7)
    assert (stored[1].pool_bid, stored[1].pool_pred_roi) == (0.9, 2.5)


def test_guards_answer_304_when_unchanged(api, reader):
    first = get(api, "/v1/guards", reader)
    assert get(api, "/v1/guards", {**reader, "If-None-Match": first.headers["ETag"]}).status_code == 304


def test_health_and_readiness(api, tmp_path):
    assert requests.get(api["url"] + "/healthz", timeout=10).json() == {"status": "ok", "reason": None}
    assert requests.get(api["url"] + "/readyz", timeout=10).json() == {"status": "ready", "reason": None}
    from store.engine import make_engine

    unmigrated = create_app(make_engine(f"sqlite:///{tmp_path / 'empty.db'}"), ManualClock(NOW))
    with serve(unmigrated) as url:
        r = requests.get(url + "/readyz", timeout=10)
    assert r.status_code == 503 and r.json()["reason"].startswith("schema not current")


def test_openapi_documents_every_route_and_the_batch_rows(api):
    doc = requests.get(api["url"] + "/openapi.json", timeout=10).json()
    assert set(doc["paths"]) == {"/v1/decisions", "/v1/outcomes", "/v1/competitor-prices", "/v1/stock", "/v1/policy",
                                 "/v1/guards", "/healthz", "/readyz"}
    assert {"200", "207", "400", "401", "403", "413", "422"} <= set(doc["paths"]["/v1/decisions"]["post"]["responses"])
    row = doc["components"]["schemas"]["DecisionRow"]
    assert row["properties"]["bid"]["maximum"] == 1000.0
    assert "bid" in row["required"]
    assert doc["components"]["schemas"]["StockRow"]["required"] == ["campaign_id", "observed_ts", "stock_units"]
