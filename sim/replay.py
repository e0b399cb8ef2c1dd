"""Replay of a logged auction file: offline evaluation of a bidder, the iPinYou method.

Rules (docs/SIMULATOR.md has the log format):
- the bidder bids on every logged auction; its bid is first capped by `max_bid` and by
  the remaining budget of the auction's episode;
- it wins when bid >= market_price (win_rule "ge", the default, as in the iPinYou
  benchmark code) or bid > market_price ("gt"), and then pays the market price
  (second price) and gets the logged click, conversions and value;
- budgets reset per episode: every `episode_size` auctions, or per hour or day of
  `timestamp` (Asia/Shanghai days), or never (one episode) when no budget is set.

The log streams in chunks (CSV through pandas, Parquet through pyarrow record
batches): memory stays flat and millions of rows replay in seconds. Budget
accounting is vectorised: an episode whose winning costs stay within its budget
is settled with one cumulative sum; only an episode where the budget binds is
walked block by block (each block ends at the first auction the budget blocks).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from control.clock import PROMOTION_TZ_OFFSET_S
from control.domain import InvalidValue

REQUIRED = ("market_price", "click")
Bidder = Callable[[pd.DataFrame], np.ndarray]


@dataclass
class Totals:
    auctions: int = 0
    impressions: int = 0
    clicks: int = 0
    conversions: float = 0.0
    cost: float = 0.0
    value: float = 0.0

    def add(self, other: Totals) -> None:
        for f in ("auctions", "impressions", "clicks", "conversions", "cost", "value"):
            setattr(self, f, getattr(self, f) + getattr(other, f))

    def as_json(self) -> dict:
        def div(a, b, scale=1.0):
            return round(a / b * scale, 6) if b else None
        return {
            "auctions": self.auctions, "impressions": self.impressions, "clicks": self.clicks,
            "conversions": round(self.conversions, 6), "cost": round(self.cost, 4), "value": round(self.value, 4),
            "roi": div(self.value, self.cost), "win_rate": div(self.impressions, self.auctions),
            "cpm": div(self.cost, self.impressions, 1000.0), "ecpc": div(self.cost, self.clicks),
        }


@dataclass
class ReplayConfig:
    budget_per_episode: float | None = None
    episode_size: int | None = None   # auctions per episode
    episode_by: str = "auto"          # auto | auctions | hour | day | none
    max_bid: float | None = None
    win_rule: str = "ge"              # ge | gt
    chunk_rows: int = 500_000


@dataclass
class ReplayResult:
    overall: Totals = field(default_factory=Totals)
    episodes: dict[int, Totals] = field(default_factory=dict)
    episode_by: str = "none"

    def as_json(self) -> dict:
        return {"episode_by": self.episode_by, "overall": self.overall.as_json(),
                "episodes": [{"episode": int(k), **v.as_json()} for k, v in sorted(self.episodes.items())]}


# --- bidders -----------------------------------------------------------------------------------

def _column(batch: pd.DataFrame, name: str, bidder: str) -> np.ndarray:
    if name not in batch:
        raise InvalidValue("bidder", bidder, f"needs a {name!r} column in the log")
    return batch[name].to_numpy(dtype=np.float64)


def constant_bidder(base_bid: float) -> Bidder:
    return lambda batch: np.full(len(batch), base_bid)


def linear_bidder(base_bid: float, avg_ctr: float | None) -> Bidder:
    """iPinYou's linear bidding: base_bid x pCTR / average CTR (average of the first batch if not given)."""
    state = {"avg": avg_ctr}

    def bid(batch: pd.DataFrame) -> np.ndarray:
        pctr = _column(batch, "pctr", "linear")
        if state["avg"] is None:
            state["avg"] = float(pctr.mean()) or 1.0
        return base_bid * pctr / state["avg"]
    return bid


def reference_bidder(data_dir: str | Path, target_roi: float = 2.0) -> Bidder:
    """The reference roi model: bid per auction = pCTR x predicted value per click / target ROI.
    The log needs the model's feature columns (sim.features.FEATURE_NAMES) and pctr."""
    from sim.kit import models_dir  # imported here: lightgbm is only needed for this bidder
    from sim.train import default_catalog, ensure_models
    model = ensure_models(default_catalog(), models_dir(data_dir))["roi"]
    names = model.artifact.feature_names

    def bid(batch: pd.DataFrame) -> np.ndarray:
        missing = [n for n in names if n not in batch]
        if missing:
            raise InvalidValue("bidder", "reference", f"the log lacks feature columns {missing}")
        value = model.predict_value(batch[names].to_numpy(dtype=np.float64))
        return _column(batch, "pctr", "reference") * value / target_roi
    return bid


def resolve_bidder(spec: str, *, base_bid: float = 1.0, avg_ctr: float | None = None,
                   data_dir: str | Path = "./data") -> Bidder:
    """A built-in bidder (constant, linear, reference) or a user's `module:function`, which gets a
    DataFrame batch of log rows and returns one bid (yuan) per row."""
    if spec == "constant":
        return constant_bidder(base_bid)
    if spec == "linear":
        return linear_bidder(base_bid, avg_ctr)
    if spec == "reference":
        return reference_bidder(data_dir)
    if ":" not in spec:
        raise InvalidValue("bidder", spec, "must be constant, linear, reference or module:function")
    module_name, func_name = spec.split(":", 1)
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise InvalidValue("bidder", spec, f"cannot be loaded: {exc}") from None
    return func


# --- reading the log ---------------------------------------------------------------------------

