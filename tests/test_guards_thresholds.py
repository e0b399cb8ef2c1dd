"""Guard thresholds edited by managers: validated as the config file is, layered on it, stored
with a version, permission-checked and audited in the core, picked up by the worker on its
next tick, through the CLI and the panel."""

from __future__ import annotations

import json

import pytest
from panel_support import Panel, room_for, seeded_control

from app.service import Control
from cli.main import main
from control.clock import ManualClock
from control.config import Settings
from control.domain import GuardMode, InvalidValue, Role, User
from control.permissions import PermissionDenied
from guards.alert_bridge import enqueue_guard_alert
from guards.alerts import list_alerts
from guards.config import parse_guard_settings
from guards.rule_pool import PoolBounds
from guards.service import GuardService
from guards.threshold_store import ThresholdReader, load_edits, save_edits
from guards.thresholds import (
    EDITABLE,
    FROM_ALL,
    FROM_CAMPAIGN,
    FROM_FILE,
    ThresholdEdit,
    ThresholdEdits,
    apply_edit,
    describe,
    effective_settings,
    reset,
)
from guards.worker import GuardWorker
from panel import i18n
from store import repo
from store.engine import open_store
from tests.guards_helpers import T0, feed_minute, init_cli_store, make_store
from tests.helpers import add_users

FILE = parse_guard_settings("[roi.campaigns.c7]\nfloor = 2.5\ncooldown_s = 60\n")
MANAGER = User("mia", "Mia", Role.MANAGER)
OPERATOR = User("olivia", "Olivia", Role.OPERATOR)
ADMIN = User("ada", "Ada", Role.ADMIN)


def edit(values: dict, campaign_id: str | None = None, guard: str = "roi", reason: str = "818 promotion") -> ThresholdEdit:
    return ThresholdEdit(guard, campaign_id, values, reason)


# --- the pure core ---------------------------------------------------------------------------

def test_a_bad_value_is_refused_as_the_config_file_refuses_it_naming_key_and_value():
    with pytest.raises(InvalidValue) as from_file:
        parse_guard_settings("[roi.campaigns.c07]\nfloor = -1\n")
    with pytest.raises(InvalidValue) as from_edit:
        apply_edit(FILE, ThresholdEdits(), edit({"floor": -1}, "c07"))
    assert str(from_edit.value) == str(from_file.value) == "roi.campaigns.c07.floor=-1: must be >= 0.0"
    with pytest.raises(InvalidValue, match=r"^roi\.cooldown_s=-5: must be >= 0"):
        apply_edit(FILE, ThresholdEdits(), edit({"cooldown_s": -5}))
    with pytest.raises(InvalidValue, match=r"^pacing\.campaigns\.c1\.consecutive=2\.5: must be a whole number"):
        apply_edit(FILE, ThresholdEdits(), edit({"consecutive": 2.5}, "c1", guard="pacing"))
    with pytest.raises(InvalidValue, match=r"roi\.max_cooldown_s=14400: must be >= cooldown_s"):
        apply_edit(FILE, ThresholdEdits(), edit({"cooldown_s": 20_000}))
    with pytest.raises(InvalidValue, match=r"^roi\.confidence=0\.9: not editable"):
        apply_edit(FILE, ThresholdEdits(), edit({"confidence": 0.9}))
    with pytest.raises(InvalidValue, match=r"^reason="):
        apply_edit(FILE, ThresholdEdits(), edit({"floor": 2.1}, reason="  "))
    with pytest.raises(InvalidValue, match=r"^guard='price'"):
        apply_edit(FILE, ThresholdEdits(), edit({"floor": 2.1}, guard="price"))
    with pytest.raises(InvalidValue, match="nothing to change"):
        apply_edit(FILE, ThresholdEdits(), edit({}))


def test_store_edits_layer_on_the_file_campaign_edits_over_all_campaign_edits():
    edits = apply_edit(FILE, ThresholdEdits(), edit({"floor": 2.2, "hysteresis": 0.3}))
    edits = apply_edit(FILE, edits, edit({"floor": 2.4, "cooldown_s": 120}, "c8"))
    effective = effective_settings(FILE, edits)
    c1, c7, c8 = (effective.for_campaign("roi", c) for c in ("c1", "c7", "c8"))
    assert (c1.floor, c1.hysteresis, c1.machine.cooldown_s) == (2.2, 0.3, 1800)
    # The file's line for c7 keeps its cooldown; an edit for all campaigns reaches c7's floor too.
    assert (c7.floor, c7.hysteresis, c7.machine.cooldown_s) == (2.2, 0.3, 60)
    assert (c8.floor, c8.hysteresis, c8.machine.cooldown_s) == (2.4, 0.3, 120)
    assert effective.for_campaign("pacing", "c8") == FILE.defaults["pacing"]  # other guards untouched
    shown = describe(FILE, edits, "roi", "c8")
    assert shown["floor"] == {"value": 2.4, "file": 2.0, "source": FROM_CAMPAIGN}
    assert shown["hysteresis"]["source"] == FROM_ALL and shown["min_pred_spend"]["source"] == FROM_FILE
    assert describe(FILE, edits, "roi", "c7")["cooldown_s"] == {"value": 60, "file": 60, "source": FROM_FILE}
    # A value keeps the file's type: an int for a float field is stored as a float.
    assert apply_edit(FILE, ThresholdEdits(), edit({"floor": 3})).all_campaigns["roi"] == {"floor": 3.0}
    back = reset(edits, "c8")
    assert effective_settings(FILE, back).for_campaign("roi", "c8").floor == 2.2
    assert reset(back, None).to_json() == ThresholdEdits().to_json()
    assert ThresholdEdits.from_json(json.loads(json.dumps(edits.to_json()))) == edits


