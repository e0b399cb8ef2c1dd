"""`bidlens explain ...`: a served bid as steps that add up to it; attribution drift of a window;
registering a bidder's own model so its decisions are explained at ingest."""

from __future__ import annotations

from cli.output import add_json_flag, emit, fail
from control.config import load_settings
from control.domain import InvalidValue
from control.permissions import Action, PermissionDenied, allowed, require
from store.engine import open_store


def _conn():
    return open_store(load_settings().database_url).connect()


def _bidder(scenario: str):
    """The reference bidder's parameters (target ROI per model variant, ROI floor) from its scenario."""
    from sim.scenario import load_scenario
    return load_scenario(scenario).bidder


def _asker(args, action: Action):
    """The store user named by --user as the store has them now; PermissionDenied unless they may `action`."""
    from app.wiring import open_control
    user = open_control().user(args.user)
    require(user, action)
    return user


def cmd_decision(args) -> int:
    from explain.reasons import bid_reasons
    from explain.store import decision_breakdown
    try:
        detailed = allowed(_asker(args, Action.VIEW), Action.VIEW_EXPLANATION_DETAIL)
    except (InvalidValue, PermissionDenied) as exc:
        return fail(str(exc))
    with _conn() as conn:
        bidder = _bidder(args.scenario)
        breakdown = decision_breakdown(
            conn, args.decision_id, roi_floor=bidder.floor_roi if args.roi_floor is None else args.roi_floor,
            target_roi={"roi": bidder.target_roi, "gmv": bidder.gmv_target_roi})
    if breakdown is None:
        return fail(f"decision_id={args.decision_id}: no such decision or no stored explanation")
    lang = args.lang
    reasons = bid_reasons(breakdown.steps, breakdown.features, lang, amounts=detailed)
    lines = [f"decision {args.decision_id}: served bid {breakdown.decision['bid']:.4f} "
             f"(model {breakdown.explanation.model_version}, decided by {breakdown.decision['decided_by']})"]
    data = {"decision_id": args.decision_id, "model_version": breakdown.explanation.model_version,
            "served_bid": breakdown.decision["bid"], "reasons": reasons}
    if detailed:  # the raw contributions are strategy (control.permissions)
        lines += [f"  {s.label(lang):<40} {s.value:+.4f}  -> {s.total:.4f}" for s in breakdown.steps]
        data["steps"] = [{"kind": s.kind, "name": s.name, "label": s.label(lang), "value": s.value,
                          "total": s.total, "feature_value": s.feature_value} for s in breakdown.steps]
    lines += [f"  * {r}" for r in reasons]
    emit(args, data, "\n".join(lines))
    return 0


def cmd_drift(args) -> int:
    from explain.analysis import attribution_drift
    from explain.store import load_window
    try:
        _asker(args, Action.VIEW_EXPLANATION_DETAIL)
    except (InvalidValue, PermissionDenied) as exc:
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
    import time
    from pathlib import Path

    from explain.artifacts import (
        ModelMismatch,
        UnsupportedModelFile,
        feature_dictionary_from_json,
        load_user_model,
        save_artifact,
    )
    from explain.store import register_model

    settings = load_settings()
    try:
        features = feature_dictionary_from_json(args.features)
        artifact = load_user_model(args.model_file, features, args.version, variant=args.variant)
    except (OSError, ValueError, KeyError, ModelMismatch, UnsupportedModelFile) as exc:
        return fail(f"{args.model_file}: {exc}")
    folder = save_artifact(artifact, Path(settings.data_dir) / "models")
    with open_store(settings.database_url).begin() as conn:
        register_model(conn, artifact, str(folder.resolve()), int(time.time()), active=args.activate)
    emit(args, {"model_version": artifact.version, "kind": artifact.kind, "path": str(folder),
                "features": artifact.feature_names, "active": args.activate},
         f"model {artifact.version} ({artifact.kind}, {len(features)} features) registered at {folder}; "
         "decisions of this version arriving through the API or `bidlens ingest` are explained at ingest")
    return 0


def cmd_model_list(args) -> int:
    from sqlalchemy import select

    from store import schema as s
    with _conn() as conn:
        rows = conn.execute(select(s.models).order_by(s.models.c.created_ts)).all()
    data = [{"model_version": r.model_version, "kind": (r.meta or {}).get("kind", "lightgbm"), "path": r.path,
             "active": r.active, "created_ts": r.created_ts} for r in rows]
    emit(args, data, "\n".join(f"{d['model_version']:<28} {d['kind']:<9} {'active' if d['active'] else '':<7}"
                               f" {d['path']}" for d in data) or "no models registered")
    return 0


def register(sub) -> None:
    parser = sub.add_parser("explain", help="explanations of served decisions")
    inner = parser.add_subparsers(dest="explain_command", required=True, metavar="WHAT")
    decision = inner.add_parser("decision", help="a served bid as steps that add up to it, with reasons")
    decision.add_argument("decision_id", type=int)
    decision.add_argument("--lang", choices=("zh", "en"), default="zh")
    decision.add_argument("--scenario", default="demo", help="simulator scenario whose bidder served it")
    decision.add_argument("--roi-floor", type=float, default=None, help="default: the scenario's floor")
    decision.add_argument("--user", required=True, help="the store user asking: the bid's steps in yuan only for "
                                                        "those who may see the raw explanations")
    add_json_flag(decision)
    decision.set_defaults(func=cmd_decision)
    drift = inner.add_parser("drift", help="which features' contributions moved between two windows")
    for name in ("ref-from", "ref-to", "now-from", "now-to"):
        drift.add_argument(f"--{name}", type=int, required=True, help="epoch seconds (bucket_ts)")
    drift.add_argument("--campaign", default=None)
    drift.add_argument("--user", required=True, help="the store user asking (needs view_explanation_detail)")
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
    reg.add_argument("--activate", action="store_true", help="mark it the active model")
    add_json_flag(reg)
    reg.set_defaults(func=cmd_model_register)
    listing = models.add_parser("list", help="registered model versions")
    add_json_flag(listing)
    listing.set_defaults(func=cmd_model_list)
