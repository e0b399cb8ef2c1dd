"""board rollups: the live board's sums kept at write time; explanations record their bid formula

Revision ID: 0006_board_rollups
Revises: 0005_hardening

The live board summed a whole day of raw decisions and outcomes on its first
render (20 s at 1,000 campaigns x 12 packages). `board_rollups` keeps the sums
per campaign and five minutes and per campaign and promotion day,
`board_series` per bucket over every campaign; store.repo's decision and outcome
writers add to them in their own transaction. Existing rows are summed in here.

An explanation in bid units divides by the bidder's target ROI and shows its
caps; they belong to the bidder that served the model version (the "818" model
bids with a target of 1.3, not the campaign's 2.0), so each explanation records
them (control.domain.BidFormula). Rows explained before keep NULL: their model
version's recorded formula answers for them.
"""
import sqlalchemy as sa
from alembic import op

revision = '0006_board_rollups'
down_revision = '0005_hardening'
branch_labels = None
depends_on = None

OUTCOME_SUMS = ("impressions", "clicks", "spend", "orders", "gmv")
DECISION_SUMS = ("n", "n_on", "pred_roi", "n_pool", "pool_pred_roi", "bid", "n_override", "n_rule_pool")
DECISION_SQL = ("COUNT(*)", "SUM(CASE WHEN audience_on THEN 1 ELSE 0 END)", "SUM(pred_roi)", "COUNT(pool_pred_roi)",
                "COALESCE(SUM(pool_pred_roi), 0)", "SUM(bid)",
                "SUM(CASE WHEN decided_by = 'override' THEN 1 ELSE 0 END)",
                "SUM(CASE WHEN decided_by = 'rule_pool' THEN 1 ELSE 0 END)")
OUTCOME_SQL = tuple(f"SUM({c})" for c in OUTCOME_SUMS)
# Five minutes, and the promotion day (China time: its local midnight).
PERIODS = ((300, "bucket_ts - bucket_ts % 300"), (86400, "bucket_ts - (bucket_ts + 28800) % 86400"))


def _sums() -> list:
    return [sa.Column(name, sa.Float(), server_default='0', nullable=False) for name in OUTCOME_SUMS + DECISION_SUMS]


def _backfill(table: str, keys: str, key_sql: str, group: str, names: tuple, sums: tuple, source: str,
              conflict: str | None) -> None:
    upsert = "" if conflict is None else (
        f" ON CONFLICT ({conflict}) DO UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in names))
    op.execute(sa.text(f"INSERT INTO {table} ({keys}, {', '.join(names)}) SELECT {key_sql}, {', '.join(sums)} "
                       f"FROM {source} WHERE true GROUP BY {group}{upsert}"))


def upgrade() -> None:
    op.create_table('board_rollups',
                    sa.Column('period_s', sa.Integer(), nullable=False),
                    sa.Column('period_ts', sa.BigInteger(), nullable=False),
                    sa.Column('campaign_id', sa.String(length=64), nullable=False),
                    *_sums(),
                    sa.PrimaryKeyConstraint('period_s', 'period_ts', 'campaign_id', name=op.f('pk_board_rollups')))
    op.create_table('board_series',
                    sa.Column('bucket_ts', sa.BigInteger(), nullable=False),
                    *_sums(),
                    sa.PrimaryKeyConstraint('bucket_ts', name=op.f('pk_board_series')))
    keys = "period_s, period_ts, campaign_id"
    for period_s, start in PERIODS:  # decisions first, then outcomes into the same rows
        _backfill("board_rollups", keys, f"{period_s}, {start}, campaign_id", "2, 3", DECISION_SUMS, DECISION_SQL,
                  "decisions", None)
        _backfill("board_rollups", keys, f"{period_s}, {start}, campaign_id", "2, 3", OUTCOME_SUMS, OUTCOME_SQL,
                  "outcomes", keys)
    _backfill("board_series", "bucket_ts", "bucket_ts", "bucket_ts", DECISION_SUMS, DECISION_SQL, "decisions", None)
    _backfill("board_series", "bucket_ts", "bucket_ts", "bucket_ts", OUTCOME_SUMS, OUTCOME_SQL, "outcomes",
              "bucket_ts")

    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target_roi', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('min_bid', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('max_bid', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.drop_column('max_bid')
        batch_op.drop_column('min_bid')
        batch_op.drop_column('target_roi')
    op.drop_table('board_series')
    op.drop_table('board_rollups')
