"""initial schema

Revision ID: 0001_initial
Revises: 
Create Date: 2026-11-26 16:35:17.428328
"""
import sqlalchemy as sa
from alembic import op

revision = '0001_initial'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('alerts',
    sa.Column('alert_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('dedupe_key', sa.String(length=200), nullable=False),
    sa.Column('group_key', sa.String(length=200), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('campaign_id', sa.String(length=64), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_ts', sa.BigInteger(), nullable=False),
    sa.Column('created_ts', sa.BigInteger(), nullable=False),
    sa.Column('delivered_ts', sa.BigInteger(), nullable=True),
    sa.Column('message_id', sa.String(length=200), nullable=True),
    sa.Column('acked_ts', sa.BigInteger(), nullable=True),
    sa.Column('acked_by', sa.String(length=64), nullable=True),
    sa.Column('resolved_ts', sa.BigInteger(), nullable=True),
    sa.Column('last_error', sa.Text(), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('alert_id', name=op.f('pk_alerts')),
    sa.UniqueConstraint('dedupe_key', name='uq_alerts_dedupe_key')
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_status_next', ['status', 'next_attempt_ts'], unique=False)

    op.create_table('api_tokens',
    sa.Column('token_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_ts', sa.BigInteger(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('revoked_ts', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('token_id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_table('audience_packages',
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name_zh', sa.String(length=64), nullable=False),
    sa.Column('name_en', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_audience_packages'))
    )
    op.create_table('audit_log',
    sa.Column('entry_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('entity', sa.String(length=64), nullable=False),
    sa.Column('entity_id', sa.String(length=200), nullable=False),
    sa.Column('before', sa.JSON(), nullable=True),
    sa.Column('after', sa.JSON(), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('entry_id', name=op.f('pk_audit_log'))
    )
    op.create_table('campaigns',
    sa.Column('campaign_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=False),
    sa.Column('daily_budget', sa.Float(), nullable=False),
    sa.Column('budget_cap', sa.Float(), nullable=False),
    sa.Column('avg_order_value', sa.Float(), nullable=False),
    sa.Column('gross_margin', sa.Float(), nullable=False),
    sa.Column('target_roi', sa.Float(), server_default='2.0', nullable=False),
    sa.PrimaryKeyConstraint('campaign_id', name=op.f('pk_campaigns'))
    )
    op.create_table('control_flags',
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_ts', sa.BigInteger(), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_control_flags'))
    )
    op.create_table('decisions',
    sa.Column('decision_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('campaign_id', sa.String(length=64), nullable=False),
    sa.Column('audience_package', sa.String(length=64), nullable=False),
    sa.Column('bucket_ts', sa.BigInteger(), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('model_bid', sa.Float(), nullable=False),
    sa.Column('bid', sa.Float(), nullable=False),
    sa.Column('budget_share', sa.Float(), nullable=False),
    sa.Column('audience_on', sa.Boolean(), nullable=False),
    sa.Column('pred_ctr', sa.Float(), nullable=False),
    sa.Column('pred_cvr', sa.Float(), nullable=False),
    sa.Column('pred_value', sa.Float(), nullable=False),
    sa.Column('pred_roi', sa.Float(), nullable=False),
    sa.Column('pacing', sa.Float(), server_default='1.0', nullable=False),
    sa.Column('pool_bid', sa.Float(), nullable=True),
    sa.Column('pool_pred_roi', sa.Float(), nullable=True),
    sa.Column('decided_by', sa.String(length=16), nullable=False),
    sa.Column('decided_reason', sa.String(length=200), server_default='', nullable=False),
    sa.Column('source', sa.String(length=32), server_default='sim', nullable=False),
    sa.Column('received_ts', sa.BigInteger(), nullable=False),
    sa.Column('features', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('decision_id', name=op.f('pk_decisions'))
    )
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.create_index('ix_decisions_bucket', ['bucket_ts'], unique=False)
        batch_op.create_index('ix_decisions_campaign_bucket', ['campaign_id', 'bucket_ts'], unique=False)

    op.create_table('guard_events',
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.Column('guard', sa.String(length=32), nullable=False),
    sa.Column('campaign_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_guard_events'))
    )
    with op.batch_alter_table('guard_events', schema=None) as batch_op:
        batch_op.create_index('ix_guard_events_campaign_ts', ['campaign_id', 'ts'], unique=False)

    op.create_table('guard_states',
    sa.Column('guard', sa.String(length=32), nullable=False),
    sa.Column('campaign_id', sa.String(length=64), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('state', sa.JSON(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_ts', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('guard', 'campaign_id', name=op.f('pk_guard_states'))
    )
    op.create_table('guard_trips',
    sa.Column('trip_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('guard', sa.String(length=32), nullable=False),
    sa.Column('campaign_id', sa.String(length=64), nullable=False),
    sa.Column('tripped_ts', sa.BigInteger(), nullable=False),
    sa.Column('restored_ts', sa.BigInteger(), nullable=True),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('roi_before', sa.Float(), nullable=True),
    sa.Column('roi_after', sa.Float(), nullable=True),
    sa.Column('detection_delay_s', sa.BigInteger(), nullable=True),
    sa.Column('loss_avoided', sa.Float(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('trip_id', name=op.f('pk_guard_trips'))
    )
    op.create_table('idempotency_keys',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('created_ts', sa.BigInteger(), nullable=False),
    sa.Column('response', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_idempotency_keys'))
    )
    op.create_table('models',
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('created_ts', sa.BigInteger(), nullable=False),
    sa.Column('active', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('model_version', name=op.f('pk_models'))
    )
    op.create_table('outcomes',
    sa.Column('outcome_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('campaign_id', sa.String(length=64), nullable=False),
    sa.Column('audience_package', sa.String(length=64), nullable=False),
    sa.Column('bucket_ts', sa.BigInteger(), nullable=False),
    sa.Column('known_ts', sa.BigInteger(), nullable=False),
    sa.Column('impressions', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('clicks', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('spend', sa.Float(), server_default='0', nullable=False),
    sa.Column('orders', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('gmv', sa.Float(), server_default='0', nullable=False),
    sa.Column('source', sa.String(length=32), server_default='sim', nullable=False),
    sa.PrimaryKeyConstraint('outcome_id', name=op.f('pk_outcomes'))
    )
    with op.batch_alter_table('outcomes', schema=None) as batch_op:
        batch_op.create_index('ix_outcomes_campaign_bucket', ['campaign_id', 'bucket_ts'], unique=False)
        batch_op.create_index('ix_outcomes_known', ['known_ts'], unique=False)

    op.create_table('overrides',
    sa.Column('override_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('campaign_id', sa.String(length=64), nullable=False),
    sa.Column('audience_package', sa.String(length=64), nullable=True),
    sa.Column('field', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('proposed_by', sa.String(length=64), nullable=False),
    sa.Column('proposed_ts', sa.BigInteger(), nullable=False),
    sa.Column('expires_ts', sa.BigInteger(), nullable=False),
    sa.Column('reviewed_by', sa.String(length=64), nullable=True),
    sa.Column('reviewed_ts', sa.BigInteger(), nullable=True),
    sa.Column('review_comment', sa.Text(), server_default='', nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('override_id', name=op.f('pk_overrides'))
    )
    with op.batch_alter_table('overrides', schema=None) as batch_op:
        batch_op.create_index('ix_overrides_status', ['status'], unique=False)

    op.create_table('quarantine',
    sa.Column('quarantine_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('received_ts', sa.BigInteger(), nullable=False),
    sa.Column('row_index', sa.BigInteger(), nullable=True),
    sa.Column('field', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('row', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('quarantine_id', name=op.f('pk_quarantine'))
    )
    op.create_table('rule_pool_versions',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('created_ts', sa.BigInteger(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_rule_pool_versions'))
    )
    op.create_table('users',
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=300), nullable=False),
    sa.Column('active', sa.Boolean(), server_default='1', nullable=False),
    sa.Column('failed_logins', sa.Integer(), server_default='0', nullable=False),
    sa.Column('locked_until_ts', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('created_ts', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('username', name=op.f('pk_users'))
    )
    op.create_table('explanations',
    sa.Column('decision_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('base_value', sa.Float(), nullable=False),
    sa.Column('contributions', sa.LargeBinary(), nullable=False),
    sa.Column('feature_values', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['decision_id'], ['decisions.decision_id'], name=op.f('fk_explanations_decision_id_decisions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('decision_id', name=op.f('pk_explanations'))
    )



def downgrade() -> None:

    op.drop_table('explanations')
    op.drop_table('users')
    op.drop_table('rule_pool_versions')
    op.drop_table('quarantine')
    with op.batch_alter_table('overrides', schema=None) as batch_op:
        batch_op.drop_index('ix_overrides_status')

    op.drop_table('overrides')
    with op.batch_alter_table('outcomes', schema=None) as batch_op:
        batch_op.drop_index('ix_outcomes_known')
        batch_op.drop_index('ix_outcomes_campaign_bucket')

    op.drop_table('outcomes')
    op.drop_table('models')
    op.drop_table('idempotency_keys')
    op.drop_table('guard_trips')
    op.drop_table('guard_states')
    with op.batch_alter_table('guard_events', schema=None) as batch_op:
        batch_op.drop_index('ix_guard_events_campaign_ts')

    op.drop_table('guard_events')
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_decisions_campaign_bucket')
        batch_op.drop_index('ix_decisions_bucket')

    op.drop_table('decisions')
    op.drop_table('control_flags')
    op.drop_table('campaigns')
    op.drop_table('audit_log')
    op.drop_table('audience_packages')
    op.drop_table('api_tokens')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_status_next')

    op.drop_table('alerts')

