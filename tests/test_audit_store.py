"""The store on SQLite and PostgreSQL: migrations, batch writes, quarantine, audit chain."""

import json
import subprocess
import sys

import numpy as np
import pytest
from sqlalchemy import func, select, text, update

from control.domain import Role, User
from control.validation import validate_decisions, validate_outcomes
from store import repo
from store import schema as s
from store.migrate import pending
from tests.helpers import PROMOTION_START, add_users, decision_frame, seed_campaigns

MANAGER = User("mia", "Mia", Role.MANAGER)


def test_migrations_bring_the_schema_to_head(engine):
    assert not pending(engine)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(s.decisions)).scalar() == 0


def test_decisions_and_explanations_are_written_together(engine):
    frame = decision_frame(500)
    contributions = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    batch = repo.ExplanationBatch("v1", np.full(500, 0.25), contributions, np.ones((500, 4), np.float32))
    ids = repo.write_decisions(engine, frame, received_ts=PROMOTION_START, explanation=batch)
    more = repo.write_decisions(engine, frame.iloc[:10], received_ts=PROMOTION_START)
    assert len(set(ids) | set(more)) == 510
    with engine.connect() as conn:
        row = conn.execute(select(s.explanations).where(s.explanations.c.decision_id == int(ids[42]))).one()
        stored = conn.execute(select(s.decisions).where(s.decisions.c.decision_id == int(ids[42]))).one()
    assert np.array_equal(np.frombuffer(row.contributions, np.float32), contributions[42])
    assert stored.bid == frame.bid[42] and stored.decided_by == "model" and stored.audience_on is True


def test_outcomes_batch_write(engine):
    frame = decision_frame(4)[["campaign_id", "audience_package", "bucket_ts"]].assign(
        known_ts=PROMOTION_START + 300, impressions=100, clicks=3, spend=4.5, orders=1, gmv=120.0)
    assert repo.write_outcomes(engine, frame) == 4
    with engine.connect() as conn:
        assert conn.execute(select(func.sum(s.outcomes.c.gmv))).scalar() == 480.0


def test_refused_rows_are_kept_in_quarantine_with_their_reason(engine):
    frame = decision_frame(6)
    frame.loc[1, "bid"] = float("nan")
    frame.loc[2, "budget_share"] = 1.7
    frame.loc[3, "campaign_id"] = "nope"
    frame.loc[4, "bucket_ts"] = PROMOTION_START + 10 * 86400
    result = validate_decisions(frame, PROMOTION_START, known_campaigns={"c1", "c2", "c3"})
    assert [(r.row_index, r.field) for r in result.refused] == [
        (1, "bid"), (2, "budget_share"), (3, "campaign_id"), (4, "bucket_ts")]
    assert len(result.accepted) == 2
    with engine.begin() as conn:
        repo.write_quarantine(conn, "decision", "test", result.refused, PROMOTION_START)
    repo.write_decisions(engine, result.accepted, received_ts=PROMOTION_START)
    with engine.connect() as conn:
        kept = conn.execute(select(s.quarantine).order_by(s.quarantine.c.row_index)).all()
        stored = conn.execute(select(func.count()).select_from(s.decisions)).scalar()
    assert stored + len(kept) == 6
    assert kept[2].reason == "unknown campaign" and kept[2].value == "nope"
    assert kept[1].row["budget_share"] == 1.7


def test_outcome_validation_names_the_field():
    frame = decision_frame(3)[["campaign_id", "audience_package", "bucket_ts"]].assign(
        known_ts=PROMOTION_START, impressions=10, clicks=[1, 20, 1], spend=[1.0, 1.0, -2.0], orders=0, gmv=0.0)
    refused = validate_outcomes(frame, PROMOTION_START).refused
    assert [(r.row_index, r.field) for r in refused] == [(1, "clicks"), (2, "spend")]


def test_tampering_with_the_audit_trail_is_found(control, engine):
    seed_campaigns(engine)
    add_users(engine, MANAGER)
    for reason in ("storm", "calm", "storm again"):
        control.set_kill_switch(MANAGER, reason != "calm", reason)
    assert control.verify_audit().ok and control.verify_audit().entries == 3
    with engine.begin() as conn:
        conn.execute(update(s.audit_log).where(s.audit_log.c.entry_id == 2).values(actor="mallory"))
    report = control.verify_audit()
    assert (report.ok, report.first_broken_id) == (False, 2)


def test_deleting_an_audit_entry_is_found(control, engine):
    seed_campaigns(engine)
    add_users(engine, MANAGER)
    for reason in ("a", "b", "c"):
        control.set_kill_switch(MANAGER, True, reason)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE entry_id = 2"))
    report = control.verify_audit()
    assert (report.first_broken_id, report.code) == (2, "missing")


def _three_changes(control, engine) -> None:
    seed_campaigns(engine)
    add_users(engine, MANAGER)
    for reason in ("a", "b", "c"):
        control.set_kill_switch(MANAGER, True, reason)


