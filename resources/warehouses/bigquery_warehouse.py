"""BigQuery as a warehouse to write to: Arrow batches staged on GCS as Parquet, then one load job.

The bulk path is only ever a load job over Parquet files (never streaming inserts, never
`load_table_from_dataframe`): the batches are written to `staging_uri/<load id>/part-NNNNN.parquet`, a new
file every `load_file_rows` rows, so memory stays about one batch plus one upload chunk whatever the row
count. The staged files are deleted afterwards, whether the load worked or not. Modes:

- `replace`: load into a new load table `_load_<table>_<id>`, then one `CREATE OR REPLACE TABLE ... AS
  SELECT` swaps it in (with the layout's partitioning and clustering): a failure leaves the old table.
  The swap is a query (it scans the load table once). BigQuery refuses to replace a table with a different
  partitioning spec: a layout change needs the table dropped first (the error says so).
- `append`: one load job, `WRITE_APPEND` with `ALLOW_FIELD_ADDITION`, into the table (created first from
  the data's columns and the layout if missing). BigQuery commits a load job whole or not at all.
- `upsert`: load into a load table, add the columns the table lacks (`ALTER TABLE ADD COLUMN`), then one
  `MERGE` on the primary key (matched rows get every column updated, the others are inserted). A query
  over the load table first refuses rows that repeat a key, naming them (`DuplicateKeyError`): MERGE would
  fail on a repeated existing key without naming it, and insert every copy of a repeated new one.
  Tombstones (rows with `_deleted` true, `load.TOMBSTONE_COLUMN`) are in the same MERGE: `WHEN MATCHED
  AND S._deleted THEN DELETE`, and a tombstone of a key the table lacks inserts nothing; the `_deleted`
  column stays in the load table, never added to the target. One statement, so deletes and writes commit
  together.
- `replace_partitions`: load into a load table, then one transaction deletes the rows of the given
  partition values and inserts the loaded rows; rows outside those values are refused.

An append or upsert of no rows into a table that already has every column runs no job at all (an
incremental run with nothing new would otherwise pay a load job and a MERGE that scans the table). Load
tables are always dropped afterwards. Columns keep their names exactly as given (no upper-casing);
a column whose type changed is refused with `WarehouseLoadError`, never cast. The dataset (`schema`) is
created in `location` if missing. Credentials: application default credentials, or a service-account key
JSON held in the environment variable named by `credentials_json_env` (its contents are never logged), or
none at all (`anonymous`, for an emulator only). Reads never use the BigQuery Storage API
(`create_bqstorage_client=False`): it would bypass `api_endpoint`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import itertools
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import dagster as dg
import google.auth
import google.auth.exceptions
import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import bigquery, storage
from google.oauth2 import service_account

from resources.warehouses.base import Warehouse
from resources.warehouses.bigquery_schema import (
    LEGACY_TYPE_NAMES,
    add_columns_sql,
    bigquery_field,
    create_table_sql,
    merge_sql,
    outside_partitions_sql,
    qualified_name,
    quote_identifier,
    replace_partitions_sql,
    replace_table_sql,
    sql_type,
    staging_type,
)
from resources.warehouses.load import (
    TOMBSTONE_COLUMN,
    CountedBatches,
    LoadMode,
    LoadResult,
    PartitionSlice,
    TableLayout,
    WarehouseLoadError,
    check_load_request,
    repeated_keys_error,
    repeated_keys_sql,
)

SCOPES = (
    "https://www.googleapis.com/auth/bigquery",
    "https://www.googleapis.com/auth/devstorage.read_write",
)
UPLOAD_CHUNK_BYTES = 16 * 1024 * 1024
"""Staged files are uploaded in resumable chunks of this size: the memory a file costs while written."""
MAX_TABLE_NAME_IN_LOAD_TABLE = 900
LOAD_TABLE_HOURS = 24
"""Load tables are dropped after the load; the expiration removes those a killed process left behind."""


class BigQueryWarehouseError(RuntimeError):
    """BigQuery or GCS refused a request; the message says what was being done and what the service said."""


class BigQueryWarehouse(Warehouse):
    """A BigQuery project to load Arrow batches into (through Parquet staged on GCS) and read tables from."""

    kind: ClassVar[str] = "bigquery"
    """The Dagster kind shown on table assets (the `Warehouse` protocol's attribute)."""
    project: str
    location: str = "US"
    """Where datasets are created and jobs run."""
    staging_uri: str
    """`gs://bucket/prefix` under which each load stages its Parquet files (deleted after the load)."""
    credentials_json_env: str | None = None
    """NAME of an environment variable holding a service-account key JSON (never its contents); None =
    application default credentials (`gcloud auth application-default login`, workload identity,
    GOOGLE_APPLICATION_CREDENTIALS)."""
    api_endpoint: str | None = None
    """BigQuery API endpoint override (an emulator); None = Google's. GCS follows `STORAGE_EMULATOR_HOST`."""
    anonymous: bool = False
    """Emulator only: send no credentials at all. Needs `api_endpoint` (refused against Google)."""
    load_file_rows: int = 1_000_000
    """Rows per staged Parquet file."""

    def quote(self, name: str) -> str:
        return quote_identifier(name)

    def table_ref(self, schema: str, table: str) -> str:
        return qualified_name(self.project, schema, table)

    def load(
        self,
        schema: str,
        table: str,
        batches: Iterable[pa.RecordBatch],
        *,
        mode: LoadMode,
        primary_key: list[str] | None = None,
        partition: PartitionSlice | None = None,
        layout: TableLayout | None = None,
    ) -> LoadResult:
        """Stage the batches on GCS as Parquet and load them (see the module docstring for each mode)."""
        started = time.monotonic()
        target = self.table_ref(schema, table)
        incoming = CountedBatches(batches)
        check_load_request(mode, primary_key, partition, incoming.schema.names, target)
        fields = [bigquery_field(field) for field in incoming.schema]
        duplicates = {name for name in incoming.schema.names if incoming.schema.names.count(name) > 1}
        if duplicates:
            raise WarehouseLoadError(f"{target}: the data has duplicate column names {sorted(duplicates)}")
        client = self._bigquery()
        self._ensure_dataset(client, schema)
        existing = self._table(client, schema, table)
        if existing is not None and mode != "replace":
            _refuse_type_changes(target, existing.schema, fields)
        load_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}_{uuid.uuid4().hex[:12]}"
        staging = _Staging(self._storage(), self.staging_uri, load_id)
        try:
            column_order = _load_order(incoming.schema.names, existing, mode)
            try:
                uris = staging.write(incoming, column_order, self.load_file_rows)
            except BaseException as error:
                incoming.reraise_source_failure(error)
                raise
            if not _changes_nothing(incoming, mode, existing, fields):
                self._run_load(
                    client,
                    schema,
                    table,
                    mode,
                    fields,
                    existing,
                    uris,
                    load_id,
                    primary_key,
                    partition,
                    layout,
                )
        except api_exceptions.GoogleAPICallError as error:
            raise BigQueryWarehouseError(
                f"{mode} of {target} failed, no rows were changed: {_message(error)}"
            ) from error
        finally:
            staging.delete()
        columns = self.columns(schema, table)
        return LoadResult(incoming.written, incoming.bytes, time.monotonic() - started, columns)

    def stream_table(
        self,
        schema: str,
        table: str,
        *,
        columns: Sequence[str] | None = None,
        partition: PartitionSlice | None = None,
        batch_rows: int = 100_000,
    ) -> pa.RecordBatchReader:
        """The table's rows as batches of at most `batch_rows`: tabledata.list pages for a whole table, a
        query for a partition slice (partitions are matched on the column's text form)."""
        client = self._bigquery()
        existing = self._table(client, schema, table)
        if existing is None:
            raise BigQueryWarehouseError(f"{self.table_ref(schema, table)} does not exist")
        by_name = {field.name: field for field in existing.schema}
        names = list(columns) if columns is not None else list(by_name)
        missing = [name for name in names if name not in by_name]
        if missing:
            raise BigQueryWarehouseError(
                f"{self.table_ref(schema, table)} has no column(s) {missing} (columns: {list(by_name)})"
            )
        fields = [by_name[name] for name in names]
        if partition is None:
            rows = client.list_rows(existing, selected_fields=fields, page_size=batch_rows)
        else:
            selected = ", ".join(self.quote(name) for name in names)
            sql = (
                f"SELECT {selected} FROM {self.table_ref(schema, table)} "
                f"WHERE CAST({self.quote(partition.column)} AS STRING) IN UNNEST(@values)"
            )
            values = bigquery.ArrayQueryParameter("values", "STRING", [str(v) for v in partition.values])
            config = bigquery.QueryJobConfig(query_parameters=[values])
            rows = client.query(sql, job_config=config, location=self.location).result(page_size=batch_rows)
        pages = iter(rows.to_arrow_iterable(bqstorage_client=None))
        first = next(pages, None)
        if first is None:
            empty = client.list_rows(existing, selected_fields=fields, max_results=0)
            return pa.RecordBatchReader.from_batches(
                empty.to_arrow(create_bqstorage_client=False).schema, iter(())
            )
        return pa.RecordBatchReader.from_batches(
            first.select(names).schema, _recut(itertools.chain([first], pages), names, batch_rows)
        )

    def tables(self, schema: str) -> list[str]:
        try:
            return sorted(item.table_id for item in self._bigquery().list_tables(f"{self.project}.{schema}"))
        except api_exceptions.NotFound:
            return []

    def describe(self) -> str:
        return f"BigQuery project {self.project} ({self.location})"

    def query(self, sql: str, parameters: Sequence[object] | None = None) -> list[tuple]:
        """Rows of one statement (GoogleSQL; positional `?` parameters)."""
        client = self._bigquery()
        config = bigquery.QueryJobConfig(query_parameters=[_parameter(value) for value in parameters or ()])
        try:
            result = client.query(sql, job_config=config, location=self.location).result()
        except api_exceptions.GoogleAPICallError as error:
            raise BigQueryWarehouseError(
                f"query on project {self.project} failed: {_message(error)}"
            ) from error
        return [tuple(row.values()) for row in result]

    def columns(self, schema: str, table: str) -> list[tuple[str, str]]:
        """(name, BigQuery SQL type) of each column in table order; empty when the table does not exist."""
        existing = self._table(self._bigquery(), schema, table)
        if existing is None:
            return []
        return [(field.name, sql_type(field)) for field in existing.schema]

    def _run_load(
        self,
        client: bigquery.Client,
        schema: str,
        table: str,
        mode: LoadMode,
        fields: list[bigquery.SchemaField],
        existing: bigquery.Table | None,
        uris: list[str],
        load_id: str,
        primary_key: list[str] | None,
        partition: PartitionSlice | None,
        layout: TableLayout | None,
    ) -> None:
        target = self.table_ref(schema, table)
        if mode == "append":
            if existing is None:  # IF NOT EXISTS: another load may be creating it too
                self._execute(client, create_table_sql(target, fields, layout, if_not_exists=True))
                load_fields = fields
            else:
                known = {field.name for field in existing.schema}
                load_fields = list(existing.schema) + [field for field in fields if field.name not in known]
            self._load_job(client, schema, table, uris, load_fields, append=True)
            return
        load_table = f"_load_{table[:MAX_TABLE_NAME_IN_LOAD_TABLE]}_{load_id}"
        source = self.table_ref(schema, load_table)
        self._execute(client, create_table_sql(source, fields, None, expires_hours=LOAD_TABLE_HOURS))
        try:
            self._load_job(client, schema, load_table, uris, fields, append=False)
            # Tombstones (upserts only: `check_load_request`) stay in the load table; the target never
            # gets their column.
            tombstones = any(field.name == TOMBSTONE_COLUMN for field in fields)
            stored = [field for field in fields if field.name != TOMBSTONE_COLUMN]
            names = [field.name for field in stored]
            if mode == "upsert":
                assert primary_key is not None
                # MERGE would update a row from whichever copy of a repeated key, or insert every copy of a
                # new one (a new table would get them all): refused, naming them, before the table is
                # touched.
                repeated = list(
                    self._execute(client, repeated_keys_sql(source, primary_key, quote_identifier))
                )
                if repeated:
                    raise repeated_keys_error(target, primary_key, [tuple(row.values()) for row in repeated])
            if mode == "replace" or existing is None:
                statement = "CREATE OR REPLACE TABLE" if mode == "replace" else "CREATE TABLE"
                ddl = replace_table_sql(target, source, stored, layout, tombstones=tombstones)
                self._execute(client, ddl.replace("CREATE OR REPLACE TABLE", statement, 1))
                return
            known = {field.name for field in existing.schema}
            added = [field for field in stored if field.name not in known]
            if added:
                self._execute(client, add_columns_sql(target, added))
            if mode == "upsert":
                assert primary_key is not None
                self._execute(client, merge_sql(target, source, names, primary_key, tombstones=tombstones))
            else:
                assert partition is not None
                self._check_partition_rows(client, target, source, partition)
                self._execute(
                    client, replace_partitions_sql(target, source, names, partition.column, partition.values)
                )
        finally:
            client.delete_table(f"{self.project}.{schema}.{load_table}", not_found_ok=True)

    def _check_partition_rows(
        self, client: bigquery.Client, target: str, source: str, partition: PartitionSlice
    ) -> None:
        rows = self._execute(client, outside_partitions_sql(source, partition.column, partition.values))
        outside = next(iter(rows))[0]
        if outside:
            raise WarehouseLoadError(
                f"replace_partitions into {target}: {outside} row(s) have a {partition.column!r} outside "
                f"{list(partition.values)} (or NULL); they would survive the next replace of their own "
                f"partition as duplicates. Filter the data to the partitions, or list them all."
            )

    def _load_job(
        self,
        client: bigquery.Client,
        schema: str,
        table: str,
        uris: list[str],
        fields: list[bigquery.SchemaField],
        *,
        append: bool,
    ) -> None:
        config = load_job_config(fields, append=append)
        job = client.load_table_from_uri(
            uris, f"{self.project}.{schema}.{table}", job_config=config, location=self.location
        )
        job.result()

    def _execute(self, client: bigquery.Client, sql: str) -> Any:
        return client.query(sql, location=self.location).result()

    # ------------------------------------------------------------------------------------------ clients
    def _credentials(self) -> Credentials:
        if self.anonymous:
            if not self.api_endpoint:
                raise BigQueryWarehouseError(
                    "anonymous=True is for an emulator: set api_endpoint to it (Google refuses anonymous)"
                )
            return AnonymousCredentials()
        if self.credentials_json_env:
            text = os.environ.get(self.credentials_json_env)
            if not text:
                raise BigQueryWarehouseError(
                    f"the environment variable {self.credentials_json_env} (credentials_json_env) is not set "
                    f"or empty; put the service-account key JSON in it, or set credentials_json_env to None "
                    f"to use application default credentials"
                )
            try:
                info = json.loads(text)
                return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
            except (ValueError, KeyError):
                # The exception text may quote the key: name the variable only.
                raise BigQueryWarehouseError(
                    f"the environment variable {self.credentials_json_env} does not hold a service-account "
                    f"key JSON (type, client_email, private_key, token_uri)"
                ) from None
        try:
            credentials, _ = google.auth.default(scopes=SCOPES)
        except google.auth.exceptions.DefaultCredentialsError as error:
            raise BigQueryWarehouseError(
                f"no application default credentials for BigQuery ({error}); run `gcloud auth "
                f"application-default login`, or set credentials_json_env to a variable holding a key"
            ) from error
        return credentials

    def _bigquery(self) -> bigquery.Client:
        options = ClientOptions(api_endpoint=self.api_endpoint) if self.api_endpoint else None
        return bigquery.Client(
            project=self.project,
            credentials=self._credentials(),
            location=self.location,
            client_options=options,
        )

    def _storage(self) -> storage.Client:
        return storage.Client(project=self.project, credentials=self._credentials())

    def _ensure_dataset(self, client: bigquery.Client, dataset_id: str) -> None:
        """Create the dataset if missing (looked up first: a role may read datasets but not create them)."""
        dataset = bigquery.Dataset(f"{self.project}.{dataset_id}")
        dataset.location = self.location
        try:
            client.get_dataset(dataset.reference)
            return
        except api_exceptions.NotFound:
            pass
        try:
            client.create_dataset(dataset, exists_ok=True)
        except api_exceptions.GoogleAPICallError as error:
            raise BigQueryWarehouseError(
                f"cannot create dataset {self.project}.{dataset_id} in {self.location}: {_message(error)}"
            ) from error

    def _table(self, client: bigquery.Client, schema: str, table: str) -> bigquery.Table | None:
        try:
            return client.get_table(f"{self.project}.{schema}.{table}")
        except api_exceptions.NotFound:
            return None


