"""Warehouses the staged and mart tables live in: `base` (the `Warehouse` protocol every engine
implements), `load` (load modes, results and errors shared by all engines), `io_manager`
(`WarehouseIOManager`), one module per engine (`duckdb_warehouse`, `postgres_warehouse`,
`bigquery_warehouse`, with their helpers `duckdb_file_rows`, `postgres_load`, `bigquery_schema`) and
`dbt_warehouse` (the dbt target and profile for each engine).
"""
