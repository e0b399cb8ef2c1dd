"""`bidlens guard ...` end to end, in process, on a SQLite store in a temporary data folder."""

from __future__ import annotations

import pytest

from cli.main import main
from tests.guards_helpers import init_cli_store
from tests.guards_helpers import run_cli as run

POOL = """
[[rules]]
rule_id = "base"
action = "multiplier"
value = 0.8
"""


@pytest.fixture
def store(tmp_path, monkeypatch):
    init_cli_store(tmp_path, monkeypatch)
    return tmp_path


def test_pool_force_kill_status_and_one_tick(store, capsys):
    good, bad = store / "pool.toml", store / "bad.toml"
    good.write_text(POOL, encoding="utf-8")
    bad.write_text(POOL.replace("0.8", "9.0"), encoding="utf-8")
    assert run(capsys, "guard", "pool", "submit", str(good), "--user", "mia", "--json") == \
        (0, {"version": 1, "status": "active", "error": ""})
    code, refused = run(capsys, "guard", "pool", "submit", str(bad), "--user", "mia", "--json")
    assert code == 1 and refused["status"] == "refused" and "rule base: value=9.0" in refused["error"]
    code, versions = run(capsys, "guard", "pool", "list", "--json")
    assert [v["status"] for v in versions] == ["active", "refused"]

    assert main(["guard", "force", "--campaign", "c1", "--mode", "pool", "--reason", "x", "--user", "olivia"]) == 2
    code, forced = run(capsys, "guard", "force", "--campaign", "c1", "--mode", "pool", "--reason", "818",
                       "--user", "mia", "--json")
    assert code == 0 and {g["mode_after"] for g in forced["guards"]} == {"forced_pool"}
    code, kill = run(capsys, "guard", "kill", "on", "--reason", "pause all", "--user", "mia", "--json")
    assert kill == {"global": True, "campaigns": []}

    code, tick = run(capsys, "guard", "run", "--once", "--json")
    assert code == 0 and tick["campaigns"] == 1 and tick["events"] == []
    code, status = run(capsys, "guard", "status", "--json")
    assert status["kill_switch"]["global"] is True and status["rule_pool_version"] == 1
    assert status["campaigns"][0]["effective_mode"] == "forced_pool" and status["worker"] is not None
    code, text = run(capsys, "guard", "status")
    assert "kill switch: global ON" in text and "forced_pool" in text
