"""`bidlens demo`: a live promotion on the embedded store, watched by the guard and the panel.

One command starts everything a new user needs to see the product work:

- the store (migrated), one demo user per role (passwords printed),
- a new promotion day on an accelerated clock anchored in the store, so every
  process reads the same promotion time,
- the simulator playing the `demo` scenario (an "818"-style incident a few
  simulated minutes in) as the bidder, explaining every decision as it is made,
- the guard worker (its own process), which trips campaigns to the manual rule
  pool and sends the alerts,
- a local WeCom-protocol robot that prints every alert message (unless
  BIDLENS_ALERTS_CONFIG points at real robots),
- the panel (Streamlit), and with `--api` the bidder HTTP API, which the simulator
  then plays through as an external bidder (policy polled, decisions and outcomes
  posted, explained by the API at ingest).

Ctrl-C stops them all.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from api.client import BidLensClient
from api.sim_bidder import ApiBidder
from app.demo_day import DEMO_KEY_ENV, demo_alerts_config, ensure_rule_pool
from app.explanations import reference_formulas
from app.launch import Launches
from app.service import Control
from app.tokens import TokenRole, Tokens
from cli.output import fail
from cli.store_cmds import ensure_demo_users
from control.clock import AcceleratedClock, system_clock
from control.config import load_settings
from explain.store import explain_hook, record_bid_formula
from sim.catalog import BUCKET_SECONDS, DAY_START_TS, MINUTES_PER_DAY
from sim.kit import prepare
from sim.live import register_catalog, run_live
from sim.scenario import load_scenario
from store import repo
from store.engine import open_store
from store.launch_repo import LAUNCH_GATE_KEY

ROOT = Path(__file__).resolve().parents[1]


def start(name: str, args: list[str], env: dict, log_dir: Path) -> subprocess.Popen:
    log = open(log_dir / f"demo-{name}.log", "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the child
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def api_bidder_for(control: Control, port: int, api: subprocess.Popen, stop: threading.Event) -> ApiBidder:
    """The simulator as an external bidder of the demo's API, with a bidder token of its own."""
    _, secret = Tokens(control.engine, control.clock).create_for_machine(TokenRole.BIDDER, "bidlens demo simulator")
    client = BidLensClient(f"http://127.0.0.1:{port}", secret)
    while not client.ready():
        if api.poll() is not None or stop.wait(0.5):
            raise RuntimeError(f"the bidder API did not start (exit {api.returncode})")
    return ApiBidder(client)


def demo_launch_gate(control: Control) -> None:
    """The demo replays 818 as it happened: the GMV model switched on without a gate. So the first demo
    on a store has its admin switch the launch gate off (audited); switched on again in the panel or
    with `bidlens model gate-switch on`, it stays on, and the GMV model's decisions through the API are
    then quarantined."""
    with control.engine.connect() as conn:
        _, version = repo.get_flag(conn, LAUNCH_GATE_KEY)
    if version == 0:
        admin = next(u for u in control.users() if u.username == "admin")
        Launches(control.engine, control.clock, control.settings).set_gate(
            admin, False, "bidlens demo replays 818: a model switched on without a launch gate")


