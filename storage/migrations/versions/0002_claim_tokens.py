"""Claim tokens on jobs and deliveries: finishing or renewing a claimed row needs its token.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("job", "delivery"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("claim", sa.String(length=32), nullable=True))


def downgrade() -> None:
    for table in ("job", "delivery"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("claim")
