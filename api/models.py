"""The API's documented shapes (pydantic): requests, responses, errors.

Rows of a batch are documented here with their types and limits, but a row
that breaks them does not fail the batch: the core (control.ingest) refuses it
alone and quarantines it, and the response names it. So the batch body is
parsed by the app itself and these row models serve the OpenAPI document.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from control.validation import MAX_FUTURE_S, Limits

MAX_BID = Limits().max_bid
MAX_MONEY = MAX_BID * 1e6


class DecisionRow(BaseModel):
    """One model decision for one slot (campaign x audience package x time bucket)."""

    model_config = ConfigDict(extra="allow")

    campaign_id: str = Field(min_length=1, max_length=64, description="A campaign BidLens knows.")
    audience_package: str = Field(min_length=1, max_length=64, description="Audience package code.")
    bucket_ts: int = Field(ge=0, description=f"Bucket start, epoch seconds UTC; at most {MAX_FUTURE_S} s "
                                             "ahead of the server clock.")
    model_version: str = Field(min_length=1, max_length=64)
    bid: float = Field(ge=0, le=MAX_BID, description="Served bid, yuan per click.")
    budget_share: float = Field(ge=0, le=1, description="Share of the campaign's daily budget for the bucket.")
    audience_on: bool = Field(description="Whether the audience package is served.")
    pred_ctr: float = Field(ge=0, le=1)
    pred_cvr: float = Field(ge=0, le=1)
    pred_value: float = Field(ge=0, le=MAX_MONEY, description="Predicted GMV per click, yuan.")
    pred_roi: float = Field(ge=0, description="Predicted GMV / spend at this bid.")
    model_bid: float | None = Field(None, ge=0, le=MAX_MONEY,
                                    description="The model's own bid, yuan per click (default: bid).")
    pacing: float | None = Field(None, ge=0, description="Pacing multiplier applied to the bid (default 1).")
    pool_bid: float | None = Field(None, ge=0, le=MAX_MONEY, description="The rule pool's bid (shadow).")
    pool_pred_roi: float | None = Field(None, ge=0)
    decided_by: Literal["model", "rule_pool", "override"] | None = Field(
        None, description="Who decided the served bid (default model).")
    decided_reason: str | None = Field(None, max_length=200)
    features: dict[str, float] | None = Field(None, max_length=500,
                                               description="What the model saw (finite numbers).")


class OutcomeRow(BaseModel):
    """What a slot produced, as far as known at known_ts (increments; conversions arrive late)."""

    model_config = ConfigDict(extra="allow")

    campaign_id: str = Field(min_length=1, max_length=64)
    audience_package: str = Field(min_length=1, max_length=64)
    bucket_ts: int = Field(ge=0)
    known_ts: int = Field(ge=0, description="When these figures became known; >= bucket_ts.")
    impressions: int = Field(ge=0)
    clicks: int = Field(ge=0, description="<= impressions")
    spend: float = Field(ge=0, le=MAX_MONEY, description="yuan")
    orders: int = Field(ge=0)
    gmv: float = Field(ge=0, le=MAX_MONEY, description="yuan")


class DecisionBatch(BaseModel):
    rows: list[DecisionRow] = Field(min_length=1, description="At most max_batch_rows rows (413 beyond).")


class OutcomeBatch(BaseModel):
    rows: list[OutcomeRow] = Field(min_length=1, description="At most max_batch_rows rows (413 beyond).")


class RefusedRow(BaseModel):
    index: int = Field(description="Position of the row in the batch, from 0.")
    field: str
    reason: str
    value: str | None = Field(description="The refused value as text (may be NaN, null or anything).")


class QuarantineRef(BaseModel):
    table: Literal["quarantine"] = "quarantine"
    kind: Literal["decision", "outcome"]
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
    decided_by: Literal["model", "rule_pool", "override"]
    model_bid: float
    reason: str = Field(description="model | guard:<mode> | kill_switch | override:<ids> | rule_pool_gap")
    override_ids: list[int]
    rule_id: str | None
    guard_event_id: int | None
    canary_share: float = Field(description="In probation: share of the slot's traffic to send to the model.")
    daily_budget: float | None = Field(description="Set by a budget override, yuan; null: unchanged.")


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
