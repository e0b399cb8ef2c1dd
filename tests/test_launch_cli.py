"""`bidlens model ...` end to end, in process, on a SQLite store in a temporary data folder: the gate's
report read back, a launch under four eyes, rollback, retirement, the thresholds and the admin's switch.
The gate itself (stress, calibration) is measured by app.gate and tested there; here its report is
recorded as app.gate writes it."""

from __future__ import annotations

import pytest

from app.launch import Launches
from app.service import Control
from cli.main import main
from control.config import load_settings
from store import repo
from tests.guards_helpers import init_cli_store
from tests.guards_helpers import run_cli as run
from tests.launch_support import FAILING, gate_report, register


@pytest.fixture
def store(tmp_path, monkeypatch):
    engine = init_cli_store(tmp_path, monkeypatch)
    for user, role in (("ethan", "engineer"), ("max", "manager"), ("ada", "admin")):
        assert main(["user", "add", user, "--role", role, "--password", "correct horse battery"]) == 0
    register(engine, "v1", "v2")
    launches = Launches(engine, lambda: 1_000, load_settings())
    ethan = next(u for u in Control(engine, lambda: 1_000, load_settings()).users() if u.username == "ethan")
    launches.record_gate(ethan, "v1", gate_report("v1"))
    launches.record_gate(ethan, "v2", gate_report("v2", "fail", FAILING))
    return engine


def test_lifecycle_four_eyes_and_rollback_from_the_cli(store, capsys, tmp_path):
    code, models = run(capsys, "model", "list", "--json")
    assert code == 0 and {m["model_version"]: (m["status"], m["verdict"]) for m in models} == \
        {"v1": ("gated", "pass"), "v2": ("gated", "fail")}

    code, text = run(capsys, "model", "show", "v2", "--html", str(tmp_path / "v2.html"))
    assert code == 0 and "FAIL" in text and "objective" in text.lower()
    assert (tmp_path / "v2.html").read_text(encoding="utf-8").lstrip().startswith("<")

    code, first = run(capsys, "model", "request", "v1", "--reason", "first model", "--user", "ethan", "--json")
    assert code == 0 and first["status"] == "requested"
    # Four eyes: the requester may not approve, an operator may not either.
    assert main(["model", "approve", str(first["launch_id"]), "--user", "ethan"]) == 2
    assert main(["model", "approve", str(first["launch_id"]), "--user", "olivia"]) == 2
    code, live = run(capsys, "model", "approve", str(first["launch_id"]), "--user", "mia", "--json")
    assert code == 0 and live["status"] == "live"

    code, second = run(capsys, "model", "request", "v2", "--reason", "GMV model", "--user", "ethan", "--json")
    # A failing gate needs the approver's written reason.
    assert main(["model", "approve", str(second["launch_id"]), "--user", "mia"]) == 2
    code, live2 = run(capsys, "model", "approve", str(second["launch_id"]), "--user", "mia",
                      "--comment", "accepted risk: the guard is armed", "--json")
    assert code == 0 and live2["model_version"] == "v2" and live2["status"] == "live"
    code, models = run(capsys, "model", "list", "--json")
    assert {m["model_version"]: m["status"] for m in models} == {"v1": "approved", "v2": "serving"}

    code, back = run(capsys, "model", "rollback", "--reason", "ROI below the floor", "--user", "ethan", "--json")
    assert code == 0 and back["status"] == "rolled_back"
    code, models = run(capsys, "model", "list", "--json")
    assert {m["model_version"]: m["status"] for m in models} == {"v1": "serving", "v2": "gated"}  # launching it again takes a new approval
    code, launches = run(capsys, "model", "launches", "--json")
    assert [x["status"] for x in launches] == ["live", "rolled_back"]

    assert main(["model", "retire", "v2", "--reason", "GMV objective", "--user", "ethan"]) == 2  # a manager's
    code, retired = run(capsys, "model", "retire", "v2", "--reason", "GMV objective", "--user", "mia", "--json")
    assert code == 0 and retired == {"model_version": "v2", "status": "retired"}

    with store.connect() as conn:
        actions = {e.action for e in repo.load_audit(conn)}
    assert {"model.gate", "launch.request", "launch.approve", "launch.rollback", "model.retire"} <= actions
    assert main(["audit", "verify"]) == 0


def test_thresholds_and_the_gate_switch(store, capsys):
    code, shown = run(capsys, "model", "thresholds", "--json")
    assert code == 0 and shown["calibration_tolerance"] == 0.15
    assert main(["model", "thresholds", "--set", "calibration_tolerance=0.1", "--reason", "x"]) == 2  # who?
    assert main(["model", "thresholds", "--set", "calibration_tolerance=0.1", "--reason", "x",
                 "--user", "ethan"]) == 2
    assert main(["model", "thresholds", "--set", "bogus=1", "--reason", "x", "--user", "mia"]) == 2
    code, set_ = run(capsys, "model", "thresholds", "--set", "calibration_tolerance=0.1", "require_stress=false",
                     "--reason", "618 review", "--user", "mia", "--json")
    assert code == 0 and set_["calibration_tolerance"] == 0.1 and set_["require_stress"] is False

    assert main(["model", "gate-switch", "off", "--reason", "x", "--user", "mia"]) == 2  # an admin's
    code, off = run(capsys, "model", "gate-switch", "off", "--reason", "replay 818", "--user", "ada", "--json")
    assert code == 0 and off == {"enabled": False}
    code, on = run(capsys, "model", "gate-switch", "on", "--reason", "replay done", "--user", "ada", "--json")
    assert on == {"enabled": True}


def test_refusals_name_the_problem(store, capsys):
    assert main(["model", "show", "nope"]) == 2
    assert main(["model", "rollback", "--reason", "nothing live", "--user", "mia"]) == 2
    assert main(["model", "gate", "v1", "--seeds", "1", "--minutes", "5"]) == 2  # no artefact on disk
    assert "not on disk" in capsys.readouterr().err
