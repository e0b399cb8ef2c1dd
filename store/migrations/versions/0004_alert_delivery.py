"""alert delivery: exact send times for the rate window; a message's repeat of an unanswered one

Revision ID: 0004_alert_delivery
Revises: 0003_decision_slot_index

alert_attempts.started_at / ended_at (float epoch seconds): the rate window counts
sends in exact time (whole seconds let 21 sends through in 59.05 s). Earlier rows
keep their whole-second `ts` and are read as [ts, ts + 1]. took_s: the real time
a request took, so a robot that answers later than the timeout is waited for.
alert_notifications.repeat_of: a message that repeats one that got no answer
(maybe shown) says so, and is never repeated again itself.
"""
import sqlalchemy as sa
from alembic import op

revision = '0004_alert_delivery'
down_revision = '0003_decision_slot_index'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('alert_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('started_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('ended_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('took_s', sa.Float(), nullable=True))
    with op.batch_alter_table('alert_notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('repeat_of', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('alert_notifications', schema=None) as batch_op:
        batch_op.drop_column('repeat_of')
    with op.batch_alter_table('alert_attempts', schema=None) as batch_op:
        batch_op.drop_column('took_s')
        batch_op.drop_column('ended_at')
        batch_op.drop_column('started_at')
