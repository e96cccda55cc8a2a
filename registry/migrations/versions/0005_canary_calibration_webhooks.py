"""Progressive delivery and late labels: a model's canary share, a version's calibration, report kinds and
webhook deliveries

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 21:30:00

``registered_model.canary_share`` is the traffic share the gateway gives the ``canary`` alias;
``model_version.calibration`` maps the version's probabilities to holdout frequencies (the monitor's
estimate before labels arrive); ``monitoring_report.kind`` tells monitor reports from canary verdicts
(existing rows are monitor reports); ``webhook_delivery`` records every webhook send of a registry event.
"""
from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('registered_model', schema=None) as batch_op:
        batch_op.add_column(sa.Column('canary_share', sa.Float(), nullable=True))
    with op.batch_alter_table('model_version', schema=None) as batch_op:
        batch_op.add_column(sa.Column('calibration', sa.JSON(), nullable=True))
    with op.batch_alter_table('monitoring_report', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False,
                                      server_default='monitor'))
    op.create_table('webhook_delivery',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('url', sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('response_code', sa.Integer(), nullable=True),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['audit_event.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_delivery_event_id'), ['event_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_delivery_event_id'))
    op.drop_table('webhook_delivery')
    with op.batch_alter_table('monitoring_report', schema=None) as batch_op:
        batch_op.drop_column('kind')
    with op.batch_alter_table('model_version', schema=None) as batch_op:
        batch_op.drop_column('calibration')
    with op.batch_alter_table('registered_model', schema=None) as batch_op:
        batch_op.drop_column('canary_share')
