"""Who registered a neuron (``origin``): ``config`` for a config file's ``[[neuron]]``, so a
neuron taken out of the file is unregistered at the next start; null for the API and CLI.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("neurons") as batch:
        batch.add_column(sa.Column("origin", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("neurons") as batch:
        batch.drop_column("origin")
