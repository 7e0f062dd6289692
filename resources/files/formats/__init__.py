"""File formats. JSON, JSON Lines and Avro deliveries are read as streams of Arrow record batches as they
land: `reader` (`read_batches`, the one entry point, dispatching on the declared format), `json` (JSON Lines
and arrays, with `json_text` and `schema_union` for records whose fields vary), `avro`. CSV and Parquet
deliveries land as their bytes and are parsed once, by staging's DuckDB scan: `csv` reads only a CSV's
header at landing, and gives the DuckDB options staging parses it with.
"""
