"""The bidder client (api.client) against a real server: batches, idempotent re-runs, ETag polling."""

from __future__ import annotations

import pandas as pd
import pytest

from api.app import create_app
from api.client import ApiError, BidLensClient, PolicySnapshot, serve_policy
from api.server import serve_in_thread as serve
from app.tokens import Tokens
from control.clock import ManualClock
from tests.api_support import NOW, count, decision_rows, make_store


@pytest.fixture()
def live(tmp_path):
    engine = make_store(tmp_path)
    clock = ManualClock(NOW)
    tokens = Tokens(engine, clock)
    _, bidder = tokens.create(None, "bidder", "client-test")
    _, reader = tokens.create(None, "reader", "client-reader")
    with serve(create_app(engine, clock)) as url:
        yield url, engine, bidder, reader


def test_rows_go_in_batches_and_a_rerun_stores_nothing_twice(live):
    url, engine, bidder, _ = live
    rows = decision_rows(2500, seed=4)
    rows[1500]["bid"] = float("nan")
    rows[2499]["campaign_id"] = "ghost"
    client = BidLensClient(url, bidder)
    summary = client.send_decisions(pd.DataFrame(rows), key_prefix="day-818")
    assert (summary.batches, summary.accepted, summary.refused) == (3, 2498, 2)
    assert [(r["index"], r["field"]) for r in summary.refusals] == [(1500, "bid"), (2499, "campaign_id")]
    again = client.send_decisions(rows, key_prefix="day-818")
    assert (again.accepted, again.refused) == (2498, 2)
    assert count(engine, "decisions") == 2498 and count(engine, "quarantine") == 2


def test_polling_returns_the_policy_only_when_it_changed(live):
    url, _, bidder, reader = live
    BidLensClient(url, bidder).send_decisions(decision_rows(9))
    poller = BidLensClient(url, reader)
    first = poller.policy()
    assert first is not None and len(first.slots) == 9
    assert poller.policy() is None
    assert poller.policy(only_changes=False) == first
    BidLensClient(url, bidder).send_decisions(decision_rows(1, bucket_ts=NOW))
    changed = poller.policy()
    assert changed is not None and changed.version != first.version
    assert changed.by_slot()[("c1", "parenting")]["bucket_ts"] == NOW
    assert poller.policy(campaign_id="c2") is not None
    assert poller.guards()["guards"] == []
    assert poller.ready()
    with pytest.raises(ApiError) as refused:
        poller.send_decisions(decision_rows(1))
    assert refused.value.status == 403


def test_a_bidder_serves_overrides_and_the_pool_and_the_model_elsewhere():
    plan = pd.DataFrame({"campaign_id": ["c1", "c1", "c2"], "audience_package": ["a", "b", "a"],
                         "bid": [1.0, 2.0, 3.0], "audience_on": [True, True, True]})
    snapshot = PolicySnapshot("v1", NOW, [
        {"campaign_id": "c1", "audience_package": "a", "bid": 0.4, "audience_on": False, "decided_by": "rule_pool",
         "reason": "guard:probation", "canary_share": 0.1},
        {"campaign_id": "c1", "audience_package": "b", "bid": 2.5, "audience_on": True, "decided_by": "model",
         "reason": "model", "canary_share": 0.0},
        {"campaign_id": "c2", "audience_package": "a", "bid": 1.5, "audience_on": True, "decided_by": "override",
         "reason": "override:4", "canary_share": 0.0},
    ])
    served = serve_policy(plan, snapshot)
    assert served["bid"].tolist() == [0.4, 2.0, 1.5]  # the model's fresh bid where the model decides
    assert served["audience_on"].tolist() == [False, True, True]
    assert served["decided_by"].tolist() == ["rule_pool", "model", "override"]
    assert served["canary_share"].tolist() == [0.1, 0.0, 0.0]
    assert served["model_bid"].tolist() == [1.0, 2.0, 3.0]
    assert serve_policy(plan, None)["bid"].tolist() == [1.0, 2.0, 3.0]