def read_log(path: str | Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    path = Path(path)
    if not path.exists():
        raise InvalidValue("logfile", str(path), "does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
    else:
        yield from pd.read_csv(path, chunksize=chunk_rows)


# --- the auction rules -------------------------------------------------------------------------

def _settle_episode(bid: np.ndarray, price: np.ndarray, budget: float, gt: bool) -> tuple[np.ndarray, float]:
    """Wins of one episode's auctions, in order, with `budget` left; returns (wins, spent)."""
    wins = np.zeros(len(bid), dtype=bool)
    beats = bid > price if gt else bid >= price
    pos, left = 0, budget
    while pos < len(bid):
        # Auctions the budget can no longer reach are lost for good: it only goes down.
        reachable = beats[pos:] & ((price[pos:] < left) if gt else (price[pos:] <= left))
        idx = np.flatnonzero(reachable) + pos
        if not len(idx):
            break
        cost = np.cumsum(price[idx])
        before = cost - price[idx]
        # With `left - before` remaining, auction idx wins iff the capped bid still beats the price.
        blocked = (left - before <= price[idx]) if gt else (left - before < price[idx])
        if not blocked.any():
            wins[idx] = True
            left -= cost[-1]
            break
        k = int(np.argmax(blocked))
        wins[idx[:k]] = True
        left -= before[k]
        pos = int(idx[k]) + 1
    return wins, budget - left


def replay(path: str | Path, bidder: Bidder, config: ReplayConfig) -> ReplayResult:
    gt = config.win_rule == "gt"
    if config.win_rule not in ("ge", "gt"):
        raise InvalidValue("win_rule", config.win_rule, "must be ge or gt")
    result = ReplayResult()
    spent: dict[int, float] = {}
    row0 = 0
    for batch in read_log(path, config.chunk_rows):
        for col in REQUIRED:
            if col not in batch:
                raise InvalidValue("logfile", str(path), f"has no {col!r} column (needs {list(REQUIRED)})")
        n = len(batch)
        price = batch["market_price"].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(price) | (price < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidValue(f"market_price (row {row0 + i})", price[i], "must be a finite number >= 0")
        bids = np.asarray(bidder(batch), dtype=np.float64)
        if bids.shape != (n,) or not np.isfinite(bids).all():
            raise InvalidValue("bidder", "bids", f"must return {n} finite bids for a batch of {n} rows")
        bids = np.maximum(bids, 0.0)
        if config.max_bid is not None:
            bids = np.minimum(bids, config.max_bid)
        episode, result.episode_by = _episodes(batch, row0, config)
        if config.budget_per_episode is None:
            wins = bids > price if gt else bids >= price
        else:
            wins = _budgeted_wins(bids, price, episode, config.budget_per_episode, spent, gt)
        _accumulate(result, batch, episode, wins, price)
        row0 += n
    return result


def _episodes(batch: pd.DataFrame, row0: int, config: ReplayConfig) -> tuple[np.ndarray, str]:
    n = len(batch)
    by = config.episode_by
    if by == "auto":
        if config.episode_size:
            by = "auctions"
        elif config.budget_per_episode is not None and "timestamp" in batch:
            by = "day"
        else:
            by = "none"
    if by == "auctions":
        if not config.episode_size or config.episode_size <= 0:
            raise InvalidValue("episode_size", config.episode_size, "must be a whole number > 0")
        return (row0 + np.arange(n)) // config.episode_size, by
    if by in ("hour", "day"):
        if "timestamp" not in batch:
            raise InvalidValue("episode_by", by, "needs a timestamp column (epoch seconds)")
        ts = batch["timestamp"].to_numpy(dtype=np.int64)
        return ((ts // 3600) if by == "hour" else (ts + PROMOTION_TZ_OFFSET_S) // 86400), by
    return np.zeros(n, dtype=np.int64), "none"


def _budgeted_wins(bids, price, episode, budget, spent: dict[int, float], gt: bool) -> np.ndarray:
    wins = np.zeros(len(bids), dtype=bool)
    # Episodes appear in runs of consecutive rows; settle each run against its episode's budget.
    starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
    ends = np.r_[starts[1:], len(episode)]
    beats = bids > price if gt else bids >= price
    tentative = np.where(beats, price, 0.0)
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        ep = int(episode[s])
        left = budget - spent.get(ep, 0.0)
        # Fast path: if every tentative win fits the budget, the budget never binds.
        cost = np.cumsum(tentative[s:e])
        before = cost - tentative[s:e]
        fits = (left - before > price[s:e]) if gt else (left - before >= price[s:e])
        if fits[beats[s:e]].all():
            wins[s:e] = beats[s:e]
            spent[ep] = spent.get(ep, 0.0) + float(cost[-1])
            continue
        w, used = _settle_episode(bids[s:e], price[s:e], left, gt)
        wins[s:e] = w
        spent[ep] = spent.get(ep, 0.0) + used
    return wins


def _accumulate(result: ReplayResult, batch: pd.DataFrame, episode: np.ndarray, wins: np.ndarray,
                price: np.ndarray) -> None:
    click = batch["click"].to_numpy(dtype=np.float64)
    conv = batch["conversions"].to_numpy(dtype=np.float64) if "conversions" in batch else np.zeros(len(batch))
    value = batch["value"].to_numpy(dtype=np.float64) if "value" in batch else np.zeros(len(batch))
    frame = pd.DataFrame({"episode": episode, "auctions": 1, "impressions": wins.astype(np.int64),
                          "clicks": click * wins, "conversions": conv * wins, "cost": price * wins,
                          "value": value * wins})
    for ep, row in frame.groupby("episode", sort=True).sum().iterrows():
        t = Totals(int(row["auctions"]), int(row["impressions"]), int(row["clicks"]), float(row["conversions"]),
                   float(row["cost"]), float(row["value"]))
        result.episodes.setdefault(int(ep), Totals()).add(t)
        result.overall.add(t)
