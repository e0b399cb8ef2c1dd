"""`bidlens alerts ...`: test a robot, list, acknowledge, send once, response-time figures."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from app.alert_desk import acknowledge_alert, resend_dead_alerts
from app.wiring import open_control
from cli.auth import REFUSALS, add_login, login
from cli.output import add_json_flag, emit, fail
from control.config import load_settings
from control.domain import InvalidValue
from guards.alerts import (
    current_config,
    deliver_due,
    list_alerts,
    response_times_by_day,
    response_times_by_promotion,
)
from guards.alerts.core import AlertRecord
from guards.alerts.events import AlertKind
from guards.alerts.local_server import LocalRobotServer
from guards.alerts.outbox import channels_from_settings, get_alert, send_now
from guards.alerts.templates import render
from guards.alerts.transport import OutboundMessage, redact
from store.engine import make_engine
from store.migrate import pending
from store.repo import ConflictError, store_clock


def _engine():
    engine = make_engine(load_settings().database_url)
    if pending(engine):
        raise InvalidValue("store", "schema", "not up to date: run the store migrations (bidlens init) first")
    return engine


def cmd_test(args) -> int:
    channels = channels_from_settings()
    if args.robot not in channels.config.channels:
        return fail(f"robot {args.robot!r} is not configured; known: {sorted(channels.config.channels)}")
    if args.robot not in channels.transports:
        return fail(channels.errors.get(args.robot, "cannot be built"))
    now = int(time.time())
    probe = AlertRecord(alert_id=0, event_key="test", channel=args.robot, kind=AlertKind.TEST, severity="info",
                        campaign_id=None, guard=None, condition_key="test", status="pending", occurred_ts=now,
                        created_ts=now, next_attempt_ts=now,
                        payload={"detail": "BidLens → WeCom 连接测试 / connection test"})
    message_id = f"{args.robot}-test-{now}"
    cfg = channels.config.channel(args.robot)
    content = render([probe], message_id, channels.style(args.robot), max_bytes=cfg.max_bytes)
    # Through the store: the test message counts in the robot's rate window like every other send.
    outcome = send_now(_engine(), channels, args.robot, OutboundMessage(message_id, args.robot, content, ()),
                       time.time)
    data = {"robot": args.robot, "ok": outcome.ok, "retryable": outcome.retryable,
            "rate_limited": outcome.rate_limited, "maybe_delivered": outcome.ambiguous,
            "error": redact(outcome.error), "errcode": outcome.errcode, "http_status": outcome.http_status}
    emit(args, data, f"{args.robot}: sent" if outcome.ok else f"{args.robot}: FAILED {data['error']}")
    return 0 if outcome.ok else 1


def _line(a: AlertRecord) -> str:
    ack = f"acked by {a.acked_by}" if a.acked_by else "not acked"
    err = f" ! {redact(a.last_error)}" if a.last_error and a.status != "pending" else ""
    return (f"#{a.alert_id:<6} {a.status:<9} {a.channel:<10} {a.severity:<8} {a.kind.value:<18} "
            f"{a.campaign_id or '-':<14} {ack}{err}")


def cmd_list(args) -> int:
    with _engine().connect() as conn:
        alerts = list_alerts(conn, status=args.status, limit=args.limit)
    emit(args, [a.as_json() for a in alerts], "\n".join(_line(a) for a in alerts) or "no alerts")
    return 0


def cmd_ack(args) -> int:
    control = open_control()  # the store's clock: the demo's promotion time, else real time
    try:
        acknowledge_alert(control, login(control, args.user), args.id, source="cli")
        already = False
    except ConflictError:  # acknowledged before: say by whom, as the panel does
        already = True
    with control.engine.connect() as conn:
        a = get_alert(conn, args.id)
    text = (f"#{a.alert_id} already acknowledged by {a.acked_by}" if already
            else f"#{a.alert_id} acknowledged by {a.acked_by} after {a.acked_ts - a.occurred_ts} s")
    emit(args, {**a.as_json(), "already": already}, text)
    return 0


def cmd_retry(args) -> int:
    control = open_control()
    with control.engine.connect() as conn:
        ids = args.ids or [a.alert_id for a in list_alerts(conn, status="dead", limit=None)]
    requeued = resend_dead_alerts(control, login(control, args.user), ids)
    emit(args, {"requeued": requeued}, f"requeued {len(requeued)} dead alerts" + (
        f": {', '.join(map(str, requeued))}" if requeued else ""))
    return 0


def cmd_send(args) -> int:
    engine = _engine()
    with engine.connect() as conn:
        events_clock = store_clock(conn)
    # Events on the store's clock; rate window, backoff and leases on real time (what WeCom sees).
    report = deliver_due(engine, channels_from_settings(), events_clock, np.random.default_rng(),
                         wall_clock=time.time)
    data = report.as_json()
    text = (f"sent {report.messages_sent} messages ({report.alerts_delivered} alerts), resent {report.resent}, "
            f"unanswered {report.unconfirmed}, probes {report.probes}, retrying {report.retries}, "
            f"dead {report.dead_alerts}")
    for error in report.errors:
        text += f"\n  {redact(error)}"
    for name, why in report.unavailable.items():
        text += f"\n{name}: cannot send: {why}"
    emit(args, data, text)
    return 1 if report.unavailable else 0


def cmd_stats(args) -> int:
    with _engine().connect() as conn:
        records = list_alerts(conn, limit=None)
    stats = (response_times_by_promotion(records, current_config().promotions) if args.by == "promotion"
             else response_times_by_day(records))

    def fmt(v):
        return "-" if v is None else f"{v / 60:.1f} min"

    text = "\n".join(f"{x.key:<12} alerts {x.alerts:<4} ack median {fmt(x.ack_median_s)} p90 {fmt(x.ack_p90_s)}"
                     f" · resolve median {fmt(x.resolve_median_s)} p90 {fmt(x.resolve_p90_s)}" for x in stats)
    emit(args, [x.as_json() for x in stats], text or "no alerts")
    return 0


def cmd_local_robot(args) -> int:
    """Run the local WeCom-protocol server in the foreground, printing each message it accepts."""
    key = os.environ.get(args.key_env, "")
    if not key:
        return fail(f"environment variable {args.key_env} is not set (the key the robot accepts)")
    # Stop cleanly on Ctrl-C or SIGTERM, also when started as a background job (which ignores SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = LocalRobotServer(keys=[key], port=args.port).start()
    print(f"local WeCom robot at {server.base_url} (key from {args.key_env})", flush=True)
    seen = 0
    try:
        while True:
            received = list(server.state.received)
            for r in received[seen:]:
                print(f"--- {r.msgtype}, {len(r.content.encode())} bytes\n{r.content}", flush=True)
            seen = len(received)
            time.sleep(0.2)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def cmd_demo_day(args) -> int:
    """Play the demo's day fast through the guard worker and the outbox; print what people would get."""
    from app.demo_day import replay_demo_day  # loads the simulator and its models: only for this command
    folder = args.dir or str(Path(load_settings().data_dir) / "demo-day")
    counts = replay_demo_day(folder, seed=args.seed, speed=args.speed, minutes=args.minutes,
                             after_minutes=args.after_minutes, explain=args.explain)
    c = counts.as_json()
    emit(args, c, f"{c['minutes']} minutes played (+{c['after_minutes']} after the day)\n"
                  f"WeCom messages: {c['messages']} during the day, {c['messages_after']} after it\n"
                  f"trips in the ledger: {c['trips']} (after the day: {c['trips_after']}); trip alerts to the "
                  f"robot: {c['trip_alerts']} in {c['messages_with_trips']} messages; stale / fresh data alerts: "
                  f"{c['stale_alerts']}\n"
                  f"open alerts at the day's end: {c['open_alerts']} for {c['open_conditions']} open conditions "
                  f"(most during the day: {c['open_alerts_max']})\n"
                  f"panel rows: {c['panel_rows']} for {c['alert_events']} alert events\n"
                  f"the first trip message links to: {c['first_trip_link']}")
    return 0


