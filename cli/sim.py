"""`bidlens stress` and `bidlens replay`: the simulator's commands."""

from __future__ import annotations

from pathlib import Path

from cli.output import add_json_flag, emit, fail
from control.config import load_settings
from control.domain import InvalidValue


def _stress_text(report: dict, paths: dict) -> str:
    lines = [f"stress test: scenario {report['scenario']}, seed {report['seed']}, floor ROI {report['floor_roi']}"]
    if report.get("prior"):
        p = report["prior"]
        lines.append(f"  guard armed with {p['model_version']}'s launch-gate calibration prior: k {p['k']:.3f}, "
                     f"{p['orders']:.0f} effective orders")
    for arm, d in report["arms"].items():
        lines.append(f"  {arm:<10} spend {d['spend']:>14,.0f}  GMV {d['gmv']:>14,.0f}  ROI {d['roi']}  "
                     f"profit {d['profit']:>13,.0f}  campaigns below floor {d['campaigns_below_floor']}")
    if "guarded" in report["arms"]:
        lines.append(f"  trips {sum(t['kind'] == 'trip' for t in report['trips'])}, "
                     f"false trips {report['false_trips']}, failed probations {report['probation_failures']}, "
                     f"restores {len(report['restores'])}, loss avoided {report['loss_avoided']:,.0f} yuan")
        if report["oracle_loss_avoided"] is not None:
            capture = report["oracle_capture"]
            lines.append(f"  oracle (a perfect guard) avoids {report['oracle_loss_avoided']:,.0f} yuan: capture "
                         + (f"{capture:.1%}" if capture is not None else "not material (under 1% of the day's spend)"))
    else:
        lines.append("  guarded arm: not run (--guard off)")
    for b in report.get("breakers", []):
        lines.append(f"  breaker {b['guard']:<10} ({b['action']}) interceptions {b['interceptions']}, "
                     f"restores {b['restores']}, loss avoided {b['loss_avoided']:,.0f} yuan ({b['method']})")
    lines += [f"  wrote {p}" for p in paths.values()]
    return "\n".join(lines)


def cmd_stress(args) -> int:
    from app.stress_guard import make_guard_hook
    from sim.kit import prepare
    from sim.report import report_dir, write_report
    from sim.scenario import load_scenario, load_scenario_file
    from sim.stress import run_stress

    try:
        scenario = load_scenario_file(args.scenario_file) if args.scenario_file else load_scenario(args.scenario)
    except InvalidValue as exc:
        return fail(str(exc))
    settings = load_settings()
    prior = None
    if args.prior:
        from app.launch import version_prior
        from app.wiring import open_engine
        from control.domain import NotFound

        try:
            with open_engine(settings).connect() as conn:
                prior = version_prior(conn, args.prior)
        except NotFound as exc:
            return fail(str(exc))
        if prior is None:
            return fail(f"model {args.prior} has no calibration prior: run `bidlens model gate {args.prior}` first")
    kit = prepare(scenario, settings.data_dir)
    hook = make_guard_hook(scenario, kit.catalog, prior) if args.guard in ("on", "both") else None
    arms = () if args.guard == "on" else ("model", "rule_pool")
    report = run_stress(scenario, args.seed, kit.bidders, kit.history, kit.pool, guard_hook=hook, arms=arms,
                        minutes=args.minutes)
    if hook is not None and args.breakers != "none":
        from app.stress_breakers import SIBLINGS, breakers_section
        chosen = SIBLINGS if args.breakers == "all" else tuple(args.breakers.split(","))
        try:
            report["breakers"] = breakers_section(report, scenario, args.seed, kit, breakers=chosen,
                                                  minutes=args.minutes, roi_hook=hook)
        except ValueError as exc:
            return fail(str(exc))
    if prior is not None:
        report["prior"] = {"model_version": args.prior, "k": prior.k, "orders": prior.orders}
    out = Path(args.out) if args.out else report_dir(settings.data_dir, scenario.name, args.seed)
    paths = write_report(report, out)
    emit(args, report, _stress_text(report, paths))
    return 0


