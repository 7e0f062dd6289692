"""Database sources (SQLite, PostgreSQL, Cloud SQL): `config` (connection and table extraction
models), `engine` (SQLAlchemy engines, secrets resolved at connect time), `plan` (what an extraction
reads), `source` (`DatabaseSource`, Arrow batches out), `watermark` (incremental cursors), `column_types`
(database types as Arrow types), `postgres_copy` (extraction by COPY out of PostgreSQL), `errors`.
"""
