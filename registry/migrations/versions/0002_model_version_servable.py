"""model_version.servable: a version may be served by number once it has been promoted

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00

Versions that already hold an alias, or were ever promoted or rolled back to (the audit log says so),
become servable, so pinned routes keep answering for them after the upgrade.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('model_version', schema=None) as batch_op:
        batch_op.add_column(sa.Column('servable', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute(sa.text(
        "UPDATE model_version SET servable = :yes "
        "WHERE id IN (SELECT version_id FROM model_alias) "
        "OR EXISTS (SELECT 1 FROM audit_event e WHERE e.model_name = model_version.model_name "
        "AND e.to_version = model_version.version AND e.action IN ('promote', 'rollback'))"
    ).bindparams(yes=True))


def downgrade() -> None:
    with op.batch_alter_table('model_version', schema=None) as batch_op:
        batch_op.drop_column('servable')
