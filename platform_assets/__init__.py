"""WHAT data exists: the source catalog and the assets, checks and dbt models built from it.

The Dagster code location is `platform_assets.definitions`.
"""
