"""Stress tests started from the panel: permission-checked, run in a background thread with progress.

The simulator's stress runner (sim.stress.run_stress) plays the scenario once per
arm: the model alone, the manual rule pool alone, and the model watched by the
guard (app.stress_guard); then each sibling breaker is judged alone
(app.stress_breakers). Progress is real for the guarded arm and the breakers (the
hooks are asked once per simulated minute); the baselines before them are one phase.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field

from app.stress_breakers import breakers_section
from app.stress_guard import make_guard_hook
from control.domain import User
from control.permissions import Action, require
from sim.catalog import DAY_START_TS
from sim.kit import prepare
from sim.report import campaign_frame, hourly_frame, report_dir, write_report  # noqa: F401 - the stress page draws the report from these
from sim.scenario import Scenario, ScenarioError, load_scenario, parse_scenario, shipped_scenarios
from sim.stress import run_stress

VARIANTS = ("scenario", "roi", "gmv")  # the scenario's own bidder, or one variant of the reference model

PHASES = ("preparing", "baselines", "guarded", "breakers", "done", "failed")


@dataclass
class StressJob:
    scenario: str
    seed: int
    minutes: int
    started_by: str
    started: float = field(default_factory=time.time)
    phase: str = "preparing"
    progress: float = 0.0
    report: dict | None = None
    error: str = ""
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.phase not in ("done", "failed")


class _Progress:
    """Wraps the guard hook to report how far the guarded arm has played."""

    def __init__(self, hook, job: StressJob):
        self.hook = hook
        self.job = job

    def guard_states(self, now_ts, last):
        self.job.phase = "guarded"
        self.job.progress = 0.5 + min(1.0, (now_ts - DAY_START_TS) / 60 / self.job.minutes) / 4
        return self.hook.guard_states(now_ts, last)


def scenario_names() -> list[str]:
    return shipped_scenarios()


def chosen_scenario(name: str | None, upload: tuple[str, bytes] | None, variant: str) -> Scenario:
    """A shipped scenario by name, or an uploaded TOML file (file name, bytes), played by `variant`
    (VARIANTS: "scenario" keeps the scenario's own bidder). A bad file is a ScenarioError naming why."""
    if upload is not None:
        file_name, raw = upload
        try:
            scenario = parse_scenario(raw.decode("utf-8"), file_name)
        except UnicodeDecodeError as exc:
            raise ScenarioError(file_name, "<file>", None, f"not UTF-8 text: {exc.reason}") from None
    else:
        scenario = load_scenario(name or "")
    if variant not in VARIANTS:
        raise ScenarioError(scenario.name, "variant", variant, f"must be one of {list(VARIANTS)}")
    if variant != "scenario":
        scenario = dataclasses.replace(scenario, bidder=dataclasses.replace(scenario.bidder, variant=variant))
    return scenario


def start_stress(actor: User, scenario: Scenario, *, seed: int, minutes: int, data_dir: str) -> StressJob:
    """Start the stress test in the background; RUN_STRESS_TEST is required."""
    require(actor, Action.RUN_STRESS_TEST)
    job = StressJob(scenario.name, seed, minutes, actor.username)
    job.thread = threading.Thread(target=_run, args=(job, scenario, data_dir), daemon=True,
                                  name=f"stress-{scenario.name}-{seed}")
    job.thread.start()
    return job


def _run(job: StressJob, scenario: Scenario, data_dir: str) -> None:
    try:
        kit = prepare(scenario, data_dir)  # trains the bundled models on first use
        hook = _Progress(make_guard_hook(scenario, kit.catalog), job)
        job.phase, job.progress = "baselines", 0.05
        report = run_stress(scenario, job.seed, kit.bidders, kit.history, kit.pool, guard_hook=hook,
                            minutes=job.minutes)
        job.phase = "breakers"
        report["breakers"] = breakers_section(report, scenario, job.seed, kit, minutes=job.minutes,
                                              roi_hook=hook.hook,
                                              on_minute=lambda done: setattr(job, "progress", 0.75 + done / 4))
        write_report(report, report_dir(data_dir, scenario.name, job.seed))  # the guard page reads it there
        job.report = report
        job.phase, job.progress = "done", 1.0
    except Exception as exc:  # the page must say why a background run failed, not lose it with the thread
        job.phase, job.error = "failed", f"{type(exc).__name__}: {exc}"
