"""Asset factories: catalog entities in, Dagster assets and checks out.

`raw_assets` (landed data), `staged_assets` (typed tables and their contract check), `quality_checks`,
`dbt_models` (the dbt project as assets), `schema_registry_asset`, `healing_ops_assets` (the healing
ledger as warehouse tables). The only place that wires ingestion, staging and quality together.
"""
