"""Replicas sharing one database. Runs carry a lease: the gateway replica working on a run
(``owner``) and until when its claim holds (``lease_until``, Unix seconds), so replicas never
carry the same run at once and a crashed replica's runs are adopted. A neuron's suspension is
its own column (``suspended``), apart from the status each replica writes from its probes.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(200), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.Float, nullable=True))
    with op.batch_alter_table("neurons") as batch:
        batch.add_column(
            sa.Column("suspended", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE neurons SET suspended = true WHERE status = 'suspended'")


def downgrade() -> None:
    with op.batch_alter_table("neurons") as batch:
        batch.drop_column("suspended")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("owner")
