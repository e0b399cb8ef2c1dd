"""The biweekly review on a demo day: its figures against the trip ledger, the audit trail and the outcomes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import sim_support
from sqlalchemy import select, text

from app.alert_desk import acknowledge_alert
from app.ingest import Kind, ingest_frame
from app.service import Control
from app.wiring import control_room
from cli.main import main
from control.clock import ManualClock
from control.config import Settings
from control.domain import InvalidValue, OverrideField, OverrideScope, Role
from control.permissions import PermissionDenied
from guards.alert_bridge import enqueue_guard_alert
from guards.alerts import list_alerts
from guards.config import parse_guard_settings
from guards.worker import GuardWorker
from sim.catalog import DAY_START_TS
from sim.engine import Simulation
from sim.kit import prepare
from sim.live import register_catalog, step_live
from sim.scenario import load_scenario
from store import repo
from store import schema as s
from store.engine import open_store

MINUTES = 80
USERS = (("olivia", Role.OPERATOR), ("mia", Role.MANAGER), ("max", Role.MANAGER), ("ethan", Role.ENGINEER))


def _prices(minute: int) -> pd.DataFrame:
    """c10's competitor cuts 25% from minute 20 to 45; c11's only 5% (no pull)."""
    cut = 0.75 if 20 <= minute < 45 else 1.0
    return pd.DataFrame({"campaign_id": ["c10", "c11"], "competitor": ["shop-a", "shop-a"],
                         "observed_ts": DAY_START_TS + 60 * minute + 60, "price": [300.0 * cut, 95.0],
                         "reference_price": [300.0, 100.0]})


@pytest.fixture(scope="module")
def demo_day(tmp_path_factory):
    """The demo scenario's first MINUTES minutes in a store, with the guard worker, overrides proposed and
    reviewed by people, a competitor price feed, and alerts acknowledged seven minutes after they fire."""
    folder = tmp_path_factory.mktemp("review")
    engine = open_store(f"sqlite:///{folder / 'bidlens.db'}")
    clock = ManualClock(DAY_START_TS)
    control = Control(engine, clock, Settings(data_dir=str(folder)))
    users = {name: control.add_user(None, name, name.title(), role, "correct horse battery") for name, role in USERS}
    scenario = load_scenario("demo")
    kit = prepare(scenario, sim_support._DATA_DIR)
    register_catalog(engine, kit, "models")
    sim = Simulation(scenario, 1, kit.bidders, kit.history, pool=kit.pool)
    worker = GuardWorker(engine, clock, parse_guard_settings(), expire_overrides=control.expire_overrides,
                         alert_sink=enqueue_guard_alert)
    proposals = {}
    for minute in range(MINUTES):
        result, _, _ = step_live(engine, sim)
        ingest_frame(engine, Kind.COMPETITOR_PRICE, _prices(minute), now_ts=result.now_ts, source="test",
                     quarantine_source="test", known_campaigns=None)
        clock.now_ts = result.now_ts + 1
        if minute in (10, 11, 12):
            campaign = {10: "c20", 11: "c21", 12: "c22"}[minute]
            with engine.connect() as conn:  # 10% under the model's bid: the override still buys clicks
                bid = min(0.9 * control.latest_model_bid(conn, OverrideScope(campaign)), 45.0)
            proposals[campaign] = control.propose_override(
                users["olivia"], campaign_id=campaign, audience_package=None, field=OverrideField.BID, value=bid,
                reason="cool it", expires_ts=clock.now_ts + 30 * 60)
        if minute == 14:
            control.approve_override(users["mia"], proposals["c20"].override_id, 1)
            control.reject_override(users["max"], proposals["c21"].override_id, 1)  # c22 is left to expire
        worker.tick()
        with engine.connect() as conn:
            due = [a for a in list_alerts(conn, limit=None) if a.acked_ts is None and a.resolved_ts is None
                   and a.phase.value == "firing" and not a.payload.get("repeat_of")
                   and clock.now_ts - a.occurred_ts >= 7 * 60]
        for alert in due:
            if alert.acked_ts is None and not _acked(engine, alert.alert_id):
                acknowledge_alert(control, users["mia"], alert.alert_id, source="test")
    return folder, engine, control, users


def _acked(engine, alert_id: int) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(s.alerts.c.acked_ts).where(s.alerts.c.alert_id == alert_id)).scalar() is not None


def _review(folder, monkeypatch, capsys, *args: str) -> tuple[int, dict | str]:
    """`bidlens review` of the demo day: (exit code, the JSON printed, or the error)."""
    monkeypatch.setenv("BIDLENS_DATA_DIR", str(folder))
    monkeypatch.setenv("BIDLENS_DB_URL", f"sqlite:///{folder / 'bidlens.db'}")
    monkeypatch.delenv("BIDLENS_ALERTS_CONFIG", raising=False)
    monkeypatch.setenv("BIDLENS_PASSWORD", "correct horse battery")
    code = main(["review", "--from", "2026-08-18", "--to", "2026-08-18", "--json", *args])
    printed = capsys.readouterr()
    return code, json.loads(printed.out) if code == 0 else printed.err


@pytest.mark.slow
def test_the_review_of_a_demo_day_agrees_with_the_ledger_the_audit_and_the_outcomes(demo_day, monkeypatch, capsys):
    folder, engine, control, _ = demo_day
    code, review = _review(folder, monkeypatch, capsys)
    assert code == 0 and _review(folder, monkeypatch, capsys, "--user", "ethan")[1] == review
    with engine.connect() as conn:
        ledger = pd.DataFrame([r._mapping for r in conn.execute(select(s.guard_trips))])
        audit = repo.load_audit(conn)
        profit = conn.execute(text(
            "SELECT SUM(o.gmv * c.gross_margin - o.spend) FROM outcomes o JOIN campaigns c "
            "ON c.campaign_id = o.campaign_id")).scalar()
        failed = conn.execute(text("SELECT guard, COUNT(*) FROM guard_events WHERE kind = 'probation_failed' "
                                   "GROUP BY guard")).all()
    # Breakers: the ledger, guard by guard (the ROI guard and the competitor price guard both acted).
    by_guard = {b["guard"]: b for b in review["breakers"]["by_guard"]}
    assert {"roi", "competitor"} <= set(by_guard)
    for guard, rows in ledger.groupby("guard"):
        closed = rows[rows["restored_ts"].notna()]
        assert by_guard[guard]["interceptions"] == len(rows)
        assert by_guard[guard]["restored"] == len(closed) and by_guard[guard]["open"] == len(rows) - len(closed)
        assert by_guard[guard]["loss_avoided"] == pytest.approx(closed["loss_avoided"].fillna(0).sum(), abs=0.01)
    assert {g: b["announced_again"] for g, b in by_guard.items() if b["announced_again"]} == dict(failed)
    competitor = [t for t in review["breakers"]["trips"] if t["guard"] == "competitor"]
    assert [(t["campaign_id"], t["action"]) for t in competitor] == [("c10", "pause")]
    assert competitor[0]["restored_ts"] is not None
    # Overrides: the audit trail's lifecycle entries.
    events = pd.Series([e.action for e in audit])
    assert review["overrides"]["counts"] == {e: int((events == f"override.{e}").sum())
                                             for e in ("propose", "approve", "reject", "revoke", "expire")}
    assert review["overrides"]["counts"] == {"propose": 3, "approve": 1, "reject": 1, "revoke": 0, "expire": 2}
    served = {r["campaign_id"]: r for r in review["overrides"]["rows"]}
    assert served["c20"]["served_spend"] > 0 and served["c20"]["profit_effect"] is not None
    assert served["c21"]["served_spend"] == 0
    # Alerts: every acknowledgement in the audit, with its time to acknowledge.
    acks = [e.after["time_to_ack_s"] for e in audit if e.action == "alert.ack"]
    overall = review["alerts"]["overall"]
    assert overall["acked"] == len(acks) > 0 and overall["acked_in_target"] == len(acks)
    assert overall["ack_median_s"] == pytest.approx(float(np.median(acks)))
    # The joint KPI: operations' profit from the outcomes, and the algorithm team's 30%.
    assert review["kpi"]["operations_profit"] == pytest.approx(profit, abs=1.0)
    assert review["kpi"]["algorithm_profit"] == pytest.approx(0.3 * profit, abs=1.0)
    # Models: the roi model served from midnight, the 818-style one from minute 5; the rule pool served too.
    assert len(review["models"]["versions"]) == 2 and review["models"]["iteration_days"] == [round(5 / 1440, 2)]
    assert {r["decided_by"] for r in review["authorities"]} >= {"model", "rule_pool", "override"}


@pytest.mark.slow
def test_exporting_the_review_needs_the_permission_and_is_stamped_and_audited(demo_day, monkeypatch, capsys, tmp_path):
    folder, engine, control, users = demo_day
    code, error = _review(folder, monkeypatch, capsys, "--user", "olivia", "--out", str(tmp_path / "op"))
    assert code == 2 and "olivia (operator) may not export" in error
    code, error = _review(folder, monkeypatch, capsys, "--out", str(tmp_path / "anyone"))
    assert code == 2 and "--user" in error
    code, _ = _review(folder, monkeypatch, capsys, "--user", "mia", "--out", str(tmp_path / "mia"))
    assert code == 0
    files = sorted(p.name for p in (tmp_path / "mia").iterdir())
    assert files == ["review-2026-08-18-2026-08-18.en.html", "review-2026-08-18-2026-08-18.json",
                     "review-2026-08-18-2026-08-18.zh.html"]
    zh = (tmp_path / "mia" / files[2]).read_text(encoding="utf-8")
    assert "导出人：Mia（mia）" in zh and "双周复盘" in zh and "vega" in zh.lower()
    doc = json.loads((tmp_path / "mia" / files[1]).read_text(encoding="utf-8"))
    assert doc["export"]["exported_by"] == "mia" and doc["kpi"]["operations_profit"]
    with engine.connect() as conn:
        exports = [e for e in repo.load_audit(conn, entity="export")]
    assert [(e.actor, e.action) for e in exports] == [("mia", "export.review_json"), ("mia", "export.review_html"),
                                                       ("mia", "export.review_html")]
    assert exports[0].after["period"]["from"] == "2026-08-18" and exports[0].after["exported_by"] == "mia"
    # A bad period is refused naming the field.
    monkeypatch.setenv("BIDLENS_DB_URL", f"sqlite:///{folder / 'bidlens.db'}")
    room = control_room(control)
    with pytest.raises(InvalidValue, match="to"):
        room.review(users["mia"], "2026-08-18", "2026-08-17")
    with pytest.raises(PermissionDenied):
        room.export_review(users["olivia"], room.review(users["olivia"], "2026-08-18", "2026-08-18"), "json", "zh")
