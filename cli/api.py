"""Bidder integration commands: `api` (serve), `token create|revoke|list`, `campaigns import`,
`packages import`, `ingest decisions|outcomes|competitor-prices|stock`."""

from __future__ import annotations

import sys

from app.ingest import Kind, ingest_file, limits_for
from app.tokens import TokenRole, Tokens
from app.wiring import open_control, open_engine, store_clock
from cli.auth import REFUSALS, add_login, login_or_machine
from cli.output import add_json_flag, emit, fail
from control.config import load_settings
from control.domain import ConflictError


def _engine():
    return open_engine()


def cmd_api(args) -> int:
    import uvicorn

    from api.app import store_app

    settings = load_settings()
    engine = open_engine(settings)
    app = store_app(engine, store_clock(engine), settings)
    port = args.port or settings.api_port
    print(f"bidlens api: serving on http://{args.host}:{port} (contract at /openapi.json)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=port, log_level="info")
    return 0


def _tokens(control) -> Tokens:
    return Tokens(control.engine, store_clock(control.engine))


def cmd_token_create(args) -> int:
    control = open_control()
    try:
        token, secret = _tokens(control).create(login_or_machine(control, args.user), args.role, args.name or "")
    except REFUSALS as exc:
        return fail(str(exc))
    emit(args, {**token.as_json(), "token": secret},
         f"token {token.token_id} ({token.role.value}, {token.name}) created. It is shown only now:\n{secret}")
    return 0


def cmd_token_revoke(args) -> int:
    control = open_control()
    try:
        token = _tokens(control).revoke(login_or_machine(control, args.user), args.token_id)
    except REFUSALS as exc:
        return fail(str(exc))
    emit(args, token.as_json(), f"token {token.token_id} ({token.name}) revoked")
    return 0


def cmd_token_list(args) -> int:
    engine = _engine()
    tokens = Tokens(engine, store_clock(engine)).list(None)
    lines = [f"{t.token_id:>4}  {t.role.value:<7} {'active' if t.active else 'revoked':<8} {t.name}"
             for t in tokens]
    emit(args, [t.as_json() for t in tokens], "\n".join(lines) or "no tokens")
    return 0


INGEST_KINDS = {"decisions": Kind.DECISION, "outcomes": Kind.OUTCOME, "competitor-prices": Kind.COMPETITOR_PRICE,
                "stock": Kind.STOCK}


def cmd_ingest(args) -> int:
    from api.shadow import shadow_filler
    from app.launch import servable_versions
    from explain.store import explain_registered

    settings = load_settings()
    budget = (args.memory_mb or settings.ingest_memory_mb) << 20
    engine = _engine()
    with engine.connect() as conn:
        servable = servable_versions(conn)  # the launch gate: other versions' decisions are quarantined
    try:
        report = ingest_file(engine, INGEST_KINDS[args.kind], args.file, now_ts=store_clock(engine)(),
                             budget_bytes=budget, limits=limits_for(settings), enrich=shadow_filler(engine),
                             explain=explain_registered(engine), servable_versions=servable)
    except (OSError, ValueError, ConflictError) as exc:
        return fail(str(exc))
    data = report.as_json()
    lines = [f"{args.file}: {report.rows} rows, {report.accepted} stored, {report.refused} refused "
             f"({report.chunks} chunks)" + (f"; {report.skipped} rows stored by an earlier run of this file, "
                                            "not again" if report.skipped else "")]
    if report.refused:
        lines.append(f"refused rows are in table quarantine (kind={report.kind}, source={report.source}, "
                     f"received_ts={report.received_ts}):")
        lines += [f"  {n:>8}  {reason}" for reason, n in data["refusals_by_reason"].items()]
    emit(args, data, "\n".join(lines))
    return 0


def cmd_catalogue_import(args) -> int:
    """`campaigns import` and `packages import`: the catalogue the bidder's rows must name."""
    from app.campaigns_import import import_campaigns, import_packages, read_table

    load = import_campaigns if args.catalogue == "campaigns" else import_packages
    engine = _engine()
    try:
        loaded, refusals = load(engine, read_table(args.file), store_clock(engine))
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    lines = [f"{args.file}: {loaded} {args.catalogue} loaded, {len(refusals)} refused"]
    lines += [f"  row {r.index}: {r.field}={r.value!r}: {r.reason}" for r in refusals]
    emit(args, {"loaded": loaded, "refused": len(refusals),
                "refusals": [{"index": r.index, "field": r.field, "value": r.value, "reason": r.reason}
                             for r in refusals]}, "\n".join(lines))
    return 0 if not refusals else 1


def register(sub) -> None:
    p = sub.add_parser("api", help="serve the bidder HTTP API (decisions, outcomes, effective policy)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="default: BIDLENS_API_PORT")
    p.set_defaults(func=cmd_api)

    token = sub.add_parser("token", help="service tokens for the bidder API").add_subparsers(
        dest="token_command", required=True)
    p = token.add_parser("create", help="create a token (printed once; only its hash is stored)")
    p.add_argument("--role", required=True, choices=[r.value for r in TokenRole])
    p.add_argument("--name", help="a name saying who uses it")
    add_login(p, required=False)
    add_json_flag(p)
    p.set_defaults(func=cmd_token_create)
    p = token.add_parser("revoke", help="revoke a token (it stops working at once)")
    p.add_argument("token_id", type=int)
    add_login(p, required=False)
    add_json_flag(p)
    p.set_defaults(func=cmd_token_revoke)
    p = token.add_parser("list", help="list tokens (never their secrets)")
    add_json_flag(p)
    p.set_defaults(func=cmd_token_list)

    for name, columns in (("campaigns", "campaign_id, name, category, daily_budget, budget_cap, avg_order_value, "
                                        "gross_margin[, target_roi]"),
                          ("packages", "code, name_zh, name_en[, kind: life_scene|value_tier]")):
        catalogue = sub.add_parser(name, help=f"the {name} bidder rows must name").add_subparsers(
            dest=f"{name}_command", required=True)
        p = catalogue.add_parser("import", help=f"insert or update {name} from a CSV, JSON Lines or Parquet file "
                                                f"({columns})")
        p.add_argument("file")
        add_json_flag(p)
        p.set_defaults(func=cmd_catalogue_import, catalogue=name)

    p = sub.add_parser("ingest", help="load decisions, outcomes or a breaker feed (competitor prices, stock) "
                                      "from a CSV, JSON Lines or Parquet file")
    p.add_argument("kind", choices=list(INGEST_KINDS))
    p.add_argument("file")
    p.add_argument("--memory-mb", type=int, default=0, help="memory budget; default BIDLENS_INGEST_MEMORY_MB")
    add_json_flag(p)
    p.set_defaults(func=cmd_ingest)
