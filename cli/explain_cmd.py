"""`bidlens explain ...`: a served bid as steps that add up to it; attribution drift of a window;
registering a bidder's own model so its decisions are explained at ingest."""

from __future__ import annotations

from app.wiring import open_control
from cli.auth import REFUSALS, add_login, login
from cli.output import add_json_flag, emit, fail
from control.config import load_settings
from control.permissions import Action, require
from store.engine import open_store


def _conn():
    return open_store(load_settings().database_url).connect()


def explanation_document(explanation) -> dict:
    """An explained decision as data: what `bidlens explain decision --json` prints (and the panel shows)."""
    b = explanation.breakdown
    return {"decision_id": int(b.decision["decision_id"]), "model_version": b.explanation.model_version,
            "served_bid": b.decision["bid"], "decided_by": b.decision["decided_by"],
            "bid_formula": b.formula.to_json(), "pacing": b.decision["pacing"], "roi_floor": explanation.roi_floor,
            "reasons": explanation.reasons,
            "steps": [{"kind": st.kind, "name": st.name, "label": st.label(explanation.lang), "value": st.value,
                       "total": st.total, "feature_value": st.feature_value, "shown_value": shown}
                      for st, shown in zip(b.steps, explanation.shown_values, strict=True)]}


def _asker(args, action: Action):
    """The person named by --user, logged in; PermissionDenied unless they may `action`."""
    user = login(open_control(), args.user)
    require(user, action)
    return user


def cmd_decision(args) -> int:
    from app.wiring import control_room, open_control
    from control.domain import InvalidValue

    control = open_control()
    try:
        actor = login(control, args.user)
        room = control_room(control)
        detailed = room.may_see_detail(actor)
        explanation = room.explainer.explain(args.decision_id, args.lang, amounts=detailed)
    except REFUSALS as exc:
        return fail(str(exc))
    except InvalidValue as exc:
        return fail(f"decision_id={args.decision_id}: {exc}")
    if explanation is None:
        return fail(f"decision_id={args.decision_id}: no such decision or no stored explanation")
    data = explanation_document(explanation)
    formula = explanation.breakdown.formula
    lines = [f"decision {args.decision_id}: served bid {data['served_bid']:.2f} (model {data['model_version']}, "
             f"decided by {data['decided_by']}; bid = clip(value / {formula.target_roi:g} x pacing "
             f"{data['pacing']:.3g}, {formula.min_bid:g}, {'no cap' if formula.max_bid is None else f'{formula.max_bid:g}'})"]
    if detailed:  # the raw contributions are strategy (control.permissions)
        lines += [f"  {st['label']:<28} {st['shown_value']:>12} {st['value']:+9.4f}  -> {st['total']:.4f}"
                  for st in data["steps"]]
    else:
        del data["steps"]
    lines += [f"  * {r}" for r in data["reasons"]]
    emit(args, data, "\n".join(lines))
    return 0


def cmd_drift(args) -> int:
    from explain.analysis import attribution_drift
    from explain.store import load_window
    try:
        _asker(args, Action.VIEW_EXPLANATION_DETAIL)
    except REFUSALS as exc:
        return fail(str(exc))
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


def cmd_model_register(args) -> int:
    from pathlib import Path

    from control.domain import BidFormula, InvalidValue
    from explain.artifacts import (
        ModelMismatch,
        UnsupportedModelFile,
        feature_dictionary_from_json,
        load_user_model,
        save_artifact,
    )
    control = open_control()
    try:
        actor = login(control, args.user)
        require(actor, Action.REGISTER_MODEL)  # asked before the model is copied; the core checks it again
    except REFUSALS as exc:
        return fail(str(exc))
    try:
        formula = BidFormula(args.target_roi, args.min_bid, args.max_bid)
    except InvalidValue as exc:
        return fail(f"--{exc.field.replace('_', '-')} {exc.value}: {exc.reason}")
    try:
        features = feature_dictionary_from_json(args.features)
        artifact = load_user_model(args.model_file, features, args.version, variant=args.variant)
    except (OSError, ValueError, KeyError, ModelMismatch, UnsupportedModelFile) as exc:
        return fail(f"{args.model_file}: {exc}")
    folder = save_artifact(artifact, Path(control.settings.data_dir) / "models")
    try:
        control.register_model(actor, artifact, str(folder.resolve()), formula, active=args.activate)
    except REFUSALS as exc:
        return fail(str(exc))
    emit(args, {"model_version": artifact.version, "kind": artifact.kind, "path": str(folder),
                "features": artifact.feature_names, "active": args.activate, "bid_formula": formula.to_json()},
         f"model {artifact.version} ({artifact.kind}, {len(features)} features) registered at {folder}, bidding "
         f"value / {formula.target_roi:g} x pacing; decisions of this version arriving through the API or "
         "`bidlens ingest` are explained at ingest")
    return 0


