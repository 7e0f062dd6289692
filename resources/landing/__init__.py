"""The landing zone (bronze): `zone` (`LandingZone`: where an entity's landed files go, written
atomically), `published` and `lease` (the landing kept on GCS, each machine working in a cache of it; `sharing`: what
the rest names of it without loading the GCS client libraries),
`delivered` (deliveries landed as their bytes, and the DuckDB scan that parses them once), `query` (DuckDB
over landed files), `ledger` and `landed_index` (an entity's processed files and landed files),
`parquet_io_manager` (Python assets' values as Parquet on local disk or GCS).
"""
