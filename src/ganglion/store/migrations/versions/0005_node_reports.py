"""What each node's doctor said of its GPUs (``ganglion doctor --send``): the gateway tells a
GPU that contributes nothing to the neurons on its node.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_reports",
        sa.Column("node", sa.String(200), primary_key=True),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("node_reports")
