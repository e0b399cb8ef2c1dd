"""Days drawn from documented families, for the guard benchmark (`bidlens guard bench`).

A guard good on the shipped scenarios may be good only on them. These families
describe the days a guard meets in a season; `draw_day(seed, family)` makes one
day of a family from a seed, so a benchmark run is a reproducible sample, and days
drawn with other seeds are days the guard was not tuned on.

- `healthy`: a promotion day with ordinary noise (the day's CTR/CVR deviations of
  the `normal` scenario), promotion intensity 0.6-1.2;
- `healthy_noisy`: the same with double noise;
- `healthy_delayed`: a healthy day whose outcome feed stalls one to three times for
  20-120 minutes (the backlog lands when it resumes);
- `degraded`: a healthy day on which one to five campaigns degrade by 20-60% in CVR,
  CTR, order value or competitors' bids (their median bid rises by that share),
  abruptly or over up to four hours, starting at any time of day and lasting to the
  end of the day or for two to eight hours;
- `model_failure`: the whole model fails: the GMV-only variant (as in 818) takes
  over at a random hour of the day, competitors bid harder;
- `hovering`: three to eight campaigns sit near the floor for hours: competitors bid
  up by 25-55% on them, which on most campaigns brings the ROI within a few tenths of
  2.0, on some just under it, on some just over.

Each drawn day carries, per campaign, what was done to it (`affected`), so a report
can tell degraded campaign-days from healthy ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sim.catalog import MINUTES_PER_DAY, campaign_ids
from sim.scenario import BidderParams, Event, Scenario, WorldParams

FAMILIES = ("healthy", "healthy_noisy", "healthy_delayed", "degraded", "model_failure", "hovering")
HEALTHY_FAMILIES = ("healthy", "healthy_noisy", "healthy_delayed")
DEGRADATIONS = ("cvr_shift", "ctr_shift", "order_value_shift", "competitor_bid_surge")


@dataclass(frozen=True)
class Degradation:
    campaign_id: str
    kind: str        # an event kind of DEGRADATIONS, or "model" (the whole model), or "hover"
    size: float      # the share by which it worsens (0.3: CVR x 0.7, or competitors' bids x 1.3)
    at_minute: int
    ramp_minutes: int
    until_minute: int


@dataclass(frozen=True)
class Day:
    family: str
    seed: int           # the simulator's seed for the day
    scenario: Scenario
    affected: tuple[Degradation, ...]

    @property
    def affected_ids(self) -> frozenset[str]:
        return frozenset(d.campaign_id for d in self.affected)


def _factor(kind: str, size: float) -> float:
    """A worsening of `size` as the event's factor: value-side shares fall, competitors' bids rise."""
    return 1.0 + size if kind == "competitor_bid_surge" else 1.0 - size


def draw_day(seed: int, family: str, n_campaigns: int = 40) -> Day:
    """One day of `family`, fully determined by `seed`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {list(FAMILIES)}")
    rng = np.random.default_rng([seed, FAMILIES.index(family)])
    ids = campaign_ids(n_campaigns)
    noise = 2.0 if family == "healthy_noisy" else 1.0
    world = WorldParams(campaigns=n_campaigns, promo_intensity=round(float(rng.uniform(0.6, 1.2)), 2),
                        ctr_noise=0.08 * noise, cvr_noise=0.12 * noise)
    bidder = BidderParams(variant="roi")
    events: list[Event] = []
    affected: list[Degradation] = []
    if family == "healthy_delayed":
        for _ in range(int(rng.integers(1, 4))):
            start = int(rng.integers(60, MINUTES_PER_DAY - 180))
            events.append(Event("outcome_outage", start, start + int(rng.integers(20, 121))))
    elif family == "degraded":
        for cid in rng.choice(ids, size=int(rng.integers(1, 6)), replace=False).tolist():
            kind = str(rng.choice(DEGRADATIONS))
            size = round(float(rng.uniform(0.2, 0.6)), 2)
            start = int(rng.integers(0, MINUTES_PER_DAY - 240))
            ramp = 0 if rng.random() < 0.5 else int(rng.integers(10, 241))
            until = MINUTES_PER_DAY if rng.random() < 0.5 else min(MINUTES_PER_DAY,
                                                                    start + ramp + int(rng.integers(120, 481)))
            events.append(Event(kind, start, until, campaigns=(cid,), factor=_factor(kind, size),
                                ramp_minutes=min(ramp, until - start)))
            affected.append(Degradation(cid, kind, size, start, min(ramp, until - start), until))
    elif family == "model_failure":
        start = int(rng.integers(0, 20)) * 60
        world = replace(world, competitor_bid_level=round(float(rng.uniform(1.1, 1.35)), 2),
                        competitor_pressure=round(float(rng.uniform(0.3, 0.45)), 2))
        bidder = BidderParams(variant="roi" if start else "gmv", gmv_target_roi=round(float(rng.uniform(1.2, 1.5)), 2))
        if start:
            events.append(Event("switch_model", start, variant="gmv"))
        affected = [Degradation(cid, "model", 0.0, start, 0, MINUTES_PER_DAY) for cid in ids]
    elif family == "hovering":
        for cid in rng.choice(ids, size=int(rng.integers(3, 9)), replace=False).tolist():
            size = round(float(rng.uniform(0.25, 0.55)), 2)
            start = int(rng.integers(0, MINUTES_PER_DAY // 2))
            events.append(Event("competitor_bid_surge", start, campaigns=(cid,), factor=1.0 + size))
            affected.append(Degradation(cid, "hover", size, start, 0, MINUTES_PER_DAY))
    scenario = Scenario(f"{family}-{seed}", f"drawn from family {family} with seed {seed}", world, bidder,
                        tuple(sorted(events, key=lambda e: e.at_minute)))
    return Day(family, int(rng.integers(1, 2**31 - 1)), scenario, tuple(affected))


def draw_days(seed: int, n_days: int, weights: dict[str, float] | None = None) -> list[Day]:
    """`n_days` days, their families drawn with `weights` (default: degraded days half the sample,
    the rest spread over the other families), every day its own seed from `seed`."""
    weights = weights or {"healthy": 0.1, "healthy_noisy": 0.1, "healthy_delayed": 0.1, "degraded": 0.5,
                          "model_failure": 0.1, "hovering": 0.1}
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    rng = np.random.default_rng([seed, 2026])
    families = rng.choice(names, size=n_days, p=p / p.sum())
    return [draw_day(int(seed) * 100_003 + i, str(f)) for i, f in enumerate(families)]
