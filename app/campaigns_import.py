"""Loading the campaign catalogue a bidder's rows refer to (rows for unknown campaigns are refused).

Each row is checked as a control.domain.Campaign; a bad row is named with its field and
reason and not loaded; good rows are inserted or updated, and the import is audited.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from control.audit import AuditRecord
from control.domain import Campaign, InvalidValue
from store import repo

CAMPAIGN_FIELDS = [f.name for f in fields(Campaign)]
NUMBER_FIELDS = {"daily_budget", "budget_cap", "avg_order_value", "gross_margin", "target_roi"}


@dataclass(frozen=True)
class CampaignRefusal:
    index: int
    field: str
    value: str
    reason: str


def read_table(path: str | Path) -> pd.DataFrame:
    """A small file (CSV, JSON Lines, Parquet) as a frame of text and numbers."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True, dtype=False)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise ValueError(f"file {path.name}: unknown format {suffix!r}; use .csv, .jsonl or .parquet")


def _campaign(row: dict) -> Campaign:
    values = {}
    for name in CAMPAIGN_FIELDS:
        value = row.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            if name == "target_roi":
                continue  # the domain's default
            raise InvalidValue(name, value, "is required")
        if name in NUMBER_FIELDS:
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InvalidValue(name, value, "must be a number") from None
        else:
            value = str(value)
        values[name] = value
    return Campaign(**values)


def import_campaigns(engine: Engine, frame: pd.DataFrame,
                     clock: Callable[[], int]) -> tuple[int, list[CampaignRefusal]]:
    """Insert or update the valid campaigns; returns (loaded, refusals). Run by the machine's
    admin from the CLI, audited as "system"."""
    good, refusals = [], []
    for i, row in enumerate(frame.to_dict("records")):
        try:
            good.append(_campaign(row))
        except InvalidValue as exc:
            refusals.append(CampaignRefusal(i, exc.field, str(exc.value)[:200], exc.reason))
    with engine.begin() as conn:
        repo.upsert_campaigns(conn, good)
        repo.append_audit(conn, AuditRecord(
            clock(), "system", "campaigns.import", "campaign", "*", None,
            {"loaded": len(good), "refused": len(refusals),
             "campaign_ids": [c.campaign_id for c in good][:200]}))
    return len(good), refusals
