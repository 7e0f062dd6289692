"""File formats, each read as a stream of Arrow record batches: `reader` (`read_batches`, the one
entry point, dispatching on the declared format), `csv`, `json` (JSON Lines and arrays, with `json_text`
and `schema_union` for records whose fields vary), `parquet`, `avro`.
"""
