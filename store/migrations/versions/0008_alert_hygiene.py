"""alert hygiene: when a reminder last covered an open condition

Revision ID: 0008_alert_hygiene
Revises: 0007_breakers_review

alerts.reminded_ts: the last reminder that covered the alert's condition on its
channel. Reminders go as one message a channel covering every open condition due,
not as a new alert per condition, so when people last heard of a condition is kept
on its newest alert.
"""
import sqlalchemy as sa
from alembic import op

revision = '0008_alert_hygiene'
down_revision = '0007_breakers_review'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reminded_ts', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_column('reminded_ts')
