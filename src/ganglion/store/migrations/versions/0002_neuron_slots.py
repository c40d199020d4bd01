"""Neurons say how many requests they run at once (``slots``), for routing.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("neurons") as batch:
        batch.add_column(sa.Column("slots", sa.Integer, nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("neurons") as batch:
        batch.drop_column("slots")
