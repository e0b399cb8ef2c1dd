"""The white-box leak risk: explanations and exports are strategy, so who sees and takes them out is a
permission, enforced in the core; every export is stamped and audited."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from app.exports import Stamp, stamped_csv, stamped_html
from control.domain import InvalidValue, Role, User
from control.permissions import GRANTABLE, PERMISSIONS, Action, PermissionDenied, allowed
from store import repo
from tests.panel_support import room_for, seeded_control


def _user(control, name: str) -> User:
    return next(u for u in control.users() if u.username == name)


@pytest.fixture
def seeded(tmp_path):
    return seeded_control(tmp_path)


def _slot(control, seeded):
    room = room_for(control)
    campaign = seeded.tripped[0]
    package = sorted(room.packages(_user(control, "manager")))[0]
    return room, campaign, package, room.latest_bucket(_user(control, "manager"))


def test_raw_explanations_are_for_engineers_and_managers_by_default():
    detail = {r for r, actions in PERMISSIONS.items() if Action.VIEW_EXPLANATION_DETAIL in actions}
    export = {r for r, actions in PERMISSIONS.items() if Action.EXPORT in actions}
    assert detail == export == {Role.ENGINEER, Role.MANAGER}
    assert {Action.VIEW_EXPLANATION_DETAIL, Action.EXPORT} == GRANTABLE
    op = User("o", "O", Role.OPERATOR)
    assert not allowed(op, Action.VIEW_EXPLANATION_DETAIL)
    assert allowed(User("o", "O", Role.OPERATOR, grants=frozenset({"view_explanation_detail"})),
                   Action.VIEW_EXPLANATION_DETAIL)
    assert not allowed(User("o", "O", Role.OPERATOR, grants=frozenset({"approve_override"})),
                       Action.APPROVE_OVERRIDE)  # only what is grantable can be granted


def test_the_core_refuses_an_operator_the_contributions_and_gives_the_reasons_in_words(seeded):
    control, data, _ = seeded
    room, campaign, package, bucket = _slot(control, data)
    operator, engineer = _user(control, "operator"), _user(control, "engineer")
    for read in (lambda u: room.explanation(u, campaign, package, bucket, "en"),
                 lambda u: room.explanation_window(u, bucket - 3600, bucket + 1),
                 lambda u: room.decision_model(u, campaign, package, bucket)):
        with pytest.raises(PermissionDenied):
            read(operator)
        read(engineer)  # allowed
    words = room.decision_reasons(operator, campaign, package, bucket, "en")
    detail = room.decision_reasons(engineer, campaign, package, bucket, "en")
    assert not words.detailed and detail.detailed and len(words.reasons) == len(detail.reasons) > 0
    assert not any("¥" in r for r in words.reasons) and all("¥" in r for r in detail.reasons if "Bid" in r)
    assert "contributions" not in words.decision and words.decision["bid"] == detail.decision["bid"]


def test_a_grant_opens_the_detail_at_once_and_its_withdrawal_closes_it_at_once(seeded):
    control, data, _ = seeded
    room, campaign, package, bucket = _slot(control, data)
    operator, admin, manager = _user(control, "operator"), _user(control, "admin"), _user(control, "manager")
    with pytest.raises(PermissionDenied):
        control.set_grant(manager, "operator", Action.VIEW_EXPLANATION_DETAIL, True)  # admins grant
    with pytest.raises(InvalidValue, match="action"):
        control.set_grant(admin, "operator", Action.APPROVE_OVERRIDE, True)
    control.set_grant(admin, "operator", Action.VIEW_EXPLANATION_DETAIL, True)
    assert room.explanation(operator, campaign, package, bucket, "en") is not None  # the session's User is stale: the store counts
    control.set_grant(admin, "operator", Action.VIEW_EXPLANATION_DETAIL, False)
    with pytest.raises(PermissionDenied):
        room.explanation(operator, campaign, package, bucket, "en")
    with control.engine.connect() as conn:
        grants = [(e.action, e.after["grants"]) for e in repo.load_audit(conn, entity="user") if "grant" in e.action]
    assert grants == [("user.grant", ["view_explanation_detail"]), ("user.revoke_grant", [])]


def test_every_export_is_stamped_with_who_and_when_and_audited(seeded):
    control, _, clock = seeded
    room = room_for(control)
    manager, admin = _user(control, "manager"), _user(control, "admin")
    frame = pd.DataFrame({"entry_id": [1, 2], "action": ["a", "b"]})
    data = room.export_audit_csv(manager, frame, "en", {"actors": []})
    lines = data.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("# Exported by") and "(manager)" in lines[0] and lines[1] == "entry_id,action"
    assert pd.read_csv(io.BytesIO(data), comment="#", encoding="utf-8-sig")["action"].tolist() == ["a", "b"]
    with pytest.raises(PermissionDenied):
        room.export_audit_csv(admin, frame, "en", {})  # admins read the trail; taking it out needs EXPORT
    review = room.review(manager, "2026-08-18", "2026-08-18")
    page = room.export_review(manager, review, "html", "zh").decode("utf-8")
    assert "导出人：" in page and "（manager）" in page
    report = {"scenario": "818", "seed": 1, "floor_roi": 2.0, "arms": {}, "trips": [], "false_trips": 0,
              "probation_failures": 0, "loss_avoided": None}
    doc = json.loads(room.export_stress_report(manager, report, "json", "en"))
    assert doc["export"]["exported_by"] == "manager" and doc["export"]["exported_ts"] == clock()
    with control.engine.connect() as conn:
        exports = repo.load_audit(conn, entity="export")
    assert [(e.actor, e.action) for e in exports] == [("manager", "export.audit_csv"), ("manager", "export.review_html"),
                                                      ("manager", "export.stress_report_json")]
    assert exports[0].after["rows"] == 2 and exports[0].after["exported_ts"] == clock()
    assert exports[2].after["scenario"] == "818" and exports[2].after["bytes"] > 0
    assert control.verify_audit().ok


def test_the_stamps_name_the_exporter_in_both_languages():
    stamp = Stamp("mia", "主管 Mia", 1_786_982_400)
    assert stamp.line("zh").startswith("导出人：主管 Mia（mia）· 导出时间：2026-08-18 00:00:00")
    assert "Exported by 主管 Mia (mia) at 2026-08-18 00:00:00" in stamp.line("en")
    assert stamped_html("<html><body><p>x</p></body></html>", stamp, "en").index("Exported by") < \
        stamped_html("<html><body><p>x</p></body></html>", stamp, "en").index("<p>x")
    assert stamped_csv(pd.DataFrame({"a": [1]}), stamp).startswith("\ufeff# 导出人".encode())
