"""Leases: which broker replica drives a session, and until when it may.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from execbroker.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Sessions started before leases existed have none: the first replica to look takes them.
    with op.batch_alter_table("sessions") as table:
        table.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))
        table.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))
        table.create_index("ix_sessions_claimed_by", ["claimed_by"])


def downgrade() -> None:
    with op.batch_alter_table("sessions") as table:
        table.drop_index("ix_sessions_claimed_by")
        table.drop_column("lease_until")
        table.drop_column("claimed_by")
