"""The store's tables (SQLAlchemy Core). Migrations in store/migrations create them.

Times are integer epoch seconds (UTC), `*_ts`. Money is yuan (float). JSON
columns hold small documents (features, payloads, before/after states).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from control import rows

metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

campaigns = Table(
    "campaigns", metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("category", String(64), nullable=False),
    Column("daily_budget", Float, nullable=False),
    Column("budget_cap", Float, nullable=False),
    Column("avg_order_value", Float, nullable=False),
    Column("gross_margin", Float, nullable=False),
    Column("target_roi", Float, nullable=False, server_default="2.0"),
)

audience_packages = Table(
    "audience_packages", metadata,
    Column("code", String(64), primary_key=True),
    Column("name_zh", String(64), nullable=False),
    Column("name_en", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
)

# The row fields of decisions and outcomes come from their one definition (control.rows).
_SQL_TYPES = {"ts": BigInteger, "count": BigInteger, "money": Float, "share": Float, "rate": Float,
              "bool": Boolean}


def _row_column(field: rows.Field) -> Column:
    if field.name == "features":
        kind = JSON
    elif field.max_length:
        kind = String(field.max_length)
    else:
        kind = _SQL_TYPES[field.kind]
    default = field.default
    server_default = None if default is None else str(default)
    return Column(field.name, kind, nullable=field.stored_nullable, server_default=server_default)


# One row per served slot decision: the model's decision, what was served, and who decided.
# pool_bid / pool_pred_roi: the rule pool's answer for the slot and its predicted ROI (shadow score).
decisions = Table(
    "decisions", metadata,
    Column("decision_id", ID, primary_key=True, autoincrement=True),
    *(_row_column(f) for f in rows.DECISION_FIELDS),
    Column("source", String(32), nullable=False, server_default="sim"),
    Column("received_ts", BigInteger, nullable=False),
    # Also the guard's lookup of a slot's pred_value for its outcomes (guards.observe.load_inputs).
    Index("ix_decisions_slot", "campaign_id", "bucket_ts", "audience_package", "pred_value"),
    Index("ix_decisions_bucket", "bucket_ts"),
)

# Increments: each row is what became known at known_ts (conversion lag).
outcomes = Table(
    "outcomes", metadata,
    Column("outcome_id", ID, primary_key=True, autoincrement=True),
    *(_row_column(f) for f in rows.OUTCOME_FIELDS),
    Column("source", String(32), nullable=False, server_default="sim"),
    Index("ix_outcomes_campaign_bucket", "campaign_id", "bucket_ts"),
    Index("ix_outcomes_known", "known_ts"),
)

# The live board's sums, kept by the decision and outcome writers in their own transaction
# (store.repo.write_decisions / write_outcomes), so a panel reads a day of 1,000 campaigns from a few
# thousand rows instead of summing millions. Late outcomes add to the bucket they belong to.
ROLLUP_OUTCOME_SUMS = ("impressions", "clicks", "spend", "orders", "gmv")
# decisions, packages on, sum of predicted ROI, decisions with a pool answer, sum of the pool's predicted
# ROI, sum of served bids, decisions decided by an override, by the rule pool
ROLLUP_DECISION_SUMS = ("n", "n_on", "pred_roi", "n_pool", "pool_pred_roi", "bid", "n_override", "n_rule_pool")
ROLLUP_SUMS = ROLLUP_OUTCOME_SUMS + ROLLUP_DECISION_SUMS
ROLLUP_PERIOD_S = 300      # per campaign and five minutes ...
ROLLUP_DAY = 86_400        # ... and per campaign and promotion day (period_ts: its local midnight)


def _sum_columns() -> list[Column]:
    return [Column(name, Float, nullable=False, server_default="0") for name in ROLLUP_SUMS]


board_rollups = Table(
    "board_rollups", metadata,
    Column("period_s", Integer, primary_key=True),   # ROLLUP_PERIOD_S or ROLLUP_DAY
    Column("period_ts", BigInteger, primary_key=True),
    Column("campaign_id", String(64), primary_key=True),
    *_sum_columns(),
)

# The same sums over every campaign, per bucket: the board's ROI series.
board_series = Table(
    "board_series", metadata,
    Column("bucket_ts", BigInteger, primary_key=True),
    *_sum_columns(),
)

# The sibling breakers' feeds (guards.feeds), columns from control.rows: competitor prices and stock
# per campaign (the item it sells), as a crawler, a market feed or a stock API reads them.
competitor_prices = Table(
    "competitor_prices", metadata,
    Column("price_id", ID, primary_key=True, autoincrement=True),
    *(_row_column(f) for f in rows.COMPETITOR_PRICE_FIELDS),
    Column("source", String(32), nullable=False),
    Column("received_ts", BigInteger, nullable=False),
    Index("ix_competitor_prices_campaign_observed", "campaign_id", "competitor", "observed_ts"),
)

stock_levels = Table(
    "stock_levels", metadata,
    Column("stock_id", ID, primary_key=True, autoincrement=True),
    *(_row_column(f) for f in rows.STOCK_FIELDS),
    Column("source", String(32), nullable=False),
    Column("received_ts", BigInteger, nullable=False),
    Index("ix_stock_levels_campaign_observed", "campaign_id", "observed_ts"),
)

# Rows refused by validation, kept with the reason: nothing is silently dropped.
quarantine = Table(
    "quarantine", metadata,
    Column("quarantine_id", ID, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # decision | outcome | competitor_price | stock
    Column("source", String(200), nullable=False),
    Column("received_ts", BigInteger, nullable=False),
    Column("row_index", BigInteger),
    Column("field", String(64), nullable=False),
    Column("value", Text),
    Column("reason", Text, nullable=False),
    Column("row", JSON, nullable=False),
)

# SHAP values stored with the decision, under the model version that made it.
explanations = Table(
    "explanations", metadata,
    Column("decision_id", ID, ForeignKey("decisions.decision_id", ondelete="CASCADE"), primary_key=True),
    Column("model_version", String(64), nullable=False),
    Column("base_value", Float, nullable=False),
    Column("contributions", LargeBinary, nullable=False),  # float32, in the model's feature order
    Column("feature_values", LargeBinary, nullable=False),  # float32: what the model saw
    # 0006: the bid formula the decision was served with (control.domain.BidFormula; NULL before it was kept).
    Column("target_roi", Float),
    Column("min_bid", Float),
    Column("max_bid", Float),  # NULL also when the bidder has no cap
)

models = Table(
    "models", metadata,
    Column("model_version", String(64), primary_key=True),
    Column("path", Text, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False, server_default="0"),
    Column("meta", JSON, nullable=False),
    # 0009_launch_gate: the version's lifecycle (control.launch.VersionStatus), its newest gate report,
    # when the status last changed, and the optimistic-concurrency version of the row.
    Column("status", String(16), nullable=False, server_default="registered"),
    Column("gate_id", BigInteger),
    Column("status_ts", BigInteger),
    Column("version", Integer, nullable=False, server_default="1"),
)

# A gate report per run (app.gate): the verdict and its reasons, the thresholds it was judged against,
# the whole report (JSON) and its HTML page with the charts, stored with the version.
model_gates = Table(
    "model_gates", metadata,
    Column("gate_id", ID, primary_key=True, autoincrement=True),
    Column("model_version", String(64), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("verdict", String(8), nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("thresholds", JSON, nullable=False),
    Column("report", JSON, nullable=False),
    Column("html", Text, nullable=False),
    Column("seconds", Float, nullable=False),
    Index("ix_model_gates_model_version", "model_version"),
)

# Launch requests and their review (control.launch.Launch); one is live at a time.
model_launches = Table(
    "model_launches", metadata,
    Column("launch_id", ID, primary_key=True, autoincrement=True),
    Column("model_version", String(64), nullable=False),
    Column("previous_version", String(64)),
    Column("gate_id", BigInteger, nullable=False),
    Column("verdict", String(8), nullable=False),
    Column("requested_by", String(64), nullable=False),
    Column("requested_ts", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("rollout_share", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("share", Float, nullable=False),
    Column("share_ts", BigInteger, nullable=False),
    Column("reviewed_by", String(64)),
    Column("reviewed_ts", BigInteger),
    Column("review_comment", Text, nullable=False, server_default=""),
    Column("version", Integer, nullable=False),  # optimistic concurrency
    Index("ix_model_launches_status", "status"),
)

users = Table(
    "users", metadata,
    Column("username", String(64), primary_key=True),
    # 0005_hardening: the name as compared (control.users.username_key): "Mia" and "mia" are one user.
    Column("username_key", String(64), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(300), nullable=False),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("failed_logins", Integer, nullable=False, server_default="0"),
    Column("locked_until_ts", BigInteger, nullable=False, server_default="0"),
    Column("created_ts", BigInteger, nullable=False),
    # 0007: actions granted to this person beyond the role's (control.permissions.GRANTABLE), a JSON list.
    Column("grants", JSON, nullable=False, server_default="[]"),
)

# 0005_hardening: failed logins per source (a browser's address, a CLI host), per window.
login_sources = Table(
    "login_sources", metadata,
    Column("source", String(200), primary_key=True),
    Column("window_start_ts", BigInteger, nullable=False),
    Column("failures", Integer, nullable=False),
)

overrides = Table(
    "overrides", metadata,
    Column("override_id", ID, primary_key=True, autoincrement=True),
    Column("campaign_id", String(64), nullable=False),
    Column("audience_package", String(64)),
    Column("field", String(16), nullable=False),
    Column("value", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("proposed_by", String(64), nullable=False),
    Column("proposed_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Column("reviewed_by", String(64)),
    Column("reviewed_ts", BigInteger),
    Column("review_comment", Text, nullable=False, server_default=""),
    Column("version", Integer, nullable=False),  # optimistic concurrency
    # 0005_hardening: everyone who proposed or edited any version (none of them may review it)
    Column("authors", JSON, nullable=False, server_default="[]"),
    Index("ix_overrides_status", "status"),
)

audit_log = Table(
    "audit_log", metadata,
    Column("entry_id", ID, primary_key=True, autoincrement=False),
    Column("ts", BigInteger, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("entity", String(64), nullable=False),
    Column("entity_id", String(200), nullable=False),
    Column("before", JSON),
    Column("after", JSON),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("key_id", String(16)),  # 0005_hardening: the key whose HMAC `hash` is; NULL: plain SHA-256, before it
)

# Small named switches and documents (kill switch, guard defaults), versioned.
control_flags = Table(
    "control_flags", metadata,
    Column("key", String(100), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    Column("updated_by", String(64), nullable=False),
)

# 0005_hardening: who may act as the store's guard worker: the generation is the fencing token every
# tick proves it still holds (guards.worker.Lease); expires_ts is real time.
worker_leases = Table(
    "worker_leases", metadata,
    Column("name", String(64), primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("holder", String(200), nullable=False),
    Column("acquired_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
)

# Current state of each guard for each campaign (guards/ owns the state document).
guard_states = Table(
    "guard_states", metadata,
    Column("guard", String(32), primary_key=True),
    Column("campaign_id", String(64), primary_key=True),
    Column("mode", String(16), nullable=False),
    Column("state", JSON, nullable=False),
    Column("event_id", BigInteger),
    Column("version", Integer, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
)

guard_events = Table(
    "guard_events", metadata,
    Column("event_id", ID, primary_key=True, autoincrement=True),
    Column("ts", BigInteger, nullable=False),
    Column("guard", String(32), nullable=False),
    Column("campaign_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("payload", JSON, nullable=False),
    Index("ix_guard_events_campaign_ts", "campaign_id", "ts"),
)

# The ledger of trips: figures before and after, detection delay, loss avoided.
guard_trips = Table(
    "guard_trips", metadata,
    Column("trip_id", ID, primary_key=True, autoincrement=True),
    Column("guard", String(32), nullable=False),
    Column("campaign_id", String(64), nullable=False),
    Column("tripped_ts", BigInteger, nullable=False),
    Column("restored_ts", BigInteger),
    Column("event_id", BigInteger, nullable=False),
    Column("roi_before", Float),
    Column("roi_after", Float),
    Column("detection_delay_s", BigInteger),
    Column("loss_avoided", Float),
    Column("details", JSON, nullable=False),
)

rule_pool_versions = Table(
    "rule_pool_versions", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("source", Text, nullable=False),  # the TOML text as written
    Column("status", String(16), nullable=False),  # active | superseded | refused
    Column("error", Text, nullable=False, server_default=""),
)

# Durable alert outbox (at-least-once delivery; dedupe_key stops doubles).
alerts = Table(
    "alerts", metadata,
    Column("alert_id", ID, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(200), nullable=False),
    Column("group_key", String(200), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("campaign_id", String(64)),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_ts", BigInteger, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("delivered_ts", BigInteger),
    Column("message_id", String(200)),
    Column("acked_ts", BigInteger),
    Column("acked_by", String(64)),
    Column("resolved_ts", BigInteger),
    Column("last_error", Text, nullable=False, server_default=""),
    # 0002_alerts: the event an alert row carries (one row per event and channel), its condition
    # for repeat/resolution, later firings folded into it, and where the acknowledgement came from.
    Column("event_key", String(64), nullable=False, server_default=""),
    Column("condition_key", String(200), nullable=False, server_default=""),
    Column("guard", String(32)),
    Column("occurred_ts", BigInteger, nullable=False, server_default="0"),
    Column("repeats", Integer, nullable=False, server_default="0"),
    Column("last_seen_ts", BigInteger),
    Column("ack_source", String(16)),
    # 0008_alert_hygiene: the last reminder that covered the condition on this channel.
    Column("reminded_ts", BigInteger),
    UniqueConstraint("dedupe_key", name="uq_alerts_dedupe_key"),
    Index("ix_alerts_status_next", "status", "next_attempt_ts"),
    Index("ix_alerts_condition", "condition_key", "resolved_ts"),
    Index("ix_alerts_event", "event_key"),
    Index("ix_alerts_channel_message", "channel", "message_id"),
)

# Notification log: each message fixed (content, alerts) before its first send, so a resend
# after a crash is the same message with the same id, never a regrouped double.
alert_notifications = Table(
    "alert_notifications", metadata,
    Column("message_id", String(200), primary_key=True),
    Column("channel", String(64), nullable=False),
    Column("alert_ids", JSON, nullable=False),
    Column("content", Text, nullable=False),
    Column("status", String(16), nullable=False),  # queued | sending | retry | sent | dead
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_ts", BigInteger, nullable=False),
    Column("next_attempt_ts", BigInteger, nullable=False),
    Column("lease_until_ts", BigInteger),
    Column("sent_ts", BigInteger),
    Column("last_error", Text, nullable=False, server_default=""),
    # 0004_alert_delivery: the earlier message (same alerts) this one repeats after no answer came
    Column("repeat_of", String(200)),
    Index("ix_alert_notifications_channel_status", "channel", "status"),
)

# Every send attempt, logged before the HTTP call: the rate window per robot reads it.
alert_attempts = Table(
    "alert_attempts", metadata,
    Column("attempt_id", ID, primary_key=True, autoincrement=True),
    Column("message_id", String(200), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("ts", BigInteger, nullable=False),
    # sending | sent | retry | down | unanswered | crashed | throttled | dead; probes: probing | probe_ok | probe_down
    Column("outcome", String(16), nullable=False),
    Column("error", Text, nullable=False, server_default=""),
    # 0004_alert_delivery: exact epoch seconds: the request left no earlier than started_at and reached the
    # receiver no later than ended_at (the answer, or the longest the send could take): the rate window
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("took_s", Float),  # real seconds the request took: how slow the robot answers
    Index("ix_alert_attempts_channel_ts", "channel", "ts"),
)

api_tokens = Table(
    "api_tokens", metadata,
    Column("token_id", ID, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("revoked_ts", BigInteger),
)

# 0005_hardening: how far each file got (by its SHA-256), advanced in each chunk's own transaction, so
# that a second run of the same file stores nothing twice and an interrupted one resumes.
ingest_files = Table(
    "ingest_files", metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("kind", String(16), primary_key=True),  # decision | outcome
    Column("source", String(200), nullable=False),
    Column("rows_done", BigInteger, nullable=False),  # data rows stored or quarantined, in file order
    Column("started_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    Column("finished_ts", BigInteger),
)

idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("key", String(200), primary_key=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("response", JSON, nullable=False),
)
