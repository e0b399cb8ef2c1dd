"""launch gate: model versions' lifecycle, gate reports and launches

Revision ID: 0009_launch_gate
Revises: 0008_alert_hygiene

models gains its lifecycle (status, newest gate report, when the status changed,
a row version for optimistic concurrency). The version marked active before the
gate existed was serving: it is adopted as serving, so upgrading a live
deployment does not quarantine its bidder's decisions; every other version must
pass the gate and a four-eyes launch. model_gates keeps each gate report with its
HTML; model_launches the launch requests, their review and the rollout share.
"""
import sqlalchemy as sa
from alembic import op

revision = '0009_launch_gate'
down_revision = '0008_alert_hygiene'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), server_default='registered', nullable=False))
        batch_op.add_column(sa.Column('gate_id', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('status_ts', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))
    op.execute("UPDATE models SET status = 'serving' WHERE active")
    op.create_table(
        'model_gates',
        sa.Column('gate_id', ID, autoincrement=True, nullable=False),
        sa.Column('model_version', sa.String(length=64), nullable=False),
        sa.Column('created_ts', sa.BigInteger(), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('verdict', sa.String(length=8), nullable=False),
        sa.Column('reasons', sa.JSON(), nullable=False),
        sa.Column('thresholds', sa.JSON(), nullable=False),
        sa.Column('report', sa.JSON(), nullable=False),
        sa.Column('html', sa.Text(), nullable=False),
        sa.Column('seconds', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('gate_id', name=op.f('pk_model_gates')),
    )
    op.create_index('ix_model_gates_model_version', 'model_gates', ['model_version'], unique=False)
    op.create_table(
        'model_launches',
        sa.Column('launch_id', ID, autoincrement=True, nullable=False),
        sa.Column('model_version', sa.String(length=64), nullable=False),
        sa.Column('previous_version', sa.String(length=64), nullable=True),
        sa.Column('gate_id', sa.BigInteger(), nullable=False),
        sa.Column('verdict', sa.String(length=8), nullable=False),
        sa.Column('requested_by', sa.String(length=64), nullable=False),
        sa.Column('requested_ts', sa.BigInteger(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('rollout_share', sa.Float(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('share', sa.Float(), nullable=False),
        sa.Column('share_ts', sa.BigInteger(), nullable=False),
        sa.Column('reviewed_by', sa.String(length=64), nullable=True),
        sa.Column('reviewed_ts', sa.BigInteger(), nullable=True),
        sa.Column('review_comment', sa.Text(), server_default='', nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('launch_id', name=op.f('pk_model_launches')),
    )
    op.create_index('ix_model_launches_status', 'model_launches', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_model_launches_status', table_name='model_launches')
    op.drop_table('model_launches')
    op.drop_index('ix_model_gates_model_version', table_name='model_gates')
    op.drop_table('model_gates')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_column('version')
        batch_op.drop_column('status_ts')
        batch_op.drop_column('gate_id')
        batch_op.drop_column('status')
