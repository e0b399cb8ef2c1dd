"""decisions: one index per slot and bucket, carrying pred_value (the ROI guard's value join)

Revision ID: 0003_decision_slot_index
Revises: 0002_alerts

The guard worker meets every outcome row with its slot's decision for the value the
model predicted (guards.observe.load_inputs). This index answers that lookup from the
index alone and still serves every (campaign_id, bucket_ts) query of the index it
replaces, so decision writes keep one index of this kind.
"""
from alembic import op

revision = '0003_decision_slot_index'
down_revision = '0002_alerts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_decisions_slot', 'decisions', ['campaign_id', 'bucket_ts', 'audience_package', 'pred_value'],
                    unique=False)
    op.drop_index('ix_decisions_campaign_bucket', table_name='decisions')


def downgrade() -> None:
    op.create_index('ix_decisions_campaign_bucket', 'decisions', ['campaign_id', 'bucket_ts'], unique=False)
    op.drop_index('ix_decisions_slot', table_name='decisions')
