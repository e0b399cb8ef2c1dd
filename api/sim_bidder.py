"""The simulator as an external bidder: it talks to BidLens only through the bidder API.

`ApiBidder` is a sim.live.LiveBidder: each bucket it polls the effective policy
(GET /v1/policy), serves its fresh plan under it (api.client.serve_policy), and
posts the served decisions with the model's features and the outcome increments
(docs/INTEGRATION.md, section 9). Nothing is read from or written to the store
directly; the API explains the decisions at ingest with the registered model.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from api.client import BidLensClient, serve_policy
from control import rows
from sim.engine import BucketResult, Simulation

log = logging.getLogger("bidlens.sim_bidder")

# What a bidder sends per decision (control.rows); the features go as their own document.
API_FIELDS = tuple(f for f in rows.names(rows.DECISION_FIELDS) if f != "features")
_OPTIONAL = tuple(f.name for f in rows.DECISION_FIELDS if f.stored_nullable and f.name != "features")


def policy_arrays(served: pd.DataFrame) -> dict[str, np.ndarray]:
    """api.client.serve_policy's frame as the simulator's served policy (sim.engine's policy_for answer)."""
    ids = np.empty(len(served), dtype=object)
    ids[:] = list(served["override_ids"])
    return {"bid": served["bid"].to_numpy(np.float64), "audience_on": served["audience_on"].to_numpy(bool),
            "canary_share": served["canary_share"].to_numpy(np.float64),
            "decided_by": served["decided_by"].to_numpy(object), "reason": served["decided_reason"].to_numpy(object),
            "rule_id": served["rule_id"].to_numpy(object), "override_ids": ids,
            "guard_event_id": served["guard_event_id"].to_numpy(object),
            "daily_budget": served["daily_budget"].to_numpy(np.float64)}


def decisions_for_api(result: BucketResult) -> list[dict]:
    """The bucket's served decisions as the bidder API's rows, with the model's features.

    Optional fields without a value go as null, never NaN (NaN would be refused)."""
    frame = result.decisions
    records = frame[list(API_FIELDS)].to_dict("records")
    optional = {c: frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in _OPTIONAL}
    names = list(result.feature_names)
    for i, (row, values) in enumerate(zip(records, result.features.tolist(), strict=True)):
        row.update({c: optional[c][i] for c in _OPTIONAL})
        row["features"] = dict(zip(names, values, strict=True))
    return records


class ApiBidder:
    """sim.live.LiveBidder through the bidder API (api.client)."""

    def __init__(self, client: BidLensClient):
        self.client = client

    def step(self, sim: Simulation) -> tuple[BucketResult, int, int]:
        snapshot = self.client.policy(only_changes=False)  # 304 when unchanged: the cached one
        result = sim.step(policy_for=lambda plan: policy_arrays(serve_policy(plan, snapshot)))
        key = f"sim-{result.model_version}-{result.bucket_ts}"  # a re-sent bucket is stored once
        sent = self.client.send_decisions(decisions_for_api(result), key_prefix=f"{key}-d")
        outcomes = self.client.send_outcomes(result.outcomes_frame, key_prefix=f"{key}-o")
        self.client.send_stock(result.stock_frame(sim.catalog.campaign_ids), key_prefix=f"{key}-s")
        if sent.refused or outcomes.refused:
            log.warning("bucket %s: the API refused %d decisions and %d outcomes: %s", result.bucket_ts,
                        sent.refused, outcomes.refused, (sent.refusals + outcomes.refusals)[:3])
        return result, sent.accepted, outcomes.accepted

    def drain(self, late: pd.DataFrame) -> int:
        return self.client.send_outcomes(late, key_prefix="sim-drain").accepted
