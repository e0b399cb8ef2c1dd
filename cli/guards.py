"""Guard commands: run the worker, status, force, kill switch, thresholds, rule pool, model vs pool ROI."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from app.launch import Launches
from app.service import Control
from app.wiring import file_guard_settings, guard_service, open_control
from cli.auth import REFUSALS, add_login, login
from cli.output import add_json_flag, emit, fail
from control.clock import AcceleratedClock
from control.config import load_settings
from control.domain import InvalidValue
from guards.alert_bridge import enqueue_day_over_alert, enqueue_guard_alert
from guards.alerts import deliver_until
from guards.alerts.outbox import channels_from_settings
from guards.pool_store import list_versions
from guards.registry import GUARDS
from guards.shadow import roi_comparison
from guards.thresholds import EDITABLE, ThresholdEdit, field_type
from guards.trip_drivers import trip_drivers
from guards.worker import GuardWorker, LeaseLost, LockBusy, worker_lock


def _open():
    control = open_control()
    settings = file_guard_settings(control.settings)
    return control, guard_service(control, settings), settings


def start_alert_sender(control: Control, clock) -> None:
    """Deliver the outbox beside the worker, so a trip reaches WeCom without another process.

    Events carry the worker's clock; the rate window and backoff run on real time
    (what WeCom sees), or an accelerated demo clock would send far too fast.
    """
    unavailable: dict[str, str] = {}

    def on_report(report) -> None:
        if report.messages_sent or report.dead_alerts:
            print(f"alerts: sent {report.messages_sent} messages ({report.alerts_delivered} alerts), "
                  f"dead {report.dead_alerts}", flush=True)
        if report.unavailable != unavailable:  # said once, not every pass
            for name, why in report.unavailable.items():
                print(f"alerts: {name} cannot send: {why}", file=sys.stderr, flush=True)
            unavailable.clear()
            unavailable.update(report.unavailable)

    stop = threading.Event()
    threading.Thread(target=deliver_until, name="alert-sender", daemon=True,
                     args=(stop.is_set, control.engine, channels_from_settings, clock, np.random.default_rng()),
                     kwargs={"wall_clock": time.time, "sleep": stop.wait, "on_report": on_report}).start()


def cmd_run(args) -> int:
    control, _, settings = _open()
    if args.speed is not None:
        start = int(time.time()) if args.start_ts is None else args.start_ts
        clock = AcceleratedClock(start, time.time(), args.speed)
    else:  # open_control's: the demo's promotion clock when one is anchored in the store, else real time
        clock = control.clock
    control.clock = clock
    launches = Launches(control.engine, clock, control.settings, settings)
    worker = GuardWorker(control.engine, clock, settings,
                         interval_s=args.interval or control.settings.guard_interval_s,
                         expire_overrides=control.expire_overrides, alert_sink=enqueue_guard_alert,
                         drivers_fn=trip_drivers, day_over_sink=enqueue_day_over_alert,
                         rollout=launches.rollout_tick)
    said_day_over: list[int] = []

    def on_tick(report) -> None:
        if report.day_over is not None and report.day_over not in said_day_over:
            said_day_over.append(report.day_over)
            print(f"[{report.now_ts}] the promotion day ended at {report.day_over}: the guard has stopped "
                  f"evaluating until a new day starts", flush=True)
        if report.thresholds_error:
            print(f"thresholds: {report.thresholds_error}", file=sys.stderr, flush=True)
        for e in report.events:
            print(f"[{e.ts}] {e.guard} {e.campaign_id}: {e.kind} ({e.mode_before.value} -> {e.mode_after.value})",
                  flush=True)
        if report.rollout is not None and report.rollout.action != "hold":
            print(f"[{report.now_ts}] rollout: {report.rollout.action} to {report.rollout.share_after:.0%} "
                  f"({report.rollout.reason})", flush=True)

    try:
        with worker_lock(control.engine, timeout_s=args.lock_timeout, lease_s=control.settings.guard_lease_s,
                         on_wait=lambda: print("another guard worker holds the store's lease; waiting for it",
                                               file=sys.stderr, flush=True)) as lease:
            worker.lease = lease
            if args.once:
                report = worker.tick()
                emit(args, {"now_ts": report.now_ts, "campaigns": report.campaigns,
                            "events": [{"guard": e.guard, "campaign_id": e.campaign_id, "kind": e.kind,
                                        **e.payload()} for e in report.events],
                            "expired_overrides": report.expired_overrides, "seconds": round(report.seconds, 4)},
                     f"{report.campaigns} campaigns evaluated in {report.seconds:.3f}s, "
                     f"{len(report.events)} events")
                return 0
            # Stop cleanly on Ctrl-C or SIGTERM (the demo's), also as a background job: the lease is released
            # on the way out, so the next worker need not wait for it to expire.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            print(f"guard worker running: every {worker.interval_s}s of its clock (lease generation "
                  f"{lease.generation})", flush=True)
            if not args.no_deliver:
                start_alert_sender(control, clock)
            worker.run(on_tick=on_tick)
    except (LockBusy, LeaseLost) as exc:
        return fail(str(exc), 3)
    except KeyboardInterrupt:
        return 0
    return 0


def _status_text(status: dict) -> str:
    kill = status["kill_switch"]
    lines = [f"kill switch: global {'ON' if kill['global'] else 'off'}; campaigns {kill['campaigns'] or '-'}",
             f"worker heartbeat: {status['worker']['ts'] if status['worker'] else 'never'}; "
             f"rule pool version: {status['rule_pool_version']}"]
    if status.get("day_over"):
        lines.append(f"promotion day over at {status['day_over']['day_end_ts']}: the guard has stopped evaluating "
                     f"(last seen {status['day_over']['ts']})")
    for c in status["campaigns"]:
        modes = ", ".join(f"{g}={v['mode']}{'/' + v['action'] if v['mode'] in ('tripped', 'probation') else ''}"
                          f"{'(stale)' if v['stale'] else ''}" for g, v in c["guards"].items())
        lines.append(f"  {c['campaign_id']:<12} {c['effective_mode']:<13} {modes}"
                     f"  floor {c['thresholds']['roi']['floor']:g}" + ("  KILL" if c["kill_switch"] else ""))
    for t in status["trips"]:
        lines.append(f"  trip {t['trip_id']}: {t['guard']} {t['campaign_id']} at {t['tripped_ts']} ({t['cause']}), "
                     f"delay {t['detection_delay_s']}s, ROI {t['roi_before']} -> {t['roi_after']}, "
                     f"loss avoided {t['loss_avoided']}")
    return "\n".join(lines)


def cmd_status(args) -> int:
    _, service, _ = _open()
    status = service.status()
    emit(args, status, _status_text(status))
    return 0


def cmd_force(args) -> int:
    control, service, _ = _open()
    try:
        changed = service.force(login(control, args.user), args.campaign, args.mode, args.reason, args.guard)
    except REFUSALS as exc:
        return fail(str(exc))
    emit(args, {"campaign_id": args.campaign, "mode": args.mode, "guards": changed},
         "\n".join(f"{c['guard']}: {c['mode_before']} -> {c['mode_after']}" for c in changed))
    return 0


def cmd_kill(args) -> int:
    control, _, _ = _open()
    try:
        after = control.set_kill_switch(login(control, args.user), args.state == "on", args.reason, args.campaign)
    except REFUSALS as exc:
        return fail(str(exc))
    emit(args, {"global": after.global_on, "campaigns": sorted(after.campaigns)},
         f"kill switch: global {'ON' if after.global_on else 'off'}; campaigns {sorted(after.campaigns) or '-'}")
    return 0


# Every editable threshold, one option each (--floor, --cooldown-s, ...); a guard refuses the ones not its own.
THRESHOLD_FIELDS = {name: field_type(guard, name) for guard, names in EDITABLE.items() for name in names}


def _thresholds_text(view: dict) -> str:
    lines = [f"thresholds version {view['version']}, {view['campaign_id'] or 'all campaigns'}:"]
    for guard, values in view["guards"].items():
        lines.append(f"  {guard}: " + ", ".join(
            f"{name}={f['value']:g}" + ("" if f["source"] == "file" else f" ({f['source']}; file {f['file']:g})")
            for name, f in values.items()))
    return "\n".join(lines)


def cmd_thresholds_show(args) -> int:
    _, service, _ = _open()
    try:
        view = service.thresholds(args.campaign)
    except InvalidValue as exc:
        return fail(str(exc))
    emit(args, view, _thresholds_text(view))
    return 0


def cmd_thresholds_set(args) -> int:
    control, service, _ = _open()
    values = {name: getattr(args, name) for name in THRESHOLD_FIELDS if getattr(args, name) is not None}
    try:
        view = service.set_thresholds(login(control, args.user),
                                      ThresholdEdit(args.guard, args.campaign, values, args.reason),
                                      args.expected_version)
    except REFUSALS as exc:
        return fail(str(exc))
    emit(args, view, _thresholds_text(view))
    return 0


def cmd_thresholds_reset(args) -> int:
    control, service, _ = _open()
    try:
        view = service.reset_thresholds(login(control, args.user), args.campaign, args.reason, args.guard,
                                        args.expected_version)
    except REFUSALS as exc:
        return fail(str(exc))
    emit(args, view, _thresholds_text(view))
    return 0


def _register_thresholds(sub) -> None:
    thresholds = sub.add_parser("thresholds", help="guard thresholds: the config file with managers' edits on top")
    th_sub = thresholds.add_subparsers(dest="thresholds_command", required=True, metavar="SUBCOMMAND")
    show = th_sub.add_parser("show", help="effective thresholds, for all campaigns or one, and who set them")
    show.add_argument("--campaign", default=None)
    add_json_flag(show)
    show.set_defaults(func=cmd_thresholds_show)

    edit = th_sub.add_parser("set", help="change a guard's thresholds, for all campaigns or one (manager; audited)")
    edit.add_argument("--guard", required=True, choices=list(EDITABLE))
    edit.add_argument("--campaign", default=None, help="omitted: every campaign")
    for name, kind in THRESHOLD_FIELDS.items():
        edit.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None)
    reset = th_sub.add_parser("reset", help="drop a campaign's own edits (omitted: the edits for all campaigns)")
    reset.add_argument("--campaign", default=None)
    reset.add_argument("--guard", default=None, choices=list(EDITABLE), help="omitted: every guard")
    for parser, func in ((edit, cmd_thresholds_set), (reset, cmd_thresholds_reset)):
        parser.add_argument("--reason", required=True)
        add_login(parser)
        parser.add_argument("--expected-version", type=int, default=None,
                            help="refuse if the thresholds moved past this version (from `show`)")
        add_json_flag(parser)
        parser.set_defaults(func=func)


def cmd_pool_submit(args) -> int:
    control, service, _ = _open()
    try:
        version = service.submit_rule_pool(login(control, args.user), Path(args.file).read_text(encoding="utf-8"))
    except (*REFUSALS, OSError) as exc:
        return fail(str(exc))
    emit(args, {"version": version.version, "status": version.status, "error": version.error},
         f"rule pool version {version.version}: {version.status}" + (f"\n{version.error}" if version.error else ""))
    return 0 if version.status == "active" else 1


def cmd_pool_list(args) -> int:
    control, _, _ = _open()
    with control.engine.connect() as conn:
        versions = list_versions(conn)
    emit(args, [{"version": v.version, "status": v.status, "created_ts": v.created_ts,
                 "created_by": v.created_by, "error": v.error} for v in versions],
         "\n".join(f"v{v.version} {v.status:<10} {v.created_by} {v.created_ts} {v.error[:120]}" for v in versions)
         or "no rule pool versions")
    return 0


def cmd_compare(args) -> int:
    control, _, _ = _open()
    until = int(control.clock()) if args.until_ts is None else args.until_ts
    with control.engine.connect() as conn:
        frame = roi_comparison(conn, until - args.minutes * 60, until)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    emit(args, records, frame.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0


def _bench_text(result: dict) -> str:
    d, t = result["detection_delay_min"], result["cusum_null_tail"]
    lines = [f"{result['days']} days (seed {result['seed']}): {result['families']}",
             f"degraded campaign-days {result['degraded_campaign_days']}, healthy {result['healthy_campaign_days']}",
             f"oracle capture {result['oracle_capture']} over {result['material_days']} days with a material loss; "
             f"by family {result['oracle_capture_by_family']}",
             f"detection delay from the first sustained crossing, falls >= 30%: median {d['median']} min, "
             f"p90 {d['p90']} (n {d['n']}); ideal detector median {d['ideal']['median']}, p90 {d['ideal']['p90']}",
             *(f"{name.replace('_', ' ')} median {d[name]['median']}, p90 {d[name]['p90']} (n {d[name]['n']}, never "
               f"{d[name]['never']}); ours on the same crossings median {d[name]['ours']['median']}, "
               f"p90 {d[name]['ours']['p90']}; it trips {d[name]['ours_never']} we never do"
               for name in ("ideal_below_floor", "ideal_below_guard_null")),
             f"the ideal detectors' false-alarm rate per campaign-day (the guard's) {result['ideal_alpha']}",
             f"missed crossings {result['missed_crossings']}",
             f"false trips per 100 healthy campaign-days {result['false_trips_per_100_healthy_campaign_days']} "
             f"(healthy families {result['false_trips_per_100_healthy_family_campaign_days']}); on whole-model "
             f"failures, of {result['model_failure_campaign_days_above_floor']} campaign-days above the floor "
             f"{result['false_trips_per_100_model_failure_campaign_days_above_floor']}",
             f"healthy campaign-days' peak evidence S (threshold {t['threshold']}): reached {t['reached']} of "
             f"{t['campaign_days']}; the tail predicts {t['false_trips_per_campaign_day']} false trips per "
             f"campaign-day at the threshold, and {t['threshold_for_budget']} for {t['budget_per_campaign_day']}",
             f"restores {result['restores']}, below floor + hysteresis {result['restores_below_floor_plus_hysteresis']}; "
             f"failed probations per campaign-day {result['failed_probations_per_campaign_day']}, "
             f"per held campaign-hour {result['failed_probations_per_held_campaign_hour']}"]
    return "\n".join(lines)


def cmd_bench(args) -> int:
    from app.guard_bench import run_bench

    data_dir = args.data_dir or load_settings().data_dir
    result = run_bench(args.days, args.seed, data_dir, workers=args.workers)
    out = Path(args.out or Path(data_dir) / "reports" / f"guard-bench-{args.seed}-{args.days}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    emit(args, result, _bench_text(result))
    return 0


def register(subparsers) -> None:
    guard = subparsers.add_parser("guard", help="ROI guard and manual rule pool")
    sub = guard.add_subparsers(dest="guard_command", required=True, metavar="SUBCOMMAND")

    run = sub.add_parser("run", help="run the guard worker (one per store; a second one waits)")
    run.add_argument("--interval", type=int, default=0, help="seconds of the clock between evaluations")
    run.add_argument("--speed", type=float, default=None,
                     help="own accelerated clock (60 = a simulated minute per second); default: the demo's "
                          "clock anchored in the store, else real time")
    run.add_argument("--start-ts", type=int, default=None, help="with --speed: the clock starts here (epoch s)")
    run.add_argument("--once", action="store_true", help="one evaluation, then exit")
    run.add_argument("--no-deliver", action="store_true",
                     help="do not send the alert outbox from this process (another runs `bidlens alerts send`)")
    run.add_argument("--lock-timeout", type=float, default=None,
                     help="give up waiting for the store's worker lease after S s")
    add_json_flag(run)
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="every campaign's guards, kill switch, trips")
    add_json_flag(status)
    status.set_defaults(func=cmd_status)

    forced = sub.add_parser("force", help="pin a campaign to the pool or the model, or hand it back (manager)")
    forced.add_argument("--campaign", required=True)
    forced.add_argument("--mode", required=True, choices=["pool", "model", "auto"])
    forced.add_argument("--guard", default=None, choices=list(GUARDS),
                        help="only this guard (default: every guard of the campaign)")
    forced.add_argument("--reason", required=True)
    add_login(forced)
    add_json_flag(forced)
    forced.set_defaults(func=cmd_force)

    kill = sub.add_parser("kill", help="kill switch on/off, global or per campaign (manager)")
    kill.add_argument("state", choices=["on", "off"])
    kill.add_argument("--campaign", default=None)
    kill.add_argument("--reason", required=True)
    add_login(kill)
    add_json_flag(kill)
    kill.set_defaults(func=cmd_kill)

    _register_thresholds(sub)

    pool = sub.add_parser("pool", help="manual rule pool versions")
    pool_sub = pool.add_subparsers(dest="pool_command", required=True, metavar="SUBCOMMAND")
    submit = pool_sub.add_parser("submit", help="validate a rule pool TOML file and make it live")
    submit.add_argument("file")
    add_login(submit)
    add_json_flag(submit)
    submit.set_defaults(func=cmd_pool_submit)
    listing = pool_sub.add_parser("list", help="every version: active, superseded, refused (with why)")
    add_json_flag(listing)
    listing.set_defaults(func=cmd_pool_list)

    compare = sub.add_parser("compare", help="model vs rule pool predicted ROI (shadow score)")
    compare.add_argument("--minutes", type=int, default=60)
    compare.add_argument("--until-ts", type=int, default=None)
    add_json_flag(compare)
    compare.set_defaults(func=cmd_compare)

    bench = sub.add_parser("bench", help="the guard on days drawn from documented families: oracle capture, "
                                         "detection delay beside the ideal detector, false trips, restores")
    bench.add_argument("--days", type=int, default=60, help="days to draw (default 60)")
    bench.add_argument("--seed", type=int, default=1, help="the seed the days are drawn from (default 1)")
    bench.add_argument("--workers", type=int, default=2, help="processes playing days at once")
    bench.add_argument("--data-dir", help="where the bundled models live (default BIDLENS_DATA_DIR)")
    bench.add_argument("--out", help="the JSON result (default DATA_DIR/reports/guard-bench-SEED-DAYS.json)")
    add_json_flag(bench)
    bench.set_defaults(func=cmd_bench)
