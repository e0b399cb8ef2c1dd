"""The decision row and the outcome row, and the breakers' feed rows: one definition of each.

A bidder sends these rows (the bidder API, files), the simulator makes them, the
store keeps them. The competitor price and stock rows feed the sibling breakers
(guards.feeds) the same way. Every place that names their fields reads them from here: the
batch validation (control.validation), the defaults of optional fields
(app.ingest), the store's columns and write lists (store.schema, store.repo), the
API's documented row models (api.models) and the simulator's rows for the API
(sim.live).

Kinds, and what validation asks of a value of that kind:
    text   a non-empty string                   ts     whole epoch seconds, not far in the future
    money  a finite number >= 0, yuan           share  a finite number in [0, 1]
    rate   a finite number >= 0                 bool   true or false
    count  a whole number >= 0                  any    anything (checked by the field's own rule)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str
    required: bool
    doc: str = ""
    default: object = None       # an optional field left out means this (None: nothing, NULL)
    default_from: str = ""       # ... or the value of this other field of the row
    max_length: int | None = None  # text the store keeps in a sized column
    choices: tuple[str, ...] = ()

    @property
    def stored_nullable(self) -> bool:
        """Whether the store may hold NULL (an optional field without a default)."""
        return not self.required and self.default is None and not self.default_from


DECIDED_BY = ("model", "guard", "rule_pool", "override")

# The slot a row is about.
SLOT_FIELDS: tuple[Field, ...] = (
    Field("campaign_id", "text", True, "A campaign BidLens knows.", max_length=64),
    Field("audience_package", "text", True, "Audience package code.", max_length=64),
    Field("bucket_ts", "ts", True, "Bucket start, epoch seconds UTC."),
)

DECISION_FIELDS: tuple[Field, ...] = (
    *SLOT_FIELDS,
    Field("model_version", "text", True, "The model version that made the decision.", max_length=64),
    Field("model_bid", "money", False, "The model's own bid, yuan per click (default: bid).", default_from="bid"),
    Field("bid", "money", True, "Served bid, yuan per click."),
    Field("budget_share", "share", True, "Share of the campaign's daily budget for the bucket."),
    Field("audience_on", "bool", True, "Whether the audience package is served."),
    Field("pred_ctr", "share", True, "Predicted click-through rate."),
    Field("pred_cvr", "share", True, "Predicted conversion rate."),
    Field("pred_value", "money", True, "Predicted GMV per click, yuan."),
    Field("pred_roi", "rate", True, "Predicted GMV / spend at this bid."),
    Field("pacing", "rate", False, "Pacing multiplier applied to the bid (default 1).", default=1.0),
    Field("pool_bid", "money", False, "The rule pool's bid for the slot (shadow score)."),
    Field("pool_pred_roi", "rate", False, "Predicted ROI at the rule pool's bid (shadow score)."),
    Field("decided_by", "text", False, "Who decided the served bid (default model).", default="model",
          max_length=16, choices=DECIDED_BY),
    Field("decided_reason", "any", False, "Why that authority decided.", default="", max_length=200),
    Field("features", "any", False, "What the model saw: feature name -> finite number (at most 500)."),
)

OUTCOME_FIELDS: tuple[Field, ...] = (
    *SLOT_FIELDS,
    Field("known_ts", "ts", True, "When these figures became known; >= bucket_ts."),
    Field("impressions", "count", True, "Impressions won in the bucket."),
    Field("clicks", "count", True, "Clicks; <= impressions."),
    Field("spend", "money", True, "Spend, yuan."),
    Field("orders", "count", True, "Orders attributed to the bucket, known by known_ts."),
    Field("gmv", "money", True, "GMV of those orders, yuan."),
)

# A competitor's price for the item a campaign sells (a price crawler's or a market feed's reading).
COMPETITOR_PRICE_FIELDS: tuple[Field, ...] = (
    Field("campaign_id", "text", True, "A campaign BidLens knows (the item it sells).", max_length=64),
    Field("competitor", "text", True, "Who sells the item: a shop or platform name.", max_length=100),
    Field("observed_ts", "ts", True, "When the price was read, epoch seconds UTC."),
    Field("price", "money", True, "The competitor's price now, yuan."),
    Field("reference_price", "money", True, "The competitor's usual price for the item, yuan (> 0): "
          "the drop is 1 - price / reference_price."),
)

# The stock of the item a campaign sells (a warehouse or stock API's reading).
STOCK_FIELDS: tuple[Field, ...] = (
    Field("campaign_id", "text", True, "A campaign BidLens knows (the item it sells).", max_length=64),
    Field("observed_ts", "ts", True, "When the stock was counted, epoch seconds UTC."),
    Field("stock_units", "count", True, "Units in stock, sellable now."),
)

MAX_FEATURES = 500


def names(fields: tuple[Field, ...]) -> tuple[str, ...]:
    return tuple(f.name for f in fields)


def required_kinds(fields: tuple[Field, ...]) -> dict[str, str]:
    return {f.name: f.kind for f in fields if f.required}


def optional_kinds(fields: tuple[Field, ...]) -> dict[str, str]:
    return {f.name: f.kind for f in fields if not f.required}


def defaults(fields: tuple[Field, ...]) -> dict[str, object]:
    """What each optional field left out of a row means (fields with a fixed default)."""
    return {f.name: f.default for f in fields if not f.required and f.default is not None}


def by_name(fields: tuple[Field, ...]) -> dict[str, Field]:
    return {f.name: f for f in fields}