def _guarded(fn):
    def run(args) -> int:
        try:
            return fn(args)
        except REFUSALS as exc:
            return fail(redact(str(exc)))
    return run


def register(subparsers) -> None:
    parser = subparsers.add_parser("alerts", help="WeCom alerts: test a robot, list, acknowledge, send")
    sub = parser.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    p = sub.add_parser("test", help="send a test message to one configured robot/channel")
    p.add_argument("--robot", required=True, help="channel name from the alerts config")
    add_json_flag(p)
    p.set_defaults(func=_guarded(cmd_test))
    p = sub.add_parser("list", help="alerts, newest first (dead ones too)")
    p.add_argument("--status", choices=["pending", "delivered", "dead"])
    p.add_argument("--limit", type=int, default=50)
    add_json_flag(p)
    p.set_defaults(func=_guarded(cmd_list))
    p = sub.add_parser("ack", help="acknowledge an alert (audited)")
    p.add_argument("id", type=int)
    add_login(p, flag="--by", required=False, default=os.environ.get("USER"))
    add_json_flag(p)
    p.set_defaults(func=_guarded(cmd_ack))
    p = sub.add_parser("retry", help="send dead alerts again (after fixing the key or receiver); audited")
    p.add_argument("ids", nargs="*", type=int, help="alert ids (default: every dead alert)")
    add_login(p, flag="--by", required=False, default=os.environ.get("USER"))
    add_json_flag(p)
    p.set_defaults(func=_guarded(cmd_retry))
    p = sub.add_parser("send", help="one delivery pass over the outbox")
    add_json_flag(p)
    p.set_defaults(func=_guarded(cmd_send))
    p = sub.add_parser("local-robot", help="run a local WeCom-protocol robot server (demo, no WeCom needed)")
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--key-env", default="BIDLENS_WECOM_KEY_OPS", help="variable holding the key it accepts")
    p.set_defaults(func=cmd_local_robot)
    p = sub.add_parser("demo-day", help="play the demo's day fast through the guard and the outbox, count the "
                                        "messages, trips and open alerts (docs/ALERTS.md)")
    p.add_argument("--minutes", type=int, default=None, help="play only the day's first minutes (default: all)")
    p.add_argument("--after-minutes", type=int, default=60, help="let the clock run on this long after the day")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--speed", type=float, default=60.0, help="the demo's speed: WeCom's rate window runs this "
                                                               "many times slower than the promotion clock")
    p.add_argument("--explain", action="store_true", help="explain every decision, as the demo does (slower)")
    p.add_argument("--dir", help="folder for its store and models (default DATA_DIR/demo-day)")
    add_json_flag(p)
    p.set_defaults(func=_guarded(cmd_demo_day))
    p = sub.add_parser("stats", help="time to acknowledge / resolve, median and p90")
    p.add_argument("--by", choices=["day", "promotion"], default="day")
    add_json_flag(p)
    p.set_defaults(func=_guarded(cmd_stats))