@pytest.mark.parametrize("cut", ["DELETE FROM audit_log WHERE entry_id >= 3", "DELETE FROM audit_log"])
def test_cutting_the_newest_entries_or_all_of_them_is_found(control, engine, cut):
    """Issue 16: `audit verify` said "intact" after the last rows (or all rows) were deleted."""
    _three_changes(control, engine)
    assert control.verify_audit().ok  # ... and anchored entry 3 outside the store
    with engine.begin() as conn:
        conn.execute(text(cut))
    report = control.verify_audit()
    assert (report.ok, report.code) == (False, "truncated") and "entry 3" in report.problem
    assert report.first_broken_id == report.entries + 1


def test_an_edited_entry_with_the_chain_recomputed_is_found(control, engine):
    """Issue 16: `audit verify` said "intact" after a row was edited and the chain recomputed. Without the
    key outside the database, the recomputed hashes can only be plain ones (or the old key's)."""
    from control.audit import GENESIS_HASH, AuditRecord, entry_hash

    _three_changes(control, engine)
    assert control.verify_audit().ok
    with engine.begin() as conn:
        entries = repo.load_audit(conn)
        prev = GENESIS_HASH
        for e in entries:  # the attacker rewrites entry 2 and re-chains everything after it
            after = {**e.after, "reason": "nothing to see"} if e.entry_id == 2 else e.after
            record = AuditRecord(e.ts, e.actor, e.action, e.entity, e.entity_id, e.before, after)
            for key, key_id in ((None, None), (b"a guessed key", e.key_id)):
                new = entry_hash(prev, record, key)
                conn.execute(update(s.audit_log).where(s.audit_log.c.entry_id == e.entry_id)
                             .values(after=after, prev_hash=prev, hash=new, key_id=key_id))
            prev = new
    report = control.verify_audit()
    assert (report.ok, report.first_broken_id, report.code) == (False, 1, "contents")
    with engine.begin() as conn:  # unsigned, as if written before signing: the anchor still knows entry 3
        conn.execute(update(s.audit_log).values(key_id=None))
        prev = GENESIS_HASH
        for e in repo.load_audit(conn):
            new = entry_hash(prev, AuditRecord(e.ts, e.actor, e.action, e.entity, e.entity_id, e.before, e.after),
                             None)
            conn.execute(update(s.audit_log).where(s.audit_log.c.entry_id == e.entry_id)
                         .values(prev_hash=prev, hash=new))
            prev = new
    report = control.verify_audit()
    assert (report.ok, report.first_broken_id, report.code) == (False, 3, "anchor")


def test_the_key_and_anchors_stay_outside_the_store_and_the_key_is_never_printed(control, engine, tmp_path):
    from store.audit_files import audit_files, read_anchors

    _three_changes(control, engine)
    report = control.verify_audit()
    files = audit_files(engine)
    key = files.key.read_text().strip()
    assert report.ok and len(key) == 64 and oct(files.key.stat().st_mode & 0o777) == "0o600"
    assert [a.entry_id for a in read_anchors(files.anchors)] == [3]
    with engine.connect() as conn:
        stored = " ".join(str(tuple(r)) for r in conn.execute(text("SELECT * FROM audit_log")))
    assert key not in stored and key not in str(control.settings.public_items())
    files.key.rename(files.key.with_suffix(".gone"))  # verification reads the key; it never makes one
    assert control.verify_audit().code == "no_key"


def test_kill_switch_needs_a_manager_and_a_reason(control, engine):
    seed_campaigns(engine)
    operator = User("o", "O", Role.OPERATOR)
    add_users(engine, MANAGER, operator)
    from control.domain import InvalidValue
    from control.permissions import PermissionDenied
    with pytest.raises(PermissionDenied):
        control.set_kill_switch(operator, True, "panic")
    with pytest.raises(InvalidValue):
        control.set_kill_switch(MANAGER, True, "  ")
    control.set_kill_switch(MANAGER, True, "c2 burns money", campaign_id="c2")
    assert control.kill_switch().covers("c2") and not control.kill_switch().covers("c1")


def test_cli_audit_verify_names_the_broken_entry(tmp_path):
    env = {"BIDLENS_DATA_DIR": str(tmp_path), "BIDLENS_DEMO_PASSWORD": "demo-pass-123", "PATH": "/usr/bin:/bin"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "cli.main", *a], env=env, capture_output=True,
                                   text=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    init = run("init", "--demo-users", "--json")
    assert init.returncode == 0, init.stderr
    assert len(json.loads(init.stdout)["users_created"]) == 6
    ok = run("audit", "verify", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["entries"] == 6
    from store.engine import make_engine
    engine = make_engine(f"sqlite:///{tmp_path / 'bidlens.db'}")
    with engine.begin() as conn:
        conn.execute(update(s.audit_log).where(s.audit_log.c.entry_id == 4).values(after={"role": "admin"}))
    broken = run("audit", "verify", "--json")
    assert broken.returncode == 1 and json.loads(broken.stdout)["first_broken_id"] == 4
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log"))
    cut = run("audit", "verify")
    assert cut.returncode == 1 and "entries 1 to 6 are gone" in cut.stdout
