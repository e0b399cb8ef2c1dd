"""`bidlens api` as a bidder meets it: a real process on localhost, wired to the store's clock,
the rule pool in force and its shadow score."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from api.client import BidLensClient
from cli.main import main
from control.clock import AcceleratedClock
from guards.pool_store import submit_pool
from guards.rule_pool import PoolBounds
from store import repo
from tests.api_support import NOW, decision_rows, seeded_store, without_launch_gate

ROOT = Path(__file__).resolve().parents[1]
POOL = """
[[rules]]
rule_id = "half"
action = "multiplier"
value = 0.5
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_served_api_uses_the_demo_clock_the_rule_pool_and_its_shadow_score(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BIDLENS_DATA_DIR", str(tmp_path))
    engine = seeded_store(f"sqlite:///{tmp_path / 'bidlens.db'}")
    with engine.begin() as conn:
        # A demo anchored its promotion clock at NOW, running 1 simulated second per real second.
        repo.set_flag(conn, repo.DEMO_CLOCK_KEY, AcceleratedClock(NOW, time.time(), 1.0).anchor(), "t", NOW)
        assert submit_pool(conn, POOL, "t", NOW, PoolBounds()).status == "active"
        repo.set_flag(conn, repo.KILL_SWITCH_KEY, {"global": False, "campaigns": ["c1"]}, "t", NOW)
    assert main(["token", "create", "--role", "bidder", "--json"]) == 0
    token = json.loads(capsys.readouterr().out)["token"]
    without_launch_gate(engine)  # the sample rows' version was never launched through the gate
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "api", "--port", str(port)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        client = BidLensClient(url, token, retries=0)
        deadline = time.monotonic() + 30
        while not client.ready():
            assert server.poll() is None and time.monotonic() < deadline, "bidlens api did not become ready"
            time.sleep(0.1)
        summary = client.send_decisions(decision_rows(9, bucket_ts=NOW + 60))
        assert (summary.accepted, summary.refused) == (9, 0)
        policy = client.policy().by_slot()
        c1 = policy[("c1", "parenting")]
        assert (c1["decided_by"], c1["reason"], c1["rule_id"]) == ("rule_pool", "kill_switch", "half")
        assert c1["bid"] == pytest.approx(0.5 * c1["model_bid"])
        assert policy[("c2", "parenting")]["decided_by"] == "model"
        assert requests.get(f"{url}/v1/policy", timeout=10).status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=20)
    with engine.connect() as conn:
        pools = conn.exec_driver_sql("SELECT model_bid, pool_bid, received_ts FROM decisions").all()
    assert all(p.pool_bid == pytest.approx(0.5 * p.model_bid) for p in pools)
    # Received on the promotion's clock (NOW and a few seconds), not on real time months later.
    assert all(abs(p.received_ts - NOW) < 600 for p in pools)
