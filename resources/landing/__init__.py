"""The landing zone (bronze): `zone` (`LandingZone`: where an entity's landed files go, written
atomically), `published` and `lease` (the landing kept on GCS, each machine working in a cache of it),
`sharing` (what the rest names of a shared landing without loading the GCS client libraries), `delivered`
(deliveries landed as their bytes, and the DuckDB scan that parses them once), `query` (DuckDB over landed
files), `ledger` and `landed_index` (an entity's processed files and landed files), `bronze`,
`bronze_records` and `bronze_zone` (database and REST records landed in the PostgreSQL bronze layer),
`parquet_io_manager` (Python assets' values as Parquet on local disk or GCS).
"""
