"""What a replica's in-memory index of holds needs to stay exact, and what retention sweeps by.

``broker_lock.version`` counts the booking transactions; each sets ``sessions.booked`` on the
rows whose capacity it added or changed, so a replica that finds the counter moved reads only
those rows. ``sessions.modified`` is indexed for the sweeps that learn of released capacity,
``offersets.created`` and ``sessions.finished`` for retention.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("broker_lock") as table:
        table.add_column(
            sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("0"))
        )
    with op.batch_alter_table("sessions") as table:
        table.add_column(sa.Column("booked", sa.BigInteger, nullable=True))
    op.create_index("ix_sessions_booked", "sessions", ["booked"])
    op.create_index("ix_sessions_modified", "sessions", ["modified"])
    op.create_index("ix_sessions_finished", "sessions", ["finished"])
    op.create_index("ix_offersets_created", "offersets", ["created"])


def downgrade() -> None:
    op.drop_index("ix_offersets_created", "offersets")
    op.drop_index("ix_sessions_finished", "sessions")
    op.drop_index("ix_sessions_modified", "sessions")
    op.drop_index("ix_sessions_booked", "sessions")
    with op.batch_alter_table("sessions") as table:
        table.drop_column("booked")
    with op.batch_alter_table("broker_lock") as table:
        table.drop_column("version")
