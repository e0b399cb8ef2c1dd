"""The bidder's HTTP API (FastAPI), thin over the core.

Ingestion goes through app.ingest (validation, store, quarantine), the
policy through app.current_policy, tokens through app.tokens. This
module only speaks HTTP: auth headers, body limits, status codes, ETags.
"""

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from threading import Lock
from typing import Annotated

import pandas as pd
from fastapi import Depends, FastAPI, Header, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import models as m
from api.shadow import shadow_filler
from app.current_policy import DEFAULT_WINDOW_S, PolicyFilter, PoolAnswers, current_policy, policy_version
from app.ingest import (
    SPECS,
    Enrich,
    ExplainRows,
    Kind,
    catalogue,
    check_frame,
    limits_for,
    records_frame,
    refusal_json,
    safe_value,
    store_checked,
)
from app.launch import servable_versions
from app.tokens import Grant, ServiceToken, Tokens
from app.wiring import store_rule_pool
from control.config import Settings
from control.validation import Limits, Refusal
from explain.store import explain_registered
from store import api_repo, migrate, repo

log = logging.getLogger("bidlens.api")

PoolProvider = Callable[[Connection], PoolAnswers]
# The launch gate: the model versions whose decisions are accepted (None: any, the gate is off).
ServableProvider = Callable[[Connection], "frozenset[str] | None"]

# POST path, row kind, documented batch, summary: every batch goes through app.ingest the same way.
INGEST_ROUTES = (
    ("/v1/decisions", Kind.DECISION, m.DecisionBatch, "Send a batch of model decisions"),
    ("/v1/outcomes", Kind.OUTCOME, m.OutcomeBatch, "Send a batch of outcomes (increments)"),
    ("/v1/competitor-prices", Kind.COMPETITOR_PRICE, m.CompetitorPriceBatch,
     "Send competitors' prices (the competitor price guard's feed)"),
    ("/v1/stock", Kind.STOCK, m.StockBatch, "Send stock levels (the safety-stock guard's feed)"),
)


def no_rule_pool(_conn: Connection) -> PoolAnswers:
    return {}


@dataclass(frozen=True)
class ApiConfig:
    max_batch_rows: int = 10_000
    max_body_bytes: int = 16 << 20
    policy_window_s: int = DEFAULT_WINDOW_S
    limits: Limits = field(default_factory=Limits)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _errors(*statuses: int) -> dict:
    text_for = {400: "Malformed JSON", 401: "No token, a wrong one or a revoked one",
                403: "The token's role may not do this",
                413: "Body or batch over the limit", 415: "Not application/json",
                422: "Request does not have the documented shape", 503: "Not ready"}
    return {s: {"model": m.ErrorResponse, "description": text_for[s]} for s in statuses}


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


class _PolicyCache:
    """Serialized policies by (version, filter): resolved once per change, not per poll."""

    def __init__(self, size: int = 64):
        self.size, self.items, self.lock = size, OrderedDict(), Lock()

    def get(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            return None

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)


def policy_slots_json(policy: pd.DataFrame) -> str:
    """The policy's rows as a JSON array (pandas' C writer: 12,000 slots in ~50 ms, not ~200;
    15 significant digits, NaN as null)."""
    return policy.assign(override_ids=policy["override_ids"].map(list)).to_json(
        orient="records", double_precision=15)