def cmd_model_list(args) -> int:
    from sqlalchemy import select

    from explain.store import bid_formula
    from store import schema as s
    with _conn() as conn:
        rows = conn.execute(select(s.models).order_by(s.models.c.created_ts)).all()
        formulas = {r.model_version: bid_formula(conn, r.model_version) for r in rows}
    data = [{"model_version": r.model_version, "kind": (r.meta or {}).get("kind", "lightgbm"), "path": r.path,
             "active": r.active, "created_ts": r.created_ts,
             "bid_formula": None if formulas[r.model_version] is None else formulas[r.model_version].to_json()}
            for r in rows]
    emit(args, data, "\n".join(f"{d['model_version']:<28} {d['kind']:<9} {'active' if d['active'] else '':<7}"
                               f" target ROI {d['bid_formula']['target_roi'] if d['bid_formula'] else '?':<5}"
                               f" {d['path']}" for d in data) or "no models registered")
    return 0


def register(sub) -> None:
    parser = sub.add_parser("explain", help="explanations of served decisions")
    inner = parser.add_subparsers(dest="explain_command", required=True, metavar="WHAT")
    decision = inner.add_parser("decision", help="a served bid as steps that add up to it, with reasons")
    decision.add_argument("decision_id", type=int)
    decision.add_argument("--lang", choices=("zh", "en"), default="zh")
    add_login(decision, required=True)
    add_json_flag(decision)
    decision.set_defaults(func=cmd_decision)
    drift = inner.add_parser("drift", help="which features' contributions moved between two windows")
    for name in ("ref-from", "ref-to", "now-from", "now-to"):
        drift.add_argument(f"--{name}", type=int, required=True, help="epoch seconds (bucket_ts)")
    drift.add_argument("--campaign", default=None)
    add_login(drift)  # the contributions are strategy: view_explanation_detail
    drift.add_argument("--lang", choices=("zh", "en"), default="zh")
    add_json_flag(drift)
    drift.set_defaults(func=cmd_drift)
    model = inner.add_parser("model", help="register a bidder's own model (LightGBM, XGBoost, scikit-learn)")
    models = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    reg = models.add_parser("register", help="store the model as a versioned artefact with its feature dictionary")
    reg.add_argument("model_file", help="LightGBM .txt, XGBoost .json/.ubj, scikit-learn .joblib/.pkl")
    reg.add_argument("--features", required=True,
                     help="feature dictionary: a JSON list of {name, display_zh, display_en, unit_zh, unit_en, "
                          "categorical_levels} in the model's column order (docs/EXPLAIN.md)")
    reg.add_argument("--version", required=True, help="the model_version the bidder sends with its decisions")
    reg.add_argument("--variant", default="roi", help="roi (the default) or gmv")
    reg.add_argument("--target-roi", type=float, required=True,
                     help="the bidder's target ROI: it bids clip(predicted value / target ROI x pacing, min, max)")
    reg.add_argument("--min-bid", type=float, default=0.0, help="the bidder's lowest bid, yuan per click")
    reg.add_argument("--max-bid", type=float, default=None, help="the bidder's highest bid (default: no cap)")
    reg.add_argument("--activate", action="store_true", help="mark it the active model")
    add_login(reg)
    add_json_flag(reg)
    reg.set_defaults(func=cmd_model_register)
    listing = models.add_parser("list", help="registered model versions")
    add_json_flag(listing)
    listing.set_defaults(func=cmd_model_list)
