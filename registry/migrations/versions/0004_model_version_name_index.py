"""model_version.model_name indexed: pages and lookups by model name read a model's versions, not the table

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 10:00:00

``Registry.get_version``, ``list_versions`` and ``count_versions`` filter on the model's name; without an index
each scans every model's versions (a registry of many models with a thousand versions each).
"""
from typing import Sequence, Union

from alembic import op

revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('model_version', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_version_model_name'), ['model_name'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('model_version', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_version_model_name'))
