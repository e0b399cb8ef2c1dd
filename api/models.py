"""The API's documented shapes (pydantic): requests, responses, errors.

Rows of a batch are documented here with their types and limits, but a row
that breaks them does not fail the batch: the core (app.ingest) refuses it
alone and quarantines it, and the response names it. So the batch body is
parsed by the app itself and these row models serve the OpenAPI document.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from control import rows
from control.validation import MAX_FUTURE_S, Limits

MAX_BID = Limits().max_bid
MAX_MONEY = MAX_BID * 1e6


def _row_field(field: rows.Field, *, bid_cap: bool) -> tuple[object, object]:
    """(type, pydantic Field) of one row field, with its documented limits."""
    required = ... if field.required else None
    doc = field.doc
    if field.kind == "text" or field.max_length:
        kind = Literal[field.choices] if field.choices else str
        limits = {} if field.choices else {"min_length": 1 if field.kind == "text" else 0,
                                            "max_length": field.max_length}
        return (kind if field.required else kind | None), Field(required, description=doc, **limits)
    if field.name == "features":
        return dict[str, float] | None, Field(None, max_length=rows.MAX_FEATURES, description=doc)
    if field.kind == "bool":
        return bool, Field(required, description=doc)
    if field.kind in ("ts", "count"):
        if field.name == "bucket_ts":
            doc += f" At most {MAX_FUTURE_S} s ahead of the server clock."
        return int, Field(required, ge=0, description=doc)
    top = {"money": MAX_BID if bid_cap else MAX_MONEY, "share": 1, "rate": None}[field.kind]
    return (float if field.required else float | None), Field(required, ge=0, le=top, description=doc)


def _row_model(name: str, doc: str, fields: tuple[rows.Field, ...]) -> type[BaseModel]:
    return create_model(name, __config__=ConfigDict(extra="allow"), __doc__=doc,
                        **{f.name: _row_field(f, bid_cap=f.name == "bid") for f in fields})


DecisionRow = _row_model("DecisionRow", "One model decision for one slot (campaign x audience package x time "
                         "bucket).", rows.DECISION_FIELDS)
OutcomeRow = _row_model("OutcomeRow", "What a slot produced, as far as known at known_ts (increments; "
                        "conversions arrive late).", rows.OUTCOME_FIELDS)
CompetitorPriceRow = _row_model("CompetitorPriceRow", "A competitor's price for the item a campaign sells, "
                                "against that competitor's reference price.", rows.COMPETITOR_PRICE_FIELDS)
StockRow = _row_model("StockRow", "The stock of the item a campaign sells.", rows.STOCK_FIELDS)


class DecisionBatch(BaseModel):
    rows: list[DecisionRow] = Field(min_length=1, description="At most max_batch_rows rows (413 beyond).")


class OutcomeBatch(BaseModel):
    rows: list[OutcomeRow] = Field(min_length=1, description="At most max_batch_rows rows (413 beyond).")


class CompetitorPriceBatch(BaseModel):
    rows: list[CompetitorPriceRow] = Field(min_length=1, description="At most max_batch_rows rows (413 beyond).")


class StockBatch(BaseModel):
    rows: list[StockRow] = Field(min_length=1, description="At most max_batch_rows rows (413 beyond).")


class RefusedRow(BaseModel):
    index: int = Field(description="Position of the row in the batch, from 0.")
    field: str
    reason: str
    value: str | None = Field(description="The refused value as text (may be NaN, null or anything).")


class QuarantineRef(BaseModel):
    table: Literal["quarantine"] = "quarantine"
    kind: Literal["decision", "outcome", "competitor_price", "stock"]
    source: str
    received_ts: int


class IngestResult(BaseModel):
    """200 when every row was stored; 207 when some were refused (stored rows stay stored)."""

    accepted: int
    refused: int
    refusals: list[RefusedRow]
    quarantine: QuarantineRef
    ignored_fields: list[str] = Field(description="Fields BidLens does not know; not stored.")
    received_ts: int


class PolicySlot(BaseModel):
    campaign_id: str
    audience_package: str
    bucket_ts: int = Field(description="Bucket of the model decision the slot's policy is based on.")
    bid: float = Field(description="The bid to serve, yuan per click.")
    audience_on: bool
    budget_share: float
    decided_by: Literal["model", "guard", "rule_pool", "override"]
    model_bid: float
    reason: str = Field(description="model | guard:<mode> (the rule pool) | guard:<mode>:bid_cut | "
                                    "guard:<mode>:pause | kill_switch | override:<ids> | rule_pool_gap")
    override_ids: list[int]
    rule_id: str | None
    guard_event_id: int | None
    canary_share: float = Field(description="In probation: share of the slot's traffic to send to the model.")
    daily_budget: float | None = Field(description="Set by a budget override, yuan; null: unchanged.")
    bid_factor: float = Field(description="A guard's bid cut (降价): serve your fresh bid x this; 1: no cut.")
    model_version: str | None = Field(description="The model version that should decide the slot (the launch "
                                                  "gate's serving version, or during a guarded rollout the new "
                                                  "one for its share of slots); null: none launched yet.")


class PolicyResponse(BaseModel):
    version: str = Field(description="Same version, same policy; also the ETag.")
    generated_ts: int
    window_s: int
    count: int
    slots: list[PolicySlot]


class KillSwitchOut(BaseModel):
    global_on: bool
    campaigns: list[str]


class GuardOut(BaseModel):
    campaign_id: str
    mode: Literal["model", "tripped", "probation", "forced_pool", "forced_model"]
    canary_share: float
    event_id: int | None
    action: Literal["pool", "bid_cut", "pause", "alert"] = Field(
        description="While the guard holds the campaign (tripped, probation): the rule pool, a bid cut or a pause "
                    "(alert: a guard that only warns; it is listed only when no guard holds the campaign).")
    bid_factor: float = Field(description="bid_cut: the model's bid is multiplied by this.")


class GuardsResponse(BaseModel):
    version: str
    kill_switch: KillSwitchOut
    guards: list[GuardOut]


class Health(BaseModel):
    status: str
    reason: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
