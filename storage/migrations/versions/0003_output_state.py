"""Output series state (written → released → delivered, with room for review) and the
destinations it goes to, so that the dispatch stage, not the synthesis job, queues
deliveries.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_STATES = ("written", "awaiting_review", "rejected", "released", "delivered")


def upgrade() -> None:
    with op.batch_alter_table("output_series", schema=None) as batch_op:
        # rows from before this revision already have their deliveries queued
        batch_op.add_column(
            sa.Column(
                "state",
                sa.Enum(*_STATES, name="outputstate", native_enum=False, length=16),
                nullable=False,
                server_default="released",
            )
        )
        batch_op.add_column(
            sa.Column("send_to", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.create_index(batch_op.f("ix_output_series_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("output_series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_output_series_state"))
        batch_op.drop_column("send_to")
        batch_op.drop_column("state")
