"""`bidlens stress` and `bidlens replay`: the simulator's commands."""

from __future__ import annotations

from pathlib import Path

from cli.output import add_json_flag, emit, fail
from control.config import load_settings
from control.domain import InvalidValue


def _stress_text(report: dict, paths: dict) -> str:
    lines = [f"stress test: scenario {report['scenario']}, seed {report['seed']}, floor ROI {report['floor_roi']}"]
    for arm, d in report["arms"].items():
        lines.append(f"  {arm:<10} spend {d['spend']:>14,.0f}  GMV {d['gmv']:>14,.0f}  ROI {d['roi']}  "
                     f"profit {d['profit']:>13,.0f}  campaigns below floor {d['campaigns_below_floor']}")
    if "guarded" in report["arms"]:
        lines.append(f"  trips {len(report['trips'])}, false trips {report['false_trips']}, "
                     f"loss avoided {report['loss_avoided']:,.0f} yuan")
    else:
        lines.append("  guarded arm: absent (no guard driver installed)")
    lines += [f"  wrote {p}" for p in paths.values()]
    return "\n".join(lines)


def cmd_stress(args) -> int:
    from sim.kit import guard_driver_factory, prepare
    from sim.report import write_report
    from sim.scenario import load_scenario, load_scenario_file
    from sim.stress import run_stress

    try:
        scenario = load_scenario_file(args.scenario_file) if args.scenario_file else load_scenario(args.scenario)
    except InvalidValue as exc:
        return fail(str(exc))
    settings = load_settings()
    kit = prepare(scenario, settings.data_dir)
    driver = None
    if args.guard in ("on", "both"):
        factory = guard_driver_factory()
        if factory is None and args.guard == "on":
            return fail("--guard on: no guard driver is installed (guards.sim_driver.make_guard_driver)")
        driver = factory(scenario, kit.catalog) if factory else None
    report = run_stress(scenario, args.seed, kit.bidders, kit.history, kit.pool, guard_driver=driver,
                        with_baselines=args.guard != "on")
    out = Path(args.out or Path(settings.data_dir) / "reports" / f"stress-{scenario.name}-{args.seed}")
    paths = write_report(report, out)
    emit(args, report, _stress_text(report, paths))
    return 0


def register(sub) -> None:
    p = sub.add_parser("stress", help="play a whole promotion day fast and report per arm (model, rule pool, guard)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--scenario", default="normal", help="a shipped scenario (normal, 818, price-war, ...)")
    src.add_argument("--scenario-file", help="a scenario TOML file (schema: docs/SIMULATOR.md)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--guard", choices=("on", "off", "both"), default="both",
                   help="on: guarded arm only; off: model and rule pool arms; both (default): all that exist")
    p.add_argument("--out", help="folder for report.json, CSVs and report.html (default DATA_DIR/reports/...)")
    add_json_flag(p)
    p.set_defaults(func=cmd_stress)
