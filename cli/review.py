"""`bidlens review`: the biweekly algorithm-operations review of a period (app.review), printed or exported."""

from __future__ import annotations

from pathlib import Path

from app.review import load_review
from app.wiring import control_room, open_control
from cli.auth import REFUSALS, add_login, login
from cli.output import add_json_flag, emit, fail


def _text(review: dict, written: list[Path]) -> str:
    k, o = review["kpi"], review["overrides"]["counts"]
    lines = [f"review {review['period']['from']} .. {review['period']['to']} (China time)",
             f"  operations profit {k['operations_profit']:,.0f} yuan (ROI {k['roi']}); the algorithm team's "
             f"{k['algorithm_share']:.0%}: {k['algorithm_profit']:,.0f} yuan"]
    for b in review["breakers"]["by_guard"]:
        lines.append(f"  breaker {b['guard']:<10} interceptions {b['interceptions']}, restored {b['restored']}, "
                     f"open {b['open']}, announced again {b['announced_again']}, loss avoided "
                     f"{b['loss_avoided']:,.0f} yuan")
    lines.append(f"  overrides: proposed {o['propose']}, approved {o['approve']}, rejected {o['reject']}, "
                 f"revoked {o['revoke']}, expired {o['expire']}; profit effect against the model "
                 f"{review['overrides']['profit_effect']:,.0f} yuan")
    a = review["alerts"]["overall"]
    if a:
        median = "-" if a["ack_median_s"] is None else f"{a['ack_median_s'] / 60:.1f} min"
        p90 = "-" if a["ack_p90_s"] is None else f"{a['ack_p90_s'] / 60:.1f} min"
        lines.append(f"  alerts {a['alerts']}: acknowledged {a['acked']} ({a['acked_in_target']} within "
                     f"{review['alerts']['target_s'] // 60} min), median {median}, p90 {p90}")
    for v in review["models"]["versions"]:
        lines.append(f"  model {v['model_version']}: {v['slots_decided']} decisions served, ROI {v['roi']}, "
                     f"calibration {v['calibration']}")
    lines += [f"  decided by {r['decided_by']:<9} ROI {r['roi']}  profit {r['profit']:,.0f}"
              for r in review["authorities"]]
    lines += [f"  wrote {p} (exported, audited)" for p in written]
    return "\n".join(lines)


def cmd_review(args) -> int:
    control = open_control()
    room = control_room(control)
    if args.out and not args.user:
        return fail("--out exports the review: name the store user who exports it (--user; needs export)")
    try:
        if args.user:
            actor = login(control, args.user)
            review = room.review(actor, args.date_from, args.date_to)
        else:  # read on this machine, like `bidlens guard status`
            review = load_review(control.engine, args.date_from, args.date_to)
        written = []
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            for fmt, lang in [("json", "zh"), *(("html", lang) for lang in args.lang.split(","))]:
                path = out / (f"review-{review['period']['from']}-{review['period']['to']}"
                              + (".json" if fmt == "json" else f".{lang}.html"))
                path.write_bytes(room.export_review(actor, review, fmt, lang))
                written.append(path)
    except (*REFUSALS, ValueError) as exc:
        return fail(str(exc))
    emit(args, review, _text(review, written))
    return 0


def register(sub) -> None:
    p = sub.add_parser("review", help="the biweekly algorithm-operations review of a period, per promotion and "
                                      "campaign (breakers, overrides, alert response, models, the joint KPI)")
    p.add_argument("--from", dest="date_from", required=True, help="first day, YYYY-MM-DD (China time)")
    p.add_argument("--to", dest="date_to", required=True, help="last day, YYYY-MM-DD (inclusive)")
    add_login(p, required=False)  # with --out, the one exporting (needs export)
    p.add_argument("--out", help="folder: review JSON and self-contained HTML reports, stamped and audited")
    p.add_argument("--lang", default="zh,en", choices=("zh", "en", "zh,en"), help="the HTML reports' languages")
    add_json_flag(p)
    p.set_defaults(func=cmd_review)
