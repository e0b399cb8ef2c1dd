"""One decision explained, the same way for the panel and for `bidlens explain decision`.

`DecisionExplainer.explain` is the one function both call: the served bid as
the steps of the formula it was served with (explain.store.decision_breakdown),
the reasons in words with the catalogue's names, each step's feature value as
a person reads it, against the campaign's ROI floor as its guard is configured.
The panel reaches it through app.room.ControlRoom (permission-checked); the CLI,
an operator's shell on the store, directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import Engine, select

from control.domain import BidFormula, Campaign
from explain.bid_units import Step
from explain.reasons import LevelNames, bid_reasons, shown_value
from explain.store import DecisionBreakdown, decision_breakdown
from guards.config import GuardSettings
from store import schema as s


@dataclass(frozen=True)
class DecisionExplanation:
    breakdown: DecisionBreakdown
    roi_floor: float
    lang: str
    reasons: list[str]          # the top steps in words, in `lang`
    shown_values: list[str]     # per step: its feature's value as a person reads it ("" for other steps)

    @property
    def steps(self) -> list[Step]:
        return self.breakdown.steps

    @property
    def decision(self) -> dict:
        return self.breakdown.decision


def level_names(campaigns: Mapping[str, Campaign], packages: Mapping[str, tuple[str, str]]) -> LevelNames:
    """The catalogue's names for the categorical features named after it (`campaign`, `audience_package`)."""
    return {"audience_package": packages, "campaign": {c: (c, c) for c in campaigns}}


class DecisionExplainer:
    def __init__(self, engine: Engine, guard_settings: Callable[[], GuardSettings],
                 catalogue: Callable[[], tuple[Mapping[str, Campaign], Mapping[str, tuple[str, str]]]]):
        self.engine = engine
        self._guard_settings = guard_settings
        self._catalogue = catalogue

    def roi_floor(self, campaign_id: str) -> float:
        """The campaign's ROI floor as its guard is configured (the file with managers' edits on top)."""
        return self._guard_settings().for_campaign("roi", campaign_id).floor

    def explain(self, decision_id: int, lang: str, *, amounts: bool = True) -> DecisionExplanation | None:
        """The decision explained in `lang`; None when it has no stored explanation (InvalidValue when
        its bid formula is unknown or its model bid is not the formula's). `amounts=False`: reasons
        without the yuan each moves the bid (explain.reasons.bid_reasons)."""
        with self.engine.connect() as conn:
            campaign_id = conn.execute(select(s.decisions.c.campaign_id)
                                       .where(s.decisions.c.decision_id == int(decision_id))).scalar()
            if campaign_id is None:
                return None
            floor = self.roi_floor(campaign_id)
            breakdown = decision_breakdown(conn, decision_id, roi_floor=floor)
        if breakdown is None:
            return None
        names = level_names(*self._catalogue())
        specs = {f.name: f for f in breakdown.features}
        shown = [shown_value(specs[st.name], st.feature_value, lang, names) if st.kind == "feature" else ""
                 for st in breakdown.steps]
        return DecisionExplanation(breakdown, floor, lang,
                                   bid_reasons(breakdown.steps, breakdown.features, lang, level_names=names,
                                               amounts=amounts), shown)


def reference_formulas(params, bidders: Mapping) -> dict[str, BidFormula]:
    """The bid formula of each of the simulator's reference bidders (sim.bidder.Bidder.decide: the gmv
    variant divides by the scenario's gmv_target_roi, the roi variant by its target_roi), by model version.

    `params`: the scenario's sim.scenario.BidderParams; `bidders`: sim.kit.Kit.bidders."""
    return {b.version: BidFormula(params.gmv_target_roi if b.variant == "gmv" else params.target_roi,
                                  params.min_bid, params.max_bid)
            for b in bidders.values()}
