"""Shared pieces of the launch gate tests: registered versions, a gate report as app.gate writes it,
the people of a launch."""

from __future__ import annotations

from sqlalchemy import insert

from control.domain import Role, User
from control.gate import GateThresholds
from store import schema as s
from tests.helpers import add_users

ENGINEER = User("eng", "Ethan", Role.ENGINEER)
MANAGER = User("boss", "Mia", Role.MANAGER)
MANAGER2 = User("boss2", "Max", Role.MANAGER)
OPERATOR = User("op", "Olivia", Role.OPERATOR)
ADMIN = User("root", "Ada", Role.ADMIN)
PEOPLE = (ENGINEER, MANAGER, MANAGER2, OPERATOR, ADMIN)


def add_people(engine) -> None:
    """The people of a launch as users of the store (the core acts only for those; password helpers.PASSWORD)."""
    add_users(engine, *PEOPLE)


def register(engine, *versions: str, now_ts: int = 0, path: str = "/models") -> None:
    """Registered versions (as `bidlens explain model register` leaves them, without the artefact)."""
    with engine.begin() as conn:
        for v in versions:
            conn.execute(insert(s.models).values(model_version=v, path=f"{path}/{v}", created_ts=now_ts,
                                                 active=False, meta={"kind": "lightgbm", "variant": "roi"}))


def gate_report(version: str, verdict: str = "pass", reasons: tuple[dict, ...] = (),
                prior: dict | None = None) -> dict:
    """A gate report document with the fields app.gate writes (no scenario played)."""
    return {"model_version": version, "kind": "lightgbm", "variant": "roi", "serving_version": None,
            "serving_skipped": "", "seeds": [1], "minutes": 60, "scenarios": [], "stress_skipped": "",
            "objective": None, "calibration": {"k": None, "low": None, "high": None, "orders": 0.0},
            "explanation": {"rows": 0, "importance": [], "differs": None, "source": "stress"},
            "verdict": verdict, "reasons": list(reasons), "thresholds": GateThresholds().as_json(),
            "prior": prior, "seconds": 1.0}


FAILING = ({"code": "scenario_roi_below_floor", "level": "fail",
            "figures": {"scenario": "818", "seed": 1, "roi": 1.76, "floor": 2.0}},
           {"code": "objective_below_floor", "level": "fail",
            "figures": {"share": 0.89, "spend_share": 0.91, "max_share": 0.1}})
