"""esteira's web console: models, versions with lineage, training runs, monitoring over time, audit, actions."""