# --- stored, permission-checked, audited: SQLite and PostgreSQL -----------------------------------

def service_on(engine, clock, settings=FILE) -> GuardService:
    with engine.connect() as conn:
        known = repo.list_users(conn)
    if not known:  # the people these tests act as, once per store
        add_users(engine, MANAGER, OPERATOR, ADMIN, User("max", "Max", Role.MANAGER))
    return GuardService(engine, clock, settings, PoolBounds(), alert_sink=enqueue_guard_alert)


def test_managers_edit_others_are_refused_every_edit_audited_with_before_and_after(store_url):
    engine = make_store(store_url, campaigns=("c1", "c7"))
    clock = ManualClock(T0)
    service = service_on(engine, clock)
    for who in (OPERATOR, ADMIN):
        with pytest.raises(PermissionDenied):
            service.set_thresholds(who, edit({"floor": 2.3}, "c1"))
        with pytest.raises(PermissionDenied):
            service.reset_thresholds(who, "c1", "undo")
    with pytest.raises(InvalidValue, match="campaign_id='nope'"):
        service.set_thresholds(MANAGER, edit({"floor": 2.3}, "nope"))
    with pytest.raises(InvalidValue, match=r"roi\.campaigns\.c1\.floor=-1\.0"):
        service.set_thresholds(MANAGER, edit({"floor": -1.0}, "c1"))
    assert service.thresholds()["version"] == 0  # nothing was stored by any refusal

    view = service.set_thresholds(MANAGER, edit({"floor": 2.3, "cooldown_s": 900}, "c1"), expected_version=0)
    assert view["version"] == 1 and view["guards"]["roi"]["floor"]["value"] == 2.3
    # Another process (a panel, the worker) reads the same thresholds from the store.
    other = service_on(open_store(store_url), clock)
    assert other.thresholds("c1")["guards"]["roi"]["cooldown_s"] == {"value": 900, "file": 1800,
                                                                     "source": FROM_CAMPAIGN}
    assert other.thresholds("c7")["guards"]["roi"]["floor"]["value"] == 2.5
    with engine.connect() as conn:
        entry = repo.load_audit(conn, entity="guard_thresholds")[-1]
    assert (entry.actor, entry.action, entry.entity_id) == ("mia", "guard.thresholds_set", "roi:c1")
    assert entry.before["values"]["roi"]["floor"] == 2.0 and entry.before["version"] == 0
    assert entry.after["values"]["roi"] == {**entry.before["values"]["roi"], "floor": 2.3, "cooldown_s": 900}
    assert entry.after["reason"] == "818 promotion" and entry.after["version"] == 1

    clock.now_ts += 60
    service.reset_thresholds(MANAGER, "c1", "promotion over", expected_version=1)
    assert service.thresholds("c1")["guards"]["roi"]["floor"] == {"value": 2.0, "file": 2.0, "source": FROM_FILE}
    with engine.connect() as conn:
        entries = repo.load_audit(conn, entity="guard_thresholds")
    assert entries[-1].action == "guard.thresholds_reset" and entries[-1].after["reason"] == "promotion over"
    assert entries[-1].before["values"]["roi"]["floor"] == 2.3 and set(entries[-1].after["values"]) == set(EDITABLE)
    assert Control(engine, clock, Settings()).verify_audit().ok


def test_two_managers_at_once_the_second_gets_a_conflict_not_a_silent_overwrite(store_url):
    engine = make_store(store_url)
    clock = ManualClock(T0)
    service = service_on(engine, clock)
    seen = service.thresholds("c1")["version"]
    service.set_thresholds(MANAGER, edit({"floor": 2.3}, "c1"), expected_version=seen)
    with pytest.raises(repo.ConflictError, match="someone else"):
        service.set_thresholds(User("max", "Max", Role.MANAGER), edit({"floor": 1.9}, "c1"), expected_version=seen)
    assert service.thresholds("c1")["guards"]["roi"]["floor"]["value"] == 2.3
    # The store refuses a write on a moved version too (two writers between read and write).
    with engine.begin() as conn:
        edits, version = load_edits(conn)
        save_edits(conn, edits, "mia", T0, version)
    with pytest.raises(repo.ConflictError), engine.begin() as conn:
        save_edits(conn, edits, "max", T0, version)


