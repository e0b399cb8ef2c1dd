"""The SHAP drivers of a drop, for guard alerts (guards.handlers.DriversFn).

Compares the campaign's stored explanations (in bid units, explain.store.load_window)
of the last `recent_s` before the event with the rest of the hour before it:
the features whose mean contribution to the bid moved most are what changed the
model's mind. Empty when the window has no explanations or mixes model versions
with different features (a model switch is its own explanation).
"""

from __future__ import annotations

from sqlalchemy import Connection

from explain.analysis import diff_windows
from explain.store import load_window

RECENT_S = 900
TOP = 5


def trip_drivers(conn: Connection, campaign_id: str, since_ts: int, now_ts: int) -> list[dict]:
    """[{feature, display_zh, display_en, delta}] ranked by |delta| (yuan per click of bid)."""
    split = max(since_ts + 60, now_ts - RECENT_S)
    try:
        before = load_window(conn, since_ts, split, campaign_id=campaign_id)
        after = load_window(conn, split, now_ts + 1, campaign_id=campaign_id)
    except ValueError:
        return []
    if len(before.decisions) == 0 or len(after.decisions) == 0 or before.features != after.features:
        return []
    ranked = diff_windows(before.contributions, after.contributions, before.features).head(TOP)
    return [{"feature": r.feature, "display_zh": r.label_zh, "display_en": r.label_en,
             "delta": round(float(r.delta), 4)} for r in ranked.itertuples()]
