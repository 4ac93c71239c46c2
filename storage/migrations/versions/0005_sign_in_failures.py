"""Failed dashboard sign-ins, so that every node sharing the database (and a restarted
one) holds a guesser to the same limit.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sign_in_failure",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("failed_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_sign_in_failure_pair", "sign_in_failure", ["address", "user_name"])
    op.create_index("ix_sign_in_failure_failed_at", "sign_in_failure", ["failed_at"])


def downgrade() -> None:
    op.drop_index("ix_sign_in_failure_failed_at", table_name="sign_in_failure")
    op.drop_index("ix_sign_in_failure_pair", table_name="sign_in_failure")
    op.drop_table("sign_in_failure")