def test_stored_edits_that_no_longer_fit_the_file_keep_the_last_good_settings(tmp_path):
    engine = make_store(tmp_path / "b.db")
    with engine.begin() as conn:
        save_edits(conn, apply_edit(FILE, ThresholdEdits(), edit({"cooldown_s": 7200}, "c1")), "mia", T0, 0)
    reader = ThresholdReader(FILE)
    with engine.connect() as conn:
        assert reader.read(conn).for_campaign("roi", "c1").machine.cooldown_s == 7200
    stricter = ThresholdReader(parse_guard_settings("[roi]\nmax_cooldown_s = 3600\n"))
    with engine.connect() as conn:
        settings = stricter.read(conn)
    assert settings is stricter.file and "roi.campaigns.c1.max_cooldown_s=3600" in stricter.error


# --- the worker takes an edit on its next tick -----------------------------------------------------

def test_the_worker_uses_an_edit_on_its_next_tick_without_a_restart(store_url):
    settings = parse_guard_settings("[observe]\nlag_minutes = [0]\nlag_cdf = [1.0]\n")
    engine = make_store(store_url)
    clock = ManualClock(T0)
    worker = GuardWorker(engine, clock, settings, alert_sink=enqueue_guard_alert)
    service = service_on(engine, clock, settings)

    def minute(m: int):
        feed_minute(engine, m, {"c1": 2.1, "c2": 2.1})  # just above the file's floor of 2.0
        clock.now_ts = T0 + 60 * m + 61
        return worker.tick()

    assert all(not minute(m).events for m in range(6))
    service.set_thresholds(MANAGER, edit({"floor": 2.3, "consecutive": 1}, "c1", reason="thin margin"))
    report = minute(6)
    assert [(e.guard, e.campaign_id, e.kind) for e in report.events] == [("roi", "c1", "tripped")]
    assert report.thresholds_version == 1 and report.thresholds_error is None
    with engine.connect() as conn:
        assert repo.load_guard_states(conn)["c1"].mode is GuardMode.TRIPPED
        assert repo.load_guard_states(conn)["c2"].mode is GuardMode.MODEL  # the edit was for c1 only
        assert list_alerts(conn)[0].payload["floor"] == 2.3
    status = service.status()
    c1 = next(c for c in status["campaigns"] if c["campaign_id"] == "c1")
    assert c1["thresholds"]["roi"]["floor"] == 2.3 and status["thresholds"]["all_campaigns"]["roi"]["floor"] == 2.0


# --- CLI -------------------------------------------------------------------------------------------

@pytest.fixture
def cli_store(tmp_path, monkeypatch):
    return init_cli_store(tmp_path, monkeypatch)


