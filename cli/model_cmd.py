"""`bidlens model ...`: the launch gate (docs/LAUNCH.md). Gate a version, read its report, request and
approve its launch under four eyes, roll back, retire; the gate's thresholds and switch; and held-out
history from the simulator for a gate to calibrate on."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from cli.auth import REFUSALS as LOGIN_REFUSALS
from cli.auth import add_login, login
from cli.output import add_json_flag, emit, fail
from control.config import load_settings
from control.domain import NotFound
from control.launch import LaunchStateError, LaunchStatus
from control.overrides import FourEyesViolation

REFUSALS = (*LOGIN_REFUSALS, FourEyesViolation, LaunchStateError, NotFound)


def _open():
    from app.launch import Launches
    from app.wiring import open_control

    control = open_control()
    return control, Launches(control.engine, control.clock, control.settings)


def _actor(control, username: str | None):
    return None if username is None else login(control, username)


def _reasons_text(reasons: list[dict]) -> list[str]:
    from control.gate import Reason, reason_text
    return [f"  - [{r['level']}] {reason_text(Reason.from_json(r), 'en')}" for r in reasons]


def _report_text(gate, report: dict) -> str:
    lines = [f"gate report {gate.gate_id} for {gate.model_version}: {gate.verdict.value.upper()} "
             f"({gate.seconds:.0f} s, by {gate.created_by})", *_reasons_text(gate.reasons)]
    for s in report["scenarios"]:
        arms = ", ".join(f"{role} ROI {a['roi']} profit {a['profit']:,.0f} below floor {a['campaigns_below_floor']}"
                         for role, a in s["arms"].items())
        lines.append(f"  {s['scenario']} (seed {s['seed']}): {arms}")
    if report.get("stress_skipped"):
        lines.append(f"  stress: not run ({report['stress_skipped']})")
    o = report.get("objective")
    if o:
        lines.append(f"  objective: {o['share_below_floor']:.1%} of {o['bids']:,} bids at a predicted ROI below the "
                     f"floor ({o['spend_share_below_floor']:.1%} of spend)")
    c = report["calibration"]
    lines.append(f"  calibration: k {c['k']:.3f} ({c['low']:.3f}-{c['high']:.3f}), {c['orders']:,.0f} effective orders"
                 if c.get("k") is not None else "  calibration: not measured (no held-out history in the store)")
    drivers = report["explanation"].get("importance") or []
    if drivers:
        lines.append("  drivers (mean |SHAP|, yuan per click): " + ", ".join(
            f"{d['label_en']} {d['mean_abs']:.3f}" for d in drivers[:5]))
    if report.get("prior"):
        lines.append(f"  guard prior: k {report['prior']['k']:.3f}, {report['prior']['orders']:.0f} effective orders")
    return "\n".join(lines)


def cmd_list(args) -> int:
    from store import launch_repo as lr

    _, launches = _open()
    with launches.engine.connect() as conn:
        rows = lr.list_models(conn)
    data = [{"model_version": r.model.model_version, "kind": r.kind, "variant": r.variant, "status": r.model.status.value,
             "gate_id": r.model.gate_id, "verdict": r.model.verdict.value if r.model.verdict else None,
             "calibration_prior": r.meta.get("calibration_prior")} for r in rows]
    text = "\n".join(f"{d['model_version']:<28} {d['kind']:<9} {d['variant']:<4} {d['status']:<10} "
                     f"gate {d['gate_id'] or '-'} {d['verdict'] or ''}" for d in data)
    emit(args, data, text or "no models registered")
    return 0


def cmd_gate(args) -> int:
    from app.gate import write_report_files
    from sim.scenario import ScenarioError

    control, launches = _open()
    scenarios = [s for s in (args.scenarios or "").split(",") if s] or None
    started = time.perf_counter()

    def progress(share: float, phase: str) -> None:
        if not args.json:
            print(f"\r  {phase:<12} {share:5.0%}  {time.perf_counter() - started:6.0f} s", end="", flush=True)

    try:
        gate = launches.run_gate(_actor(control, args.user), args.version, scenarios=scenarios,
                                 seeds=[int(s) for s in args.seeds.split(",")], minutes=args.minutes,
                                 history_days=args.history_days, workers=args.workers, progress=progress)
    except (*REFUSALS, ScenarioError) as exc:
        return fail(str(exc))
    if not args.json:
        print()
    html = _gate_html(launches, gate)
    out = Path(args.out or Path(control.settings.data_dir) / "reports" / f"gate-{args.version}-{gate.gate_id}")
    paths = write_report_files(gate.report, html, out)
    emit(args, gate.report, _report_text(gate, gate.report) + "".join(f"\n  wrote {p}" for p in paths.values()))
    return {"pass": 0, "warn": 0, "fail": 1}[gate.verdict.value] if args.exit_code else 0


def _gate_html(launches, gate) -> str:
    from store import launch_repo as lr
    with launches.engine.connect() as conn:
        return lr.gate_html(conn, gate.gate_id)


def cmd_show(args) -> int:
    from store import launch_repo as lr

    control, launches = _open()
    try:
        with launches.engine.connect() as conn:
            gate_id = args.gate or lr.get_model(conn, args.version).gate_id
            if gate_id is None:
                return fail(f"model {args.version} has no gate report: run `bidlens model gate {args.version}`")
            gate = lr.get_gate(conn, gate_id)
            html = lr.gate_html(conn, gate_id)
    except NotFound as exc:
        return fail(str(exc))
    if args.html:
        Path(args.html).write_text(html, encoding="utf-8")
    emit(args, gate.report, _report_text(gate, gate.report) + (f"\n  wrote {args.html}" if args.html else ""))
    return 0


def _launch_json(launch) -> dict:
    from store.launch_repo import launch_document
    return launch_document(launch)


def _launch_text(launch) -> str:
    share = f", {launch.share:.0%} of slots" if launch.status is LaunchStatus.LIVE else ""
    return (f"launch {launch.launch_id}: {launch.model_version} (replacing {launch.previous_version or 'nothing'}) "
            f"{launch.status.value}{share}; gate {launch.gate_id} {launch.verdict.value}; requested by "
            f"{launch.requested_by}" + (f", reviewed by {launch.reviewed_by}" if launch.reviewed_by else ""))


def _act(args, action) -> int:
    control, launches = _open()
    try:
        launch = action(control, launches)
    except REFUSALS as exc:
        return fail(str(exc))
    emit(args, _launch_json(launch), _launch_text(launch))
    return 0


def _expected(launches, launch_id: int, given: int | None) -> int:
    from store import launch_repo as lr
    if given is not None:
        return given
    with launches.engine.connect() as conn:
        return lr.get_launch(conn, launch_id).version


def cmd_request(args) -> int:
    return _act(args, lambda c, ls: ls.request_launch(login(c, args.user), args.version, args.reason, args.rollout_share))


def cmd_approve(args) -> int:
    return _act(args, lambda c, ls: ls.approve_launch(login(c, args.user), args.launch_id,
                                                      _expected(ls, args.launch_id, args.expected_version),
                                                      args.comment))


def cmd_reject(args) -> int:
    return _act(args, lambda c, ls: ls.reject_launch(login(c, args.user), args.launch_id,
                                                     _expected(ls, args.launch_id, args.expected_version),
                                                     args.comment))


def cmd_withdraw(args) -> int:
    return _act(args, lambda c, ls: ls.withdraw_launch(login(c, args.user), args.launch_id,
                                                       _expected(ls, args.launch_id, args.expected_version)))


def cmd_rollback(args) -> int:
    return _act(args, lambda c, ls: ls.rollback(login(c, args.user), args.reason))


def cmd_launches(args) -> int:
    from store import launch_repo as lr
    _, launches = _open()
    with launches.engine.connect() as conn:
        rows = lr.list_launches(conn)
    emit(args, [_launch_json(x) for x in rows], "\n".join(_launch_text(x) for x in rows) or "no launches")
    return 0


def cmd_retire(args) -> int:
    control, launches = _open()
    try:
        model = launches.retire(login(control, args.user), args.version, args.reason)
    except REFUSALS as exc:
        return fail(str(exc))
    emit(args, {"model_version": model.model_version, "status": model.status.value},
         f"model {model.model_version}: {model.status.value}")
    return 0


def cmd_switch(args) -> int:
    control, launches = _open()
    try:
        on = launches.set_gate(login(control, args.user), args.state == "on", args.reason)
    except REFUSALS as exc:
        return fail(str(exc))
    emit(args, {"enabled": on}, "launch gate: " + ("ON: only approved versions' decisions are accepted" if on else
                                                  "OFF: every version's decisions are accepted (audited)"))
    return 0


def _parse_value(text: str):
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def cmd_thresholds(args) -> int:
    from app.launch import load_thresholds

    control, launches = _open()
    if args.set:
        if not args.user:
            return fail("setting the thresholds needs --user (a manager) and --reason")
        values = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                return fail(f"{item!r}: give KEY=VALUE")
            values[key.strip()] = _parse_value(value)
        try:
            thresholds = launches.set_thresholds(login(control, args.user), values, args.reason or "")
        except REFUSALS as exc:
            return fail(str(exc))
    else:
        with launches.engine.connect() as conn:
            thresholds, _ = load_thresholds(conn)
    data = thresholds.as_json()
    emit(args, data, "\n".join(f"{k} = {v}" for k, v in data.items()))
    return 0


def cmd_history(args) -> int:
    """Play a simulated day (or its first minutes) into the store as fast as the machine allows."""
    import threading

    from app.wiring import open_engine
    from sim.live import run_live

    settings = load_settings()
    engine = open_engine(settings)
    started = time.perf_counter()
    summary = run_live(engine, settings, clock=lambda: 10 ** 12, speed=1e9, stop_event=threading.Event(),
                       scenario=args.scenario, seed=args.seed, max_buckets=args.minutes)
    seconds = time.perf_counter() - started
    emit(args, {"scenario": args.scenario, "seed": args.seed, "buckets": summary.buckets,
                "decisions": summary.decisions, "outcomes": summary.outcomes, "seconds": round(seconds, 1)},
         f"recorded {summary.buckets} minutes of scenario {args.scenario} (seed {args.seed}): "
         f"{summary.decisions:,} decisions, {summary.outcomes:,} outcome increments in {seconds:.0f} s, "
         f"ending {dt.datetime.fromtimestamp(summary.last_bucket_ts or 0, dt.UTC):%Y-%m-%d %H:%M} UTC")
    return 0


def _action(inner, name: str, func, helptext: str, *positional: str, reason: bool = True):
    """A subcommand someone answers for: positional arguments, --reason (unless not), --user, --json."""
    p = inner.add_parser(name, help=helptext)
    for arg in positional:
        p.add_argument(arg)
    if reason:
        p.add_argument("--reason", required=True)
    add_login(p)
    add_json_flag(p)
    p.set_defaults(func=func)
    return p


def register(sub) -> None:
    parser = sub.add_parser("model", help="the launch gate: gate, launch under four eyes, roll back (docs/LAUNCH.md)")
    inner = parser.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    listing = inner.add_parser("list", help="model versions with their lifecycle and newest gate verdict")
    add_json_flag(listing)
    listing.set_defaults(func=cmd_list)

    gate = inner.add_parser("gate", help="stress, calibration, objective check, explanations and the verdict; "
                                         "the report is stored with the version")
    gate.add_argument("version")
    gate.add_argument("--scenarios", help="comma-separated shipped scenario names or .toml files "
                                          "(default: normal, 818, price-war, stockout, drift)")
    gate.add_argument("--seeds", default="1", help="comma-separated seeds, the same for every arm (default 1)")
    gate.add_argument("--minutes", type=int, default=1440, help="play the first N minutes of each day (default all)")
    gate.add_argument("--history-days", type=float, default=3.0,
                      help="held-out history: the store's last N days after the version's training window")
    gate.add_argument("--workers", type=int, default=2, help="processes playing the arms side by side (cores)")
    gate.add_argument("--user", help="gate as this user (engineer or manager; default: the machine's own CLI)")
    gate.add_argument("--out", help="folder for gate.json and gate.html (default DATA_DIR/reports/...)")
    gate.add_argument("--exit-code", action="store_true", help="exit 1 when the verdict is fail")
    add_json_flag(gate)
    gate.set_defaults(func=cmd_gate)

    show = inner.add_parser("show", help="a version's newest gate report (or --gate ID)")
    show.add_argument("version")
    show.add_argument("--gate", type=int)
    show.add_argument("--html", help="write the report's HTML page here")
    add_json_flag(show)
    show.set_defaults(func=cmd_show)

    request = _action(inner, "request", cmd_request, "ask for a gated version to serve (an engineer)", "version")
    request.add_argument("--rollout-share", type=float, default=1.0,
                         help="serve this share of slots first, widened by the guard worker on evidence (default 1)")

    for name, func, helptext in (("approve", cmd_approve, "approve a launch (a manager, not the requester); a "
                                                          "failing gate needs --comment"),
                                 ("reject", cmd_reject, "reject a launch request"),
                                 ("withdraw", cmd_withdraw, "withdraw one's own launch request")):
        p = _action(inner, name, func, helptext, reason=False)
        p.add_argument("launch_id", type=int)
        if name != "withdraw":
            p.add_argument("--comment", default="", help="the review's reason (required to approve a failing gate)")
        p.add_argument("--expected-version", type=int, help="the launch's version as you saw it (default: now)")

    _action(inner, "rollback", cmd_rollback, "one action: the previous version serves again")

    launches = inner.add_parser("launches", help="launch requests and their review")
    add_json_flag(launches)
    launches.set_defaults(func=cmd_launches)

    _action(inner, "retire", cmd_retire, "a version never to serve again (a manager)", "version")
    switch = _action(inner, "gate-switch", cmd_switch, "an admin switches the launch gate off (or on) for this "
                                                       "deployment")
    switch.add_argument("state", choices=("on", "off"))

    thresholds = inner.add_parser("thresholds", help="show or set (a manager) the gate's thresholds")
    thresholds.add_argument("--set", nargs="+", metavar="KEY=VALUE")
    thresholds.add_argument("--reason")
    thresholds.add_argument("--user")
    add_json_flag(thresholds)
    thresholds.set_defaults(func=cmd_thresholds)

    history = inner.add_parser("history", help="play a simulated day into the store as fast as possible: "
                                               "held-out history for a gate's calibration")
    history.add_argument("--scenario", default="normal")
    history.add_argument("--seed", type=int, default=7)
    history.add_argument("--minutes", type=int, default=1440)
    add_json_flag(history)
    history.set_defaults(func=cmd_history)