def create_app(engine: Engine, clock: Callable[[], int], *, config: ApiConfig | None = None,
               pool_provider: PoolProvider = no_rule_pool, enrich: Enrich | None = None,
               explain: ExplainRows | None = None, servable: ServableProvider | None = None) -> FastAPI:
    """The API over `engine`; `clock` gives epoch seconds; `pool_provider` the rule pool's answers;
    `enrich` completes accepted decision rows before they are stored (api.shadow.shadow_filler);
    `explain` stores their SHAP values with them (explain.store.explain_registered); `servable` the
    launch gate's versions (app.launch.servable_versions): other versions' decisions are quarantined."""
    config = config or ApiConfig()
    tokens = Tokens(engine, clock)
    cache = _PolicyCache()
    app = FastAPI(title="BidLens bidder API", version="1",
                  description="Send decisions and outcomes; read the effective policy. See docs/INTEGRATION.md.")
    bearer = HTTPBearer(auto_error=False, description="A service token from `bidlens token create`.")

    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc: StarletteHTTPException):
        return error_response(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        return error_response(422, "invalid_request", where)

    @app.exception_handler(Exception)
    async def _crash(_request, exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")

    def grant(needed: Grant):
        def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> ServiceToken:
            token = tokens.authenticate(credentials.credentials if credentials else None)
            if token is None:
                raise ApiError(401, "unauthorized", "missing or invalid token",
                               {"WWW-Authenticate": "Bearer"})
            if not token.may(needed):
                raise ApiError(403, "forbidden", "this token may not do that")
            return token
        return Annotated[ServiceToken, Depends(check)]

    WriteToken = grant(Grant.WRITE_DATA)
    ReadToken = grant(Grant.READ_POLICY)

    async def read_body(request: Request) -> bytes:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, "unsupported_media_type", "send the batch as application/json")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > config.max_body_bytes:
            raise ApiError(413, "body_too_large", f"body over {config.max_body_bytes} bytes")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > config.max_body_bytes:
                raise ApiError(413, "body_too_large", f"body over {config.max_body_bytes} bytes")
        return bytes(body)

    def parse_rows(body: bytes) -> list:
        try:
            document = json.loads(body)  # NaN and Infinity literals parse; the rows carrying them are refused
        except (ValueError, RecursionError):
            raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("rows"), list) or not document["rows"]:
            raise ApiError(422, "invalid_batch", 'the body must be an object {"rows": [...]} with at least one row')
        if len(document["rows"]) > config.max_batch_rows:
            raise ApiError(413, "batch_too_large",
                           f"{len(document['rows'])} rows; send at most {config.max_batch_rows} per batch")
        return document["rows"]

    def ingest_rows(kind: Kind, rows: list, token: ServiceToken,
                    key: tuple[str, str] | None = None) -> tuple[int, dict]:
        """Check the rows, then store them, their refusals and (`key`: (scoped key, request hash)) the
        idempotency key with this response, in one transaction; AlreadyDone if the key was completed
        meanwhile by another request (nothing of this one stored)."""
        now = clock()
        objects = [(i, r) for i, r in enumerate(rows) if isinstance(r, dict)]
        not_objects = [Refusal(i, "_row", r, "each row must be a JSON object", {"_row": r})
                       for i, r in enumerate(rows) if not isinstance(r, dict)]
        known = SPECS[kind].all_columns
        ignored = sorted({safe_value(k) for _, r in objects for k in r if k not in known})
        quarantine_source = f"api:token:{token.token_id}:{token.name}"[:200]
        frame = records_frame([r for _, r in objects], kind)
        versions = None
        if servable is not None and kind is Kind.DECISION:
            with engine.connect() as conn:
                versions = servable(conn)
        known_here = catalogue(engine)
        batch = check_frame(kind, frame, now_ts=now, known_campaigns=known_here.campaigns,
                            known_packages=known_here.packages, limits=config.limits,
                            positions=[i for i, _ in objects], extra_refusals=not_objects, enrich=enrich,
                            explain=explain, servable_versions=versions)
        refusals = sorted(batch.refusals, key=lambda r: r.row_index)
        body = {"accepted": batch.accepted, "refused": len(refusals),
                "refusals": [refusal_json(r) for r in refusals],
                "quarantine": {"table": "quarantine", "kind": kind.value, "source": quarantine_source,
                               "received_ts": now},
                "ignored_fields": ignored[:50], "received_ts": now}
        status = 207 if refusals else 200

        def complete(conn: Connection) -> None:
            api_repo.complete_idempotency_key(conn, key[0], key[1], status, body, now)

        store_checked(engine, batch, now_ts=now, source="api", quarantine_source=quarantine_source,
                      then=None if key is None else complete)
        return status, body

    def replay(stored: dict, request_hash: str) -> Response:
        if stored.get("request_hash") != request_hash:
            raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used for another batch")
        return JSONResponse(stored["body"], status_code=stored["status"], headers={"Idempotent-Replayed": "true"})

    async def ingest(request: Request, kind: Kind, token: ServiceToken, key: str | None) -> Response:
        body = await read_body(request)
        rows = await run_in_threadpool(parse_rows, body)  # a 16 MiB parse must not stall the event loop
        if key is None:
            status, doc = await run_in_threadpool(ingest_rows, kind, rows, token)
            return JSONResponse(doc, status_code=status)
        scoped = f"{token.token_id}:{kind.value}:{key}"
        request_hash = hashlib.sha256(body).hexdigest()
        stored = await run_in_threadpool(api_repo.idempotency_document, engine, scoped)
        if stored is not None and stored.get("state") == api_repo.DONE:
            return replay(stored, request_hash)
        try:  # a "pending" key here was left by a request that died before it completed: taken over
            status, doc = await run_in_threadpool(ingest_rows, kind, rows, token, (scoped, request_hash))
        except api_repo.AlreadyDone as done:  # a parallel request with this key won: its answer, not ours
            return replay(done.document, request_hash)
        return JSONResponse(doc, status_code=status)

    KeyHeader = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+$",
                        description="Re-send a batch with the same key: stored once, response replayed.")]
    batch_responses = {200: {"model": m.IngestResult, "description": "Every row stored"},
                       207: {"model": m.IngestResult, "description": "Some rows refused and quarantined; "
                                                                      "the others stored"},
                       **_errors(400, 401, 403, 413, 415, 422)}

    def batch_body(model: type) -> dict:
        return {"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}

    def ingest_route(path: str, kind: Kind, batch: type, summary: str) -> None:
        async def post(request: Request, token: WriteToken, idempotency_key: KeyHeader = None) -> Response:
            return await ingest(request, kind, token, idempotency_key)
        post.__name__ = f"post_{kind.value}"
        app.post(path, tags=["ingest"], responses=batch_responses, openapi_extra=batch_body(batch),
                 response_model=None, summary=summary)(post)

    for path, kind, batch, summary in INGEST_ROUTES:
        ingest_route(path, kind, batch, summary)

    IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match", max_length=1000,
                                               description="The ETag of the last response: 304 if nothing changed.")]
    Filter = Annotated[str | None, Query(min_length=1, max_length=64)]

    @app.get("/v1/policy", tags=["policy"], response_model=None,
             responses={200: {"model": m.PolicyResponse, "description": "The effective policy"},
                        304: {"description": "Not modified since the ETag sent"}, **_errors(401, 403, 422)},
             summary="The effective policy for every live slot, or a filter")
    def get_policy(_token: ReadToken, campaign_id: Filter = None, audience_package: Filter = None,
                   etag_sent: IfNoneMatch = None) -> Response:
        now = clock()
        where = PolicyFilter(campaign_id, audience_package)
        with engine.connect() as conn:
            version = policy_version(conn, now, config.policy_window_s)
            etag = f'"{version}"'
            headers = {"ETag": etag, "Cache-Control": "no-cache"}
            if _etag_matches(etag_sent, etag):
                return Response(status_code=304, headers=headers)
            body = cache.get((version, where))
            if body is None:
                policy = current_policy(conn, now, pool_provider(conn), window_s=config.policy_window_s,
                                        where=where)
                head = json.dumps({"version": version, "generated_ts": now, "window_s": config.policy_window_s,
                                   "count": len(policy)}, separators=(",", ":"))
                body = f'{head[:-1]},"slots":{policy_slots_json(policy)}}}'.encode()
                cache.put((version, where), body)
        return Response(body, media_type="application/json", headers=headers)

    @app.get("/v1/guards", tags=["policy"], response_model=None,
             responses={200: {"model": m.GuardsResponse, "description": "Guard states and the kill switch"},
                        304: {"description": "Not modified since the ETag sent"}, **_errors(401, 403, 422)},
             summary="Guard state per campaign and the kill switch")
    def get_guards(_token: ReadToken, etag_sent: IfNoneMatch = None) -> Response:
        with engine.connect() as conn:
            guards = repo.load_guard_states(conn)
            kill = repo.load_kill_switch(conn)
        doc = {"kill_switch": {"global_on": kill.global_on, "campaigns": sorted(kill.campaigns)},
               "guards": [{"campaign_id": g.campaign_id, "mode": g.mode.value, "canary_share": g.canary_share,
                           "action": g.action.value, "bid_factor": g.bid_factor,
                           "event_id": g.event_id} for g in sorted(guards.values(), key=lambda g: g.campaign_id)]}
        version = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]
        headers = {"ETag": f'"{version}"', "Cache-Control": "no-cache"}
        if _etag_matches(etag_sent, headers["ETag"]):
            return Response(status_code=304, headers=headers)
        return JSONResponse({"version": version, **doc}, headers=headers)

    @app.get("/healthz", tags=["health"], response_model=m.Health, summary="The process is up")
    def healthz() -> m.Health:
        return m.Health(status="ok")

    @app.get("/readyz", tags=["health"], response_model=m.Health,
             responses={503: {"model": m.Health, "description": "Store unreachable or schema not current"}},
             summary="The store is reachable and its schema current")
    def readyz() -> Response:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            behind = migrate.pending(engine)
        except Exception:  # noqa: BLE001 - any failure to reach the store means not ready
            log.warning("readyz: store unreachable", exc_info=True)
            return JSONResponse({"status": "not_ready", "reason": "store unreachable"}, status_code=503)
        if behind:
            return JSONResponse({"status": "not_ready", "reason": "schema not current; run bidlens init"},
                                status_code=503)
        return JSONResponse({"status": "ready", "reason": None})

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for _, _, model, _ in INGEST_ROUTES:
                doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(doc.pop("$defs", {}))
                components[model.__name__] = doc
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


def api_config(settings: Settings) -> ApiConfig:
    return ApiConfig(max_batch_rows=settings.api_max_batch_rows, max_body_bytes=settings.api_max_body_mb << 20,
                     policy_window_s=settings.policy_window_s, limits=limits_for(settings))


def store_app(engine: Engine, clock: Callable[[], int], settings: Settings) -> FastAPI:
    """The bidder API over a store as `bidlens api` serves it: the rule pool in force, its shadow
    score on every decision, SHAP values stored with the decisions of registered models, and the launch
    gate: decisions of a version not approved to serve are quarantined (unless an admin switched it off)."""
    return create_app(engine, clock, config=api_config(settings), pool_provider=store_rule_pool(),
                      enrich=shadow_filler(engine), explain=explain_registered(engine),
                      servable=servable_versions)