def run(capsys, *argv) -> tuple[int, object, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    out = json.loads(captured.out) if "--json" in argv and captured.out.strip() else captured.out
    return code, out, captured.err


def test_cli_show_set_reset_round_trip(cli_store, capsys):
    code, shown, _ = run(capsys, "guard", "thresholds", "show", "--json")
    assert code == 0 and shown["version"] == 0 and shown["guards"]["roi"]["floor"]["value"] == 2.0
    code, _, err = run(capsys, "guard", "thresholds", "set", "--guard", "roi", "--campaign", "c1", "--floor", "2.2",
                       "--reason", "thin margin", "--user", "olivia", "--json")
    assert code == 2 and "olivia (operator) may not edit_guard_config" in err
    code, _, err = run(capsys, "guard", "thresholds", "set", "--guard", "roi", "--campaign", "c1", "--cooldown-s",
                       "-5", "--reason", "x", "--user", "mia")
    assert code == 2 and "roi.campaigns.c1.cooldown_s=-5: must be >= 0" in err
    code, saved, _ = run(capsys, "guard", "thresholds", "set", "--guard", "roi", "--campaign", "c1", "--floor", "2.2",
                         "--cooldown-s", "900", "--reason", "thin margin", "--user", "mia", "--expected-version", "0",
                         "--json")
    assert code == 0 and saved["version"] == 1
    assert saved["guards"]["roi"]["floor"] == {"value": 2.2, "file": 2.0, "source": "campaign"}
    code, _, err = run(capsys, "guard", "thresholds", "set", "--guard", "roi", "--floor", "2.4", "--reason", "late",
                       "--user", "mia", "--expected-version", "0")
    assert code == 2 and "someone else" in err
    code, text, _ = run(capsys, "guard", "thresholds", "show", "--campaign", "c1")
    assert "floor=2.2 (campaign; file 2)" in text and "cooldown_s=900 (campaign; file 1800)" in text
    code, back, _ = run(capsys, "guard", "thresholds", "reset", "--campaign", "c1", "--reason", "over", "--user", "mia",
                        "--json")
    assert code == 0 and back["version"] == 2 and back["guards"]["roi"]["floor"]["source"] == "file"
    with cli_store.connect() as conn:
        actions = [e.action for e in repo.load_audit(conn, entity="guard_thresholds")]
    assert actions == ["guard.thresholds_set", "guard.thresholds_reset"]


# --- panel -----------------------------------------------------------------------------------------

def zh(key: str, **values) -> str:
    return i18n.translate("zh", key, **values)


def _thresholds_panel(control, role: str, campaign_id: str) -> Panel:
    panel = Panel(control).login(role).open("guards")
    panel.at.selectbox(key="gd_campaign").set_value(campaign_id)
    panel.run()
    panel.at.radio(key="th_scope").set_value("campaign")
    return panel.run()


def _submit(panel: Panel, key: str) -> Panel:
    next(b for b in panel.at.get("form_submit_button") if b.key == key).click()
    return panel.run()


def _floor_input(panel: Panel):
    return next(n for n in panel.at.number_input if n.label == zh("th.floor"))


def _shown_floor(panel: Panel) -> float:
    frame = next(d.value for d in panel.at.dataframe if zh("gd.th_field") in d.value.columns)
    return float(frame.set_index(zh("gd.th_field")).loc[zh("th.floor"), zh("gd.th_value")])


def test_panel_a_manager_saves_a_floor_an_operator_sees_it_read_only(tmp_path):
    control, seeded, _ = seeded_control(tmp_path)
    target = seeded.campaigns[2]
    panel = _thresholds_panel(control, "manager", target)
    assert _shown_floor(panel) == 2.0
    _floor_input(panel).set_value(-1.0)
    panel.at.text_input(key="th_reason").input("thin margin")
    _submit(panel, "th_save")
    assert any(f"roi.campaigns.{target}.floor" in e and "-1.0" in e for e in panel.errors())
    _floor_input(panel).set_value(2.4)
    panel.at.text_input(key="th_reason").input("thin margin")
    _submit(panel, "th_save")
    assert zh("gd.th_saved") in panel.texts() and _shown_floor(panel) == 2.4 and _floor_input(panel).value == 2.4
    panel.at.selectbox(key="gd_campaign").set_value(seeded.campaigns[3])
    assert _floor_input(panel.run()).value == 2.0  # another campaign's form starts from its own values
    panel.at.selectbox(key="gd_campaign").set_value(target)
    panel.run()
    service = GuardService(control.engine, control.clock, parse_guard_settings(), PoolBounds())
    assert service.thresholds(target)["guards"]["roi"]["floor"]["source"] == FROM_CAMPAIGN
    with control.engine.connect() as conn:
        entry = repo.load_audit(conn, entity="guard_thresholds")[-1]
    assert (entry.actor, entry.after["values"]["roi"]["floor"], entry.after["reason"]) == ("manager", 2.4, "thin margin")
    assert room_for(control).roi_floors(MANAGER, [target, seeded.campaigns[3]]) == \
        {target: 2.4, seeded.campaigns[3]: 2.0}

    # Someone else saves first: this manager's next save is a conflict, shown as one.
    service.set_thresholds(next(u for u in control.users() if u.username == "manager2"),
                           edit({"hysteresis": 0.5}, target))
    _floor_input(panel).set_value(2.6)
    panel.at.text_input(key="th_reason").input("higher")
    _submit(panel, "th_save")
    assert any(zh("err.conflict", detail="").strip() in e for e in panel.errors())
    assert service.thresholds(target)["guards"]["roi"]["floor"]["value"] == 2.4

    operator = _thresholds_panel(control, "operator", target)
    assert _shown_floor(operator) == 2.4 and zh("gd.th_read_only") in operator.texts()
    assert not operator.at.number_input
    assert not [b for b in operator.at.get("form_submit_button") if b.key in ("th_save", "th_reset")]
    operator_user = next(u for u in control.users() if u.username == "operator")
    with pytest.raises(PermissionDenied):
        service.set_thresholds(operator_user, edit({"floor": 1.5}, target))

    panel = _thresholds_panel(control, "manager", target)
    panel.at.text_input(key="th_reason").input("promotion over")
    _submit(panel, "th_reset")
    assert zh("gd.th_reset_done", campaign=target) in panel.texts() and _shown_floor(panel) == 2.0
