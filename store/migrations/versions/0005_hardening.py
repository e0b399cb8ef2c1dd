"""hardening (issue 16): usernames unique whatever their case; failed logins per source; the authors
of every override version; the key that signed each audit entry; the guard worker's lease; how far each ingested file got

Revision ID: 0005_hardening
Revises: 0004_alert_delivery
"""
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = '0005_hardening'
down_revision = '0004_alert_delivery'
branch_labels = None
depends_on = None


def _username_key(username: str) -> str:
    # control.users.username_key, as it is when this migration was written
    return unicodedata.normalize("NFKC", username).casefold()


def upgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('username_key', sa.String(length=64), nullable=True))
    users = sa.table('users', sa.column('username', sa.String), sa.column('username_key', sa.String))
    for (username,) in conn.execute(sa.select(users.c.username)).all():
        conn.execute(users.update().where(users.c.username == username)
                     .values(username_key=_username_key(username)))
    # Two names that differ only in case stop the migration here: rename one first.
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('username_key', existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(batch_op.f('uq_users_username_key'), ['username_key'])

    op.create_table('login_sources',
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('window_start_ts', sa.BigInteger(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('source', name=op.f('pk_login_sources'))
    )

    with op.batch_alter_table('overrides', schema=None) as batch_op:
        batch_op.add_column(sa.Column('authors', sa.JSON(), server_default='[]', nullable=False))
    # Authors so far: the proposer of each version, from the audit trail, and the current proposer.
    overrides = sa.table('overrides', sa.column('override_id', sa.BigInteger), sa.column('proposed_by', sa.String),
                         sa.column('authors', sa.JSON))
    audit = sa.table('audit_log', sa.column('entry_id', sa.BigInteger), sa.column('actor', sa.String),
                     sa.column('action', sa.String), sa.column('entity', sa.String),
                     sa.column('entity_id', sa.String))
    written = {}
    for entity_id, actor in conn.execute(sa.select(audit.c.entity_id, audit.c.actor).where(
            audit.c.entity == 'override', audit.c.action.in_(['override.propose', 'override.edit']))
            .order_by(audit.c.entry_id)):
        written.setdefault(entity_id, []).append(actor)
    for override_id, proposed_by in conn.execute(sa.select(overrides.c.override_id, overrides.c.proposed_by)).all():
        authors = list(dict.fromkeys(written.get(str(override_id), []) + [proposed_by]))
        conn.execute(overrides.update().where(overrides.c.override_id == override_id).values(authors=authors))

    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_id', sa.String(length=16), nullable=True))

    op.create_table('worker_leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('generation', sa.BigInteger(), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('acquired_ts', sa.BigInteger(), nullable=False),
    sa.Column('expires_ts', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_worker_leases'))
    )

    op.create_table('ingest_files',
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('rows_done', sa.BigInteger(), nullable=False),
    sa.Column('started_ts', sa.BigInteger(), nullable=False),
    sa.Column('updated_ts', sa.BigInteger(), nullable=False),
    sa.Column('finished_ts', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('fingerprint', 'kind', name=op.f('pk_ingest_files'))
    )


def downgrade() -> None:
    op.drop_table('ingest_files')
    op.drop_table('worker_leases')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_column('key_id')
    with op.batch_alter_table('overrides', schema=None) as batch_op:
        batch_op.drop_column('authors')
    op.drop_table('login_sources')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_users_username_key'), type_='unique')
        batch_op.drop_column('username_key')
