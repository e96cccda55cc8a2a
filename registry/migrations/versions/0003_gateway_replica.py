"""gateway_replica: each gateway replica records what it serves and refuses, refreshed like a heartbeat

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00

A replica's admin status answers for that replica only; this table lets a reader (the console) see every
replica's served versions. Rows are written by the replicas themselves; nothing to backfill.
"""
from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0003'
down_revision: Union[str, None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('gateway_replica',
    sa.Column('replica_id', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('host', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('project', sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
    sa.Column('served', sa.JSON(), nullable=False),
    sa.Column('refused', sa.JSON(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('replica_id')
    )


def downgrade() -> None:
    op.drop_table('gateway_replica')
