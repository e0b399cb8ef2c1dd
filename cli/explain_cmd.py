"""`bidlens explain ...`: a served bid as steps that add up to it; attribution drift of a window."""

from __future__ import annotations

from cli.output import add_json_flag, emit, fail
from control.config import load_settings
from store.engine import open_store


def _conn():
    return open_store(load_settings().database_url).connect()


def _bidder(scenario: str):
    """The reference bidder's parameters (target ROI per model variant, ROI floor) from its scenario."""
    from sim.scenario import load_scenario
    return load_scenario(scenario).bidder


def cmd_decision(args) -> int:
    from explain.reasons import bid_reasons
    from explain.store import decision_breakdown
    with _conn() as conn:
        bidder = _bidder(args.scenario)
        breakdown = decision_breakdown(
            conn, args.decision_id, roi_floor=bidder.floor_roi if args.roi_floor is None else args.roi_floor,
            target_roi={"roi": bidder.target_roi, "gmv": bidder.gmv_target_roi})
    if breakdown is None:
        return fail(f"decision_id={args.decision_id}: no such decision or no stored explanation")
    lang = args.lang
    reasons = bid_reasons(breakdown.steps, breakdown.features, lang)
    lines = [f"decision {args.decision_id}: served bid {breakdown.decision['bid']:.4f} "
             f"(model {breakdown.explanation.model_version}, decided by {breakdown.decision['decided_by']})"]
    lines += [f"  {s.label(lang):<40} {s.value:+.4f}  -> {s.total:.4f}" for s in breakdown.steps]
    lines += [f"  * {r}" for r in reasons]
    data = {"decision_id": args.decision_id, "model_version": breakdown.explanation.model_version,
            "served_bid": breakdown.decision["bid"], "reasons": reasons,
            "steps": [{"kind": s.kind, "name": s.name, "label": s.label(lang), "value": s.value,
                       "total": s.total, "feature_value": s.feature_value} for s in breakdown.steps]}
    emit(args, data, "\n".join(lines))
    return 0


def cmd_drift(args) -> int:
    from explain.analysis import attribution_drift
    from explain.store import load_window
    with _conn() as conn:
        ref = load_window(conn, args.ref_from, args.ref_to, campaign_id=args.campaign)
        now = load_window(conn, args.now_from, args.now_to, campaign_id=args.campaign)
    if len(ref.decisions) < 2 or len(now.decisions) < 2:
        return fail(f"drift needs explained decisions in both windows; found {len(ref.decisions)} "
                    f"and {len(now.decisions)}")
    if ref.features != now.features:
        return fail("the two windows were decided by models with different features")
    frame = attribution_drift(ref.contributions, now.contributions, now.features)
    label = "label_zh" if args.lang == "zh" else "label_en"
    lines = [f"{'feature':<32} {'shift':>9} {'z':>7}  drifted"]
    lines += [f"{r[label]:<32} {r['shift']:+9.4f} {r['z']:7.1f}  {'YES' if r['drifted'] else ''}"
              for _, r in frame.iterrows()]
    emit(args, frame.to_dict(orient="records"), "\n".join(lines))
    return 0


def register(sub) -> None:
    parser = sub.add_parser("explain", help="explanations of served decisions")
    inner = parser.add_subparsers(dest="explain_command", required=True, metavar="WHAT")
    decision = inner.add_parser("decision", help="a served bid as steps that add up to it, with reasons")
    decision.add_argument("decision_id", type=int)
    decision.add_argument("--lang", choices=("zh", "en"), default="zh")
    decision.add_argument("--scenario", default="demo", help="simulator scenario whose bidder served it")
    decision.add_argument("--roi-floor", type=float, default=None, help="default: the scenario's floor")
    add_json_flag(decision)
    decision.set_defaults(func=cmd_decision)
    drift = inner.add_parser("drift", help="which features' contributions moved between two windows")
    for name in ("ref-from", "ref-to", "now-from", "now-to"):
        drift.add_argument(f"--{name}", type=int, required=True, help="epoch seconds (bucket_ts)")
    drift.add_argument("--campaign", default=None)
    drift.add_argument("--lang", choices=("zh", "en"), default="zh")
    add_json_flag(drift)
    drift.set_defaults(func=cmd_drift)
