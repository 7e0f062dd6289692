"""The landing zone (bronze): `zone` (`LandingZone`: where an entity's landed files go, written
atomically), `delivered` (deliveries landed as their bytes, and the DuckDB scan that parses them once),
`query` (DuckDB over landed files), `parquet_io_manager` (Python assets' values as Parquet
on local disk or GCS).
"""
