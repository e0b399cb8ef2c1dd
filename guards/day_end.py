"""The end of the promotion day for the guard worker: it evaluates nothing more and says so once.

The demo (or whoever starts a promotion day, app.service.Control.start_promotion_day)
records when the day ends (store.repo.promotion_day_end). After that a feed that has
stopped at midnight is not stale data, and no campaign trips on a day that has ended.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, func, select

from control.audit import AuditRecord
from control.domain import GuardMode
from store import repo
from store import schema as s

DAY_OVER_KEY = "guard_day_over"  # {"day_end_ts", "ts"}: the worker saw the day's end (and still sees it at ts)
# (conn, day_end_ts, trips, guards still holding their campaigns) -> None: tell people (guards.alert_bridge).
DayOverSink = Callable[[Connection, int, int, int], None]


def day_over(engine: Engine, now: int, actor: str, sink: DayOverSink | None, *,
             fence: Callable[[Connection], None] | None = None) -> int | None:
    """The end of the promotion day once it has passed (None: the day goes on).

    The first time it is seen it is audited and told through `sink`; a flag keeps that it
    was (and when the stopped worker last looked), so a restarted worker does not tell it again.
    `fence`: the worker's lease proof, last in the transaction (guards.worker.Lease.fence).
    """
    with engine.begin() as conn:
        end = repo.promotion_day_end(conn)
        if end is None or now < end:
            return None
        seen, _ = repo.get_flag(conn, DAY_OVER_KEY)
        if not isinstance(seen, dict) or seen.get("day_end_ts") != end:
            trips = conn.execute(select(func.count()).select_from(s.guard_trips)).scalar() or 0
            held = conn.execute(select(func.count()).select_from(s.guard_states).where(
                s.guard_states.c.mode.in_((GuardMode.TRIPPED.value, GuardMode.PROBATION.value)))).scalar() or 0
            repo.append_audit(conn, AuditRecord(now, actor, "guard.day_over", "guard", "*", None,
                                                {"day_end_ts": end, "trips": trips, "held": held}))
            if sink is not None:
                sink(conn, end, trips, held)
        repo.set_flag(conn, DAY_OVER_KEY, {"day_end_ts": end, "ts": now}, actor, now)
        if fence is not None:
            fence(conn)
    return end
