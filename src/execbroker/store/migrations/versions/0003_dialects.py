"""Sessions remember the dialect they came through (execbroker, uws, tes) and its metadata.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as table:
        table.add_column(
            sa.Column("dialect", sa.String(16), nullable=False, server_default="execbroker")
        )
        table.add_column(sa.Column("dialect_meta", sa.JSON, nullable=True))
    op.create_index("ix_sessions_dialect", "sessions", ["dialect"])


def downgrade() -> None:
    op.drop_index("ix_sessions_dialect", "sessions")
    with op.batch_alter_table("sessions") as table:
        table.drop_column("dialect_meta")
        table.drop_column("dialect")
