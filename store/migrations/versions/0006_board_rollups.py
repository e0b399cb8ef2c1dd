"""explanations: the bid formula each decision was served with

Revision ID: 0006_board_rollups
Revises: 0003_decision_slot_index

An explanation in bid units divides by the bidder's target ROI and shows its
caps; they belong to the bidder that served the model version (the "818" model
bids with a target of 1.3, not the campaign's 2.0), so each explanation records
them (control.domain.BidFormula). Rows explained before keep NULL: their model
version's recorded formula answers for them.
"""
import sqlalchemy as sa
from alembic import op

revision = '0006_board_rollups'
down_revision = '0003_decision_slot_index'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target_roi', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('min_bid', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('max_bid', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.drop_column('max_bid')
        batch_op.drop_column('min_bid')
        batch_op.drop_column('target_roi')
