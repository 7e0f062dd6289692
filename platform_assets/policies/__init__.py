"""Policies applied to the assets at the root: `freshness` (per-asset freshness policies from the
catalog's `max_lag`) and `triggers` (which schedules, sensors and automation conditions each asset gets,
chosen from the catalog and handed to `sensors` as arguments).
"""
