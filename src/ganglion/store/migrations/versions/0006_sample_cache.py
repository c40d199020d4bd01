"""What a request's prompt cache held: the prompt tokens the neuron reported it found in its
KV cache (``cached_tokens``), and those the router predicted it to hold
(``predicted_cached_tokens``; 0 a predicted miss, null for a bench or an older gateway).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("speed_samples") as batch:
        batch.add_column(sa.Column("cached_tokens", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("predicted_cached_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("speed_samples") as batch:
        batch.drop_column("predicted_cached_tokens")
        batch.drop_column("cached_tokens")
