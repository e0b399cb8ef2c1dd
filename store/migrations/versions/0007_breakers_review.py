"""the sibling breakers' feeds (competitor prices, stock per campaign); per-user grants

Revision ID: 0007_breakers_review
Revises: 0006_board_rollups

The competitor price guard reads competitors' prices against their references
and the safety-stock guard reads stock levels (guards.feeds); both arrive like
decisions, through the API or `bidlens ingest`, validated, with refused rows
quarantined. Columns follow control.rows (COMPETITOR_PRICE_FIELDS, STOCK_FIELDS).
users.grants: the actions a person is granted beyond their role (the white-box leak
risk: seeing raw explanations, exporting; control.permissions.GRANTABLE).
"""
import sqlalchemy as sa
from alembic import op

revision = '0007_breakers_review'
down_revision = '0006_board_rollups'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'competitor_prices',
        sa.Column('price_id', ID, autoincrement=True, nullable=False),
        sa.Column('campaign_id', sa.String(length=64), nullable=False),
        sa.Column('competitor', sa.String(length=100), nullable=False),
        sa.Column('observed_ts', sa.BigInteger(), nullable=False),
        sa.Column('price', sa.Float(), nullable=False),
        sa.Column('reference_price', sa.Float(), nullable=False),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('received_ts', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('price_id', name=op.f('pk_competitor_prices')),
    )
    op.create_index('ix_competitor_prices_campaign_observed', 'competitor_prices',
                    ['campaign_id', 'competitor', 'observed_ts'], unique=False)
    op.create_table(
        'stock_levels',
        sa.Column('stock_id', ID, autoincrement=True, nullable=False),
        sa.Column('campaign_id', sa.String(length=64), nullable=False),
        sa.Column('observed_ts', sa.BigInteger(), nullable=False),
        sa.Column('stock_units', sa.BigInteger(), nullable=False),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('received_ts', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('stock_id', name=op.f('pk_stock_levels')),
    )
    op.create_index('ix_stock_levels_campaign_observed', 'stock_levels', ['campaign_id', 'observed_ts'],
                    unique=False)
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('grants', sa.JSON(), server_default='[]', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.drop_column('grants')
    op.drop_index('ix_stock_levels_campaign_observed', table_name='stock_levels')
    op.drop_table('stock_levels')
    op.drop_index('ix_competitor_prices_campaign_observed', table_name='competitor_prices')
    op.drop_table('competitor_prices')
