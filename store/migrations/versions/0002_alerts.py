"""alerts: event identity, condition, repeats; notification log and send attempts

Revision ID: 0002_alerts
Revises: 0001_initial
"""
import sqlalchemy as sa
from alembic import op

revision = '0002_alerts'
down_revision = '0001_initial'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('event_key', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('condition_key', sa.String(length=200), server_default='', nullable=False))
        batch_op.add_column(sa.Column('guard', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('occurred_ts', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('repeats', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('last_seen_ts', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('ack_source', sa.String(length=16), nullable=True))
        batch_op.create_index('ix_alerts_condition', ['condition_key', 'resolved_ts'], unique=False)
        batch_op.create_index('ix_alerts_event', ['event_key'], unique=False)
        batch_op.create_index('ix_alerts_channel_message', ['channel', 'message_id'], unique=False)

    op.create_table('alert_notifications',
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('alert_ids', sa.JSON(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_ts', sa.BigInteger(), nullable=False),
    sa.Column('next_attempt_ts', sa.BigInteger(), nullable=False),
    sa.Column('lease_until_ts', sa.BigInteger(), nullable=True),
    sa.Column('sent_ts', sa.BigInteger(), nullable=True),
    sa.Column('last_error', sa.Text(), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_alert_notifications'))
    )
    with op.batch_alter_table('alert_notifications', schema=None) as batch_op:
        batch_op.create_index('ix_alert_notifications_channel_status', ['channel', 'status'], unique=False)

    op.create_table('alert_attempts',
    sa.Column('attempt_id', ID, autoincrement=True, nullable=False),
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('attempt_id', name=op.f('pk_alert_attempts'))
    )
    with op.batch_alter_table('alert_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_alert_attempts_channel_ts', ['channel', 'ts'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('alert_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_alert_attempts_channel_ts')
    op.drop_table('alert_attempts')
    with op.batch_alter_table('alert_notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_alert_notifications_channel_status')
    op.drop_table('alert_notifications')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_channel_message')
        batch_op.drop_index('ix_alerts_event')
        batch_op.drop_index('ix_alerts_condition')
        for col in ('ack_source', 'last_seen_ts', 'repeats', 'occurred_ts', 'guard', 'condition_key', 'event_key'):
            batch_op.drop_column(col)
