"""Module-level Feast objects, for the ``feast`` CLI only (``feast -c feature_repo apply``).

The CLI discovers definitions by importing every module of the repository and collecting the
Feast objects it finds at module level. esteira's own code never imports this module: it calls
``build_definitions`` through ``feature_repo.store.open_store``. Data paths come from the same
settings (``ESTEIRA_HOME``), so the CLI and esteira register identical objects.
"""

from __future__ import annotations

from esteira.settings import get_settings
from feature_repo.definitions import build_definitions

_definitions = build_definitions(get_settings().home / "data")

customer = _definitions.customer
customer_profile_source = _definitions.profile_source
customer_activity_source = _definitions.activity_source
churn_labels = _definitions.label_source
churn_request = _definitions.request_source
customer_profile = _definitions.profile_view
customer_activity_daily = _definitions.activity_view
churn_request_features = _definitions.request_view
churn_v1 = _definitions.churn_v1
