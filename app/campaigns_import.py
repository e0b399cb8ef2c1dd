"""Loading the catalogue a bidder's rows refer to: campaigns and audience packages (rows naming
unknown ones are refused).

Each row is checked as a control.domain.Campaign or AudiencePackage; a bad row is named with its
field and reason and not loaded; good rows are inserted or updated, and the import is audited.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from control.audit import AuditRecord
from control.domain import AudiencePackage, Campaign, InvalidValue
from store import repo

NUMBER_FIELDS = frozenset({"daily_budget", "budget_cap", "avg_order_value", "gross_margin", "target_roi"})


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


def _record(cls, row: dict, numbers: frozenset[str] = frozenset()):
    """One catalogue row as `cls`; a missing optional field takes the domain's default."""
    values = {}
    for f in fields(cls):
        value = row.get(f.name)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            if f.default is not MISSING:
                continue
            raise InvalidValue(f.name, value, "is required")
        if f.name in numbers:
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InvalidValue(f.name, value, "must be a number") from None
        else:
            value = str(value)
        values[f.name] = value
    return cls(**values)


def _import(engine: Engine, frame: pd.DataFrame, clock: Callable[[], int], build: Callable[[dict], object],
            upsert: Callable, action: str, entity: str, key: str) -> tuple[int, list[CampaignRefusal]]:
    good, refusals = [], []
    for i, row in enumerate(frame.to_dict("records")):
        try:
            good.append(build(row))
        except InvalidValue as exc:
            refusals.append(CampaignRefusal(i, exc.field, str(exc.value)[:200], exc.reason))
    with engine.begin() as conn:
        upsert(conn, good)
        repo.append_audit(conn, AuditRecord(
            clock(), "system", action, entity, "*", None,
            {"loaded": len(good), "refused": len(refusals), f"{key}s": [getattr(g, key) for g in good][:200]}))
    return len(good), refusals


def import_campaigns(engine: Engine, frame: pd.DataFrame,
                     clock: Callable[[], int]) -> tuple[int, list[CampaignRefusal]]:
    """Insert or update the valid campaigns; returns (loaded, refusals). Run by the machine's
    admin from the CLI, audited as "system"."""
    return _import(engine, frame, clock, lambda row: _record(Campaign, row, NUMBER_FIELDS), repo.upsert_campaigns,
                   "campaigns.import", "campaign", "campaign_id")


def import_packages(engine: Engine, frame: pd.DataFrame,
                    clock: Callable[[], int]) -> tuple[int, list[CampaignRefusal]]:
    """Insert or update the valid audience packages (code, name_zh, name_en[, kind]); returns (loaded,
    refusals). Run by the machine's admin from the CLI, audited as "system"."""
    return _import(engine, frame, clock, lambda row: _record(AudiencePackage, row), repo.upsert_audience_packages,
                   "packages.import", "audience_package", "code")