def _recut(pages: Iterator[pa.RecordBatch], names: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Pages in the requested column order, cut to at most `batch_rows` rows each."""
    for page in pages:
        ordered = page.select(names)
        for offset in range(0, ordered.num_rows, batch_rows):
            yield ordered.slice(offset, batch_rows)


def load_job_config(fields: list[bigquery.SchemaField], *, append: bool) -> bigquery.LoadJobConfig:
    """A Parquet load job: append (adding the new columns) into an existing table, or truncate a new one.
    The schema is given explicitly, so that naive timestamps load as DATETIME and the types are ours."""
    parquet_options = bigquery.ParquetOptions()
    parquet_options.enable_list_inference = True
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        schema=fields,
        create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        write_disposition=(
            bigquery.WriteDisposition.WRITE_APPEND if append else bigquery.WriteDisposition.WRITE_TRUNCATE
        ),
    )
    config.parquet_options = parquet_options
    if append:
        config.schema_update_options = [bigquery.SchemaUpdateOption.ALLOW_FIELD_ADDITION]
    return config


class _Staging:
    """The Parquet files of one load under `staging_uri/<load id>/`, written batch by batch."""

    def __init__(self, client: storage.Client, staging_uri: str, load_id: str) -> None:
        if not staging_uri.startswith("gs://") or len(staging_uri) <= len("gs://"):
            raise WarehouseLoadError(f"staging_uri must be gs://bucket[/prefix], not {staging_uri!r}")
        bucket_name, _, prefix = staging_uri[len("gs://") :].partition("/")
        self.client = client
        self.bucket = client.bucket(bucket_name)
        self.prefix = "/".join(part for part in (prefix.strip("/"), load_id) if part) + "/"
        self.names: list[str] = []

    def write(self, incoming: CountedBatches, column_order: list[str], rows_per_file: int) -> list[str]:
        schema = pa.schema(
            [
                incoming.schema.field(name).with_type(staging_type(incoming.schema.field(name).type))
                for name in column_order
            ]
        )
        writer: pq.ParquetWriter | None = None
        upload: Any = None
        in_file = 0
        try:
            for batch in incoming.reader():
                batch = batch.select(column_order).cast(schema)
                if not self.names:  # at least one file, even for a stream of empty batches
                    upload, writer = self._open(schema)
                offset = 0
                while offset < batch.num_rows:
                    if writer is None:
                        upload, writer = self._open(schema)
                        in_file = 0
                    take = min(rows_per_file - in_file, batch.num_rows - offset)
                    writer.write_batch(batch.slice(offset, take))
                    offset += take
                    in_file += take
                    if in_file >= rows_per_file:
                        writer.close()
                        upload.close()
                        writer = upload = None
            if writer is not None:
                writer.close()
                upload.close()
                writer = upload = None
        finally:
            if upload is not None:
                # Finish the half-written file now (it is deleted with the others): left to the garbage
                # collector, the writer would finalize the upload later, after the staged files are deleted.
                with contextlib.suppress(Exception):
                    if writer is not None:
                        writer.close()
                upload.close()
        return [f"gs://{self.bucket.name}/{name}" for name in self.names]

    def _open(self, schema: pa.Schema) -> tuple[Any, pq.ParquetWriter]:
        name = f"{self.prefix}part-{len(self.names):05d}.parquet"
        self.names.append(name)
        upload = self.bucket.blob(name, chunk_size=UPLOAD_CHUNK_BYTES).open("wb", ignore_flush=True)
        return upload, pq.ParquetWriter(upload, schema, compression="snappy")

    def delete(self) -> None:
        """Delete everything under this load's prefix (listed, so that a half-written file goes too). A
        failure here is logged, never raised: it must not hide the load's own outcome."""
        try:
            for blob in self.client.list_blobs(self.bucket, prefix=self.prefix):
                with contextlib.suppress(api_exceptions.NotFound):
                    blob.delete()
        except (api_exceptions.GoogleAPICallError, OSError) as error:
            dg.get_dagster_logger().warning(
                f"could not delete the staged load files under gs://{self.bucket.name}/{self.prefix} "
                f"({error}); delete them by hand (or give the bucket a lifecycle rule for the prefix)"
            )


def _changes_nothing(
    incoming: CountedBatches,
    mode: LoadMode,
    existing: bigquery.Table | None,
    fields: Sequence[bigquery.SchemaField],
) -> bool:
    """An append or upsert of no rows into a table that has every column: no job is run. An incremental run
    with nothing new would otherwise cost a load job and a MERGE, and the MERGE bills a scan of the whole
    table, on every run."""
    if incoming.rows or mode not in ("append", "upsert") or existing is None:
        return False
    known = {field.name for field in existing.schema}
    return all(field.name in known for field in fields if field.name != TOMBSTONE_COLUMN)


def _load_order(names: list[str], existing: bigquery.Table | None, mode: LoadMode) -> list[str]:
    """Column order of the staged files: the table's order, then the new columns. BigQuery matches Parquet
    columns by name anyway; the emulator matches them by position."""
    if existing is None or mode != "append":
        return list(names)
    known = [field.name for field in existing.schema if field.name in names]
    return known + [name for name in names if name not in known]


def _refuse_type_changes(
    target: str, existing: Sequence[bigquery.SchemaField], fields: Sequence[bigquery.SchemaField]
) -> None:
    types = {field.name: sql_type(field) for field in existing}
    conflicts = [
        f"column {field.name!r} is {types[field.name]} in the table but {sql_type(field)} in the data"
        for field in fields
        if field.name in types and _base(types[field.name]) != _base(sql_type(field))
    ]
    if conflicts:
        raise WarehouseLoadError(
            f"cannot load into {target}: {'; '.join(conflicts)}. Cast the column back to the table's type "
            f"before loading, or change the table deliberately (a migration, or load with mode='replace')."
        )


def _base(type_name: str) -> str:
    """`NUMERIC(10, 2)` and `NUMERIC` are the same column type for a load."""
    base = type_name.split("(", 1)[0].strip()
    return LEGACY_TYPE_NAMES.get(base, base)


def _parameter(value: object) -> bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter:
    if isinstance(value, list | tuple):
        types = {_scalar_parameter_type(item) for item in value}
        return bigquery.ArrayQueryParameter(None, types.pop() if len(types) == 1 else "STRING", list(value))
    return bigquery.ScalarQueryParameter(None, _scalar_parameter_type(value), value)


def _scalar_parameter_type(value: object) -> str:
    if value is None:
        return "STRING"
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, decimal.Decimal):
        return "NUMERIC"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP" if value.tzinfo is not None else "DATETIME"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, dt.time):
        return "TIME"
    if isinstance(value, bytes):
        return "BYTES"
    if isinstance(value, str):
        return "STRING"
    raise TypeError(f"no BigQuery query parameter type for {type(value).__name__} value {value!r}")


def _message(error: api_exceptions.GoogleAPICallError) -> str:
    details = [str(item.get("message")) for item in (error.errors or []) if isinstance(item, dict)]
    return "; ".join(dict.fromkeys([error.message, *details]))