def cmd_demo(args) -> int:
    settings = load_settings()
    speed = args.speed or settings.demo_speed
    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = open_store(settings.database_url)
    control = Control(engine, system_clock, settings)
    created = ensure_demo_users(control, settings.demo_password)

    print("preparing the simulated promotion (the first time trains the reference models) ...", flush=True)
    scenario = load_scenario(args.scenario)
    kit = prepare(scenario, settings.data_dir)
    register_catalog(engine, kit, f"{settings.data_dir}/models")
    demo_launch_gate(control)
    formulas = reference_formulas(scenario.bidder, kit.bidders)
    explain = explain_hook((b.artifact for b in kit.bidders.values()), formulas)  # before the clock starts
    cleared = control.start_promotion_day(None, "bidlens demo: a new promotion day",
                                          ends_ts=DAY_START_TS + MINUTES_PER_DAY * BUCKET_SECONDS)
    ensure_rule_pool(engine, system_clock())
    with engine.begin() as conn:
        for version, formula in formulas.items():  # also for the API, which explains at ingest with --api
            record_bid_formula(conn, version, formula, "system", system_clock())
        clock = AcceleratedClock(DAY_START_TS + args.start_minute * 60, time.time(), speed)
        repo.set_flag(conn, repo.DEMO_CLOCK_KEY, clock.anchor(), "system", system_clock())

    env = dict(os.environ, BIDLENS_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    # Alert links must open this panel (unless a public URL is configured).
    env.setdefault("BIDLENS_PANEL_URL", f"http://localhost:{settings.panel_port}")
    python = sys.executable
    # From here on SIGTERM and SIGINT (also when started in the background, where SIGINT arrives
    # ignored) stop the day and then every part: a part started after a default-action signal would
    # outlive the demo.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    children: dict[str, subprocess.Popen] = {}
    try:
        if not settings.alerts_config:
            env[DEMO_KEY_ENV] = secrets.token_hex(16)
            env["BIDLENS_ALERTS_CONFIG"] = str(demo_alerts_config(
                data_dir, f"http://127.0.0.1:{args.robot_port}/cgi-bin/webhook/send"))
            children["robot"] = start("robot", [python, "-m", "cli.main", "alerts", "local-robot",
                                                "--port", str(args.robot_port), "--key-env", DEMO_KEY_ENV],
                                      env, data_dir)
        children["guard"] = start("guard", [python, "-m", "cli.main", "guard", "run"], env, data_dir)
        children["panel"] = start("panel", [  # settings in .streamlit/config.toml (cwd is the repo root)
            python, "-m", "streamlit", "run", str(ROOT / "panel" / "app.py"),
            "--server.port", str(settings.panel_port)], env, data_dir)
        if args.api:
            children["api"] = start("api", [python, "-m", "cli.main", "api", "--port", str(settings.api_port)],
                                    env, data_dir)

        print(f"\nBidLens demo — open http://localhost:{settings.panel_port}")
        print(f"  promotion clock: {speed:g} simulated s per real s; scenario {args.scenario}; "
              f"cleared the previous day ({cleared} rows)")
        for user in created:
            print(f"  user {user['username']:<10} {user['role']:<9} password: {user['password']}")
        if not created:
            print("  demo users exist already (passwords as printed when they were made; "
                  "`bidlens user add` makes more)")
        if "robot" in children:
            print(f"  WeCom alerts go to a local robot on port {args.robot_port}: {data_dir}/demo-robot.log")
        if args.api:
            print(f"  bidder API: http://localhost:{settings.api_port}/docs (the simulator bids through it)")
        print(f"  logs: {data_dir}/demo-*.log — Ctrl-C stops everything\n", flush=True)

        def watch_children() -> None:
            while not stop.wait(2):
                for name, child in children.items():
                    if child.poll() is not None:
                        print(f"demo: {name} stopped (exit {child.returncode}); "
                              f"see {data_dir}/demo-{name}.log", file=sys.stderr, flush=True)
                        stop.set()

        threading.Thread(target=watch_children, daemon=True).start()
        api_bidder = api_bidder_for(control, settings.api_port, children["api"], stop) if args.api else None
        summary = run_live(engine, settings, clock, speed, stop, scenario=args.scenario, seed=args.seed,
                           explain=explain, bidder=api_bidder)
        played = f"{summary.buckets} minutes, {summary.decisions} decisions"
        print(f"demo: stopped after {played}" if stop.is_set() else f"demo: promotion day over: {played}",
              flush=True)
        if not args.exit_at_end:
            stop.wait()
    finally:
        stop.set()
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    return 0 if all(c.returncode in (0, -signal.SIGTERM) for c in children.values()) else fail("a part failed", 1)


def register(sub) -> None:
    p = sub.add_parser("demo", help="run a live simulated promotion with the guard worker and the panel")
    p.add_argument("--scenario", default="demo", help="scenario name (see `bidlens scenarios`)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--speed", type=float, default=None,
                   help="simulated seconds per real second (default BIDLENS_DEMO_SPEED)")
    p.add_argument("--start-minute", type=int, default=0, help="start the day at this minute")
    p.add_argument("--robot-port", type=int, default=8700, help="port of the local WeCom robot")
    p.add_argument("--api", action="store_true",
                   help="serve the bidder HTTP API and play the simulator through it as an external bidder")
    p.add_argument("--exit-at-end", action="store_true", help="stop when the promotion day is over")
    p.set_defaults(func=cmd_demo)