def _replay_text(data: dict) -> str:
    o = data["overall"]
    lines = [f"replay of {data['logfile']} with bidder {data['bidder']} (win rule {data['win_rule']}, "
             f"episodes by {data['episode_by']})",
             f"  auctions {o['auctions']:,}  impressions {o['impressions']:,}  clicks {o['clicks']:,}  "
             f"conversions {o['conversions']:,}",
             f"  cost {o['cost']:,.2f}  value {o['value']:,.2f}  ROI {o['roi']}  win rate {o['win_rate']}  "
             f"CPM {o['cpm']}  eCPC {o['ecpc']}"]
    episodes = data["episodes"]
    for e in episodes[:10]:
        lines.append(f"  episode {e['episode']}: auctions {e['auctions']:,}  impressions {e['impressions']:,}  "
                     f"cost {e['cost']:,.2f}  value {e['value']:,.2f}  ROI {e['roi']}")
    if len(episodes) > 10:
        lines.append(f"  ... {len(episodes) - 10} more episodes (--json lists them all)")
    return "\n".join(lines)


def cmd_replay(args) -> int:
    import sys

    from sim.replay import ReplayConfig, replay, resolve_bidder

    sys.path.insert(0, str(Path.cwd()))  # so a user's module:function next to the log imports
    try:
        bidder = resolve_bidder(args.bidder, base_bid=args.base_bid, avg_ctr=args.avg_ctr,
                                data_dir=load_settings().data_dir)
        config = ReplayConfig(budget_per_episode=args.budget_per_episode, episode_size=args.episode_size,
                              episode_by=args.episode_by, max_bid=args.max_bid, win_rule=args.win_rule)
        result = replay(args.logfile, bidder, config)
    except InvalidValue as exc:
        return fail(str(exc))
    data = {"logfile": args.logfile, "bidder": args.bidder, "win_rule": args.win_rule,
            "budget_per_episode": args.budget_per_episode, "max_bid": args.max_bid, **result.as_json()}
    emit(args, data, _replay_text(data))
    return 0


def cmd_scenarios(args) -> int:
    from sim.scenario import load_scenario, shipped_scenarios

    data = [{"name": name, "description": load_scenario(name).description,
             "events": len(load_scenario(name).events)} for name in shipped_scenarios()]
    emit(args, data, "\n".join(f"{d['name']:<12} {d['description']}" for d in data))
    return 0


def register(sub) -> None:
    c = sub.add_parser("scenarios", help="list the shipped simulator scenarios")
    add_json_flag(c)
    c.set_defaults(func=cmd_scenarios)

    p = sub.add_parser("stress", help="play a whole promotion day fast and report per arm (model, rule pool, guard)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--scenario", default="normal", help="a shipped scenario (normal, 818, price-war, ...)")
    src.add_argument("--scenario-file", help="a scenario TOML file (schema: docs/SIMULATOR.md)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--guard", choices=("on", "off", "both"), default="both",
                   help="on: guarded arm only; off: model and rule pool arms; both (default): all three")
    p.add_argument("--minutes", type=int, default=1440, choices=range(1, 1441), metavar="1..1440",
                   help="play only the first N minutes of the day (quick checks; default the whole day)")
    p.add_argument("--breakers", default="all",
                   help="with the guard: each sibling breaker judged alone (interceptions, loss avoided): all "
                        "(default), none, or a list such as competitor,low_stock")
    p.add_argument("--prior", metavar="VERSION",
                   help="arm the guard with this model version's launch-gate calibration prior (as the worker "
                        "does while that version serves; `bidlens model gate` writes it)")
    p.add_argument("--out", help="folder for report.json, CSVs and report.html (default DATA_DIR/reports/...)")
    add_json_flag(p)
    p.set_defaults(func=cmd_stress)

    r = sub.add_parser("replay", help="replay a logged auction file (CSV or Parquet) against a bidder")
    r.add_argument("logfile", help="one row per auction: market_price, click[, conversions, value, timestamp, pctr, ...]")
    r.add_argument("--bidder", default="constant",
                   help="constant | linear | reference | module:function (gets a DataFrame batch, returns bids)")
    r.add_argument("--base-bid", type=float, default=1.0, help="constant and linear bidders' base bid, yuan")
    r.add_argument("--avg-ctr", type=float, help="linear bidder's average CTR (default: the first batch's mean pctr)")
    r.add_argument("--budget-per-episode", type=float, help="budget per episode, yuan (default: unlimited)")
    r.add_argument("--episode-size", type=int, help="auctions per episode")
    r.add_argument("--episode-by", choices=("auto", "auctions", "hour", "day", "none"), default="auto",
                   help="auto: auctions when --episode-size is given, else day when the log has timestamps")
    r.add_argument("--max-bid", type=float, help="no bid above this, yuan")
    r.add_argument("--win-rule", choices=("ge", "gt"), default="ge", help="win when bid >= price (ge) or > (gt)")
    add_json_flag(r)
    r.set_defaults(func=cmd_replay)
