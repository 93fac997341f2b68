"""devices by last seen, denials by time and by registry: the Overview's counts and the
filtered Devices and Blocked pulls lists stay index reads on a big fleet

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 09:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_devices_org_last_seen", "devices", ["organization_id", "last_seen"])
    op.create_index("ix_denials_org_occurred_at", "denials", ["organization_id", "occurred_at"])
    op.create_index("ix_denials_org_registry_host", "denials", ["organization_id", "registry_host"])


def downgrade() -> None:
    op.drop_index("ix_denials_org_registry_host", table_name="denials")
    op.drop_index("ix_denials_org_occurred_at", table_name="denials")
    op.drop_index("ix_devices_org_last_seen", table_name="devices")
