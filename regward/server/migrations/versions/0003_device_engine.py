"""devices: whether the machine's Docker Engine uses the agent's AuthZ plugin and proxy

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 19:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("engine_authz", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("engine_proxy", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("engine_proxy")
        batch_op.drop_column("engine_authz")
