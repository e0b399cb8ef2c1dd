"""A small client a bidder (or the simulator acting as one) uses to talk to the BidLens API.

    client = BidLensClient("http://127.0.0.1:8600", token)
    summary = client.send_decisions(rows)          # batches of 1,000, each with an Idempotency-Key
    snapshot = client.policy()                     # full policy; later polls return None if unchanged

Retries are safe: every batch carries an Idempotency-Key, so a batch re-sent after a timeout is
stored once. Rows are plain dicts (or a pandas DataFrame); NaN goes out as the NaN literal and
comes back as a refused row, it does not fail the batch.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import pandas as pd
import requests

RETRY_STATUSES = {409, 429, 502, 503, 504}


class ApiError(RuntimeError):
    def __init__(self, status: int, body: dict | str):
        self.status, self.body = status, body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status}: {error.get('code', '')} {error.get('message', body)}".strip())


@dataclass
class SendSummary:
    batches: int = 0
    accepted: int = 0
    refused: int = 0
    refusals: list[dict] = field(default_factory=list)  # index is the row's position in all rows sent


@dataclass(frozen=True)
class PolicySnapshot:
    version: str
    generated_ts: int
    slots: list[dict]

    def by_slot(self) -> dict[tuple[str, str], dict]:
        return {(s["campaign_id"], s["audience_package"]): s for s in self.slots}


def _records(rows) -> Iterator[dict]:
    if hasattr(rows, "to_dict"):  # a pandas DataFrame
        yield from rows.to_dict("records")
    else:
        yield from rows


def _batches(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def serve_policy(plan, snapshot: PolicySnapshot | None):
    """What a bidder serves for its fresh model plan under the effective policy.

    `plan` is a pandas DataFrame with campaign_id, audience_package, bid, audience_on (the
    model's decision for this bucket). Where the policy has the slot decided by an override,
    the rule pool or a guard, its bid and audience_on are served (a guard's bid cut applied to
    the fresh bid); elsewhere the model's. Adds the
    columns decided_by, decided_reason, canary_share (in probation: the share of the
    slot's traffic to send to the model's bid), daily_budget (a budget override's, else
    NaN), rule_id, override_ids and guard_event_id. The policy is as of the last poll,
    so a rule pool multiplier scales the model's previous bid.
    """
    served = plan.copy()
    served["model_bid"] = plan["bid"]
    served["decided_by"], served["decided_reason"], served["canary_share"] = "model", "model", 0.0
    served["daily_budget"], served["rule_id"], served["guard_event_id"] = float("nan"), None, None
    served["override_ids"] = [()] * len(served)
    if snapshot is None or not snapshot.slots:
        return served
    policy = pd.DataFrame(snapshot.slots)
    policy = policy[policy["decided_by"] != "model"]
    for column, default in (("daily_budget", float("nan")), ("rule_id", None), ("override_ids", None),
                            ("guard_event_id", None), ("bid_factor", 1.0)):  # optional in a trimmed or older policy
        if column not in policy:
            policy[column] = default
    keys = ["campaign_id", "audience_package"]
    joined = served[keys].merge(policy, on=keys, how="left")
    take = joined["decided_by"].notna().to_numpy()
    joined["override_ids"] = [tuple(ids) if isinstance(ids, list) else () for ids in joined["override_ids"]]
    joined["daily_budget"] = joined["daily_budget"].astype(float)
    for column, source in (("bid", "bid"), ("audience_on", "audience_on"), ("decided_by", "decided_by"),
                           ("decided_reason", "reason"), ("canary_share", "canary_share"),
                           ("daily_budget", "daily_budget"), ("rule_id", "rule_id"),
                           ("override_ids", "override_ids"), ("guard_event_id", "guard_event_id")):
        values = served[column].to_numpy(dtype=object).copy()
        values[take] = joined.loc[take, source].to_numpy(dtype=object)
        served[column] = pd.Series(values, index=served.index).infer_objects()
    # A guard's bid cut scales the fresh bid, not the one the policy saw at its last poll.
    factor = joined["bid_factor"].fillna(1.0).to_numpy(dtype=float)
    cut = take & (factor != 1.0)
    if cut.any():
        bids = served["bid"].to_numpy(dtype=float).copy()
        bids[cut] = plan["bid"].to_numpy(dtype=float)[cut] * factor[cut]
        served["bid"] = bids
    return served


class BidLensClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0, retries: int = 3,
                 backoff_s: float = 0.5, session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries, self.backoff_s = timeout, retries, backoff_s
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self._etags: dict[tuple, tuple[str, PolicySnapshot]] = {}

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        for attempt in range(self.retries + 1):
            try:
                response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout):
                if attempt == self.retries:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return response
            time.sleep(self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _json(response: requests.Response) -> dict:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code not in (200, 207):
            raise ApiError(response.status_code, body)
        return body

    def post_batch(self, kind: str, rows: list[dict], idempotency_key: str | None = None) -> dict:
        """POST one batch to /v1/<kind> (decisions, outcomes, competitor-prices, stock); returns the IngestResult."""
        body = json.dumps({"rows": rows}, allow_nan=True, default=str)
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return self._json(self._request("POST", f"/v1/{kind}", data=body.encode(), headers=headers))

    def _send(self, kind: str, rows, batch_rows: int, key_prefix: str | None) -> SendSummary:
        summary = SendSummary()
        prefix = key_prefix or uuid.uuid4().hex
        offset = 0
        for number, batch in enumerate(_batches(_records(rows), batch_rows)):
            result = self.post_batch(kind, batch, f"{prefix}-{number}")
            summary.batches += 1
            summary.accepted += result["accepted"]
            summary.refused += result["refused"]
            summary.refusals += [{**r, "index": r["index"] + offset} for r in result["refusals"]]
            offset += len(batch)
        return summary

    def send_decisions(self, rows, *, batch_rows: int = 1000, key_prefix: str | None = None) -> SendSummary:
        """Send rows in batches; `key_prefix` makes the idempotency keys stable across a re-run."""
        return self._send("decisions", rows, batch_rows, key_prefix)

    def send_outcomes(self, rows, *, batch_rows: int = 1000, key_prefix: str | None = None) -> SendSummary:
        return self._send("outcomes", rows, batch_rows, key_prefix)

    def send_stock(self, rows, *, batch_rows: int = 1000, key_prefix: str | None = None) -> SendSummary:
        """Stock levels per campaign (the safety-stock guard's feed)."""
        return self._send("stock", rows, batch_rows, key_prefix)

    def send_competitor_prices(self, rows, *, batch_rows: int = 1000, key_prefix: str | None = None) -> SendSummary:
        """Competitors' prices against their references (the competitor price guard's feed)."""
        return self._send("competitor-prices", rows, batch_rows, key_prefix)

    def policy(self, *, campaign_id: str | None = None, audience_package: str | None = None,
               only_changes: bool = True) -> PolicySnapshot | None:
        """The effective policy; with only_changes, None when nothing changed since the last call."""
        key = (campaign_id, audience_package)
        params = {k: v for k, v in (("campaign_id", campaign_id), ("audience_package", audience_package)) if v}
        headers = {"If-None-Match": self._etags[key][0]} if key in self._etags else {}
        response = self._request("GET", "/v1/policy", params=params, headers=headers)
        if response.status_code == 304:
            return None if only_changes else self._etags[key][1]
        body = self._json(response)
        snapshot = PolicySnapshot(body["version"], body["generated_ts"], body["slots"])
        self._etags[key] = (response.headers["ETag"], snapshot)
        return snapshot

    def guards(self) -> dict:
        return self._json(self._request("GET", "/v1/guards"))

    def ready(self) -> bool:
        try:
            return self._request("GET", "/readyz").status_code == 200
        except requests.RequestException:
            return False
