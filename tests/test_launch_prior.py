"""The guard starts armed: a launched version's gate calibration is the guard's prior, in the worker (the
store's models.meta) and in a stress run; the ledger and the alert say when a trip leaned on it."""

from __future__ import annotations

import pytest
import sim_support
from sqlalchemy import select

from app.stress_guard import make_guard_hook
from control.domain import GuardMode
from guards.alert_bridge import enqueue_guard_alert
from guards.config import ObserveConfig
from guards.handlers import WORKER_ACTOR, record_events
from guards.machine import GuardTripped
from guards.observe import CalibrationPrior
from sim.scenario import load_scenario
from sim.stress import run_arm
from store import schema as s
from tests.helpers import PROMOTION_START, seed_campaigns


def test_a_trip_that_leaned_on_the_prior_says_so_in_the_ledger_and_the_alert(engine):
    seed_campaigns(engine)
    figures = (("floor", 2.0), ("pred_roi", 2.7), ("bought_pred_roi", 2.6), ("model_calibration", 0.7),
               ("model_calibration_upper", 0.74), ("calibration_prior_share", 0.62), ("spend_per_hour", 900.0))
    event = GuardTripped(guard="roi", campaign_id="c1", ts=PROMOTION_START + 120, mode_before=GuardMode.MODEL,
                         mode_after=GuardMode.TRIPPED, figures=figures, cause="model_calibration",
                         detection_delay_s=0)
    with engine.begin() as conn:
        record_events(conn, [event], actor=WORKER_ACTOR, observe=ObserveConfig(), alert_sink=enqueue_guard_alert)
    with engine.connect() as conn:
        details = conn.execute(select(s.guard_trips.c.details)).scalar_one()
        payload = conn.execute(select(s.alerts.c.payload)).scalars().first()
    assert details["leaned_on_prior"] is True and details["prior_share"] == 0.62
    assert payload["prior_share"] == 0.62
    assert "launch gate's calibration prior: 62%" in payload["detail"]["en"]
    assert "上线闸门" in payload["detail"]["zh"]


@pytest.mark.slow
def test_on_818_the_prior_arms_the_guard_before_live_outcomes_can():
    """The GMV model's gate measured k = 0.79 on held-out history (docs/LAUNCH.md): with it the guard trips
    campaigns in the first two minutes of 818, where without it the pooled evidence is still too thin."""
    scenario = load_scenario("818")
    kit = sim_support.full_kit()
    first = {}
    for name, prior in (("none", None), ("gate", CalibrationPrior(0.79, 150.0))):
        hook = make_guard_hook(scenario, kit.catalog, prior)
        run_arm(scenario, 1, kit.bidders, kit.history, kit.pool, guard_hook=hook, minutes=4)
        first[name] = {c for c, minute in hook.trips if minute <= 2}
        if prior is not None:
            shares = [dict(e.figures)["calibration_prior_share"] for e in hook.evaluator.trips]
            assert shares and all(0 < x <= 1 for x in shares)
    assert not first["none"] and len(first["gate"]) >= 5
