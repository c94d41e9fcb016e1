"""Offer sets, sessions and the booking lock.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from execbroker.store.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    lock = op.create_table("broker_lock", sa.Column("id", sa.Integer, primary_key=True))
    op.bulk_insert(lock, [{"id": 1}])
    op.create_table(
        "offersets",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("result", sa.String(3), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("messages", sa.JSON, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column(
            "offerset_uuid",
            sa.String(36),
            sa.ForeignKey("offersets.uuid"),
            nullable=False,
            index=True,
        ),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("modified", UTCDateTime(), nullable=False),
        sa.Column("expires", UTCDateTime(), nullable=False),
        sa.Column("start", UTCDateTime(), nullable=False),
        sa.Column("end", UTCDateTime(), nullable=False),
        sa.Column("cores", sa.Integer, nullable=False),
        sa.Column("memory_gib", sa.Integer, nullable=False),
        sa.Column("storage_gib", sa.Integer, nullable=False),
        sa.Column("cost", sa.Float, nullable=True),
        sa.Column("cost_type", sa.String(200), nullable=True),
        sa.Column("executable", sa.JSON, nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("handle", sa.String(200), nullable=True),
        sa.Column("started", UTCDateTime(), nullable=True),
        sa.Column("finished", UTCDateTime(), nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("messages", sa.JSON, nullable=False),
        sa.Column("endpoints", sa.JSON, nullable=False),
    )
    op.create_index("ix_sessions_phase_end", "sessions", ["phase", "end"])


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_table("offersets")
    op.drop_table("broker_lock")
