"""Files on local disk or GCS, through one fsspec/UPath layer: `store` (`FileStore`: listing,
streamed reads, atomic writes), `config` (the catalog's file options), `compression`, `read_context`
(what a reader knows about the file it reads), and `formats/` (one reader per file format).
"""
