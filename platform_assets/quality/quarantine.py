"""Splitting a staging run into the rows that go to the staged table and the rows that go to quarantine.

The staging SELECT (`staging_sql.staging_select`) already marks, per row, the error-severity row rules it
breaks (`_violations`, compiled to SQL). It is materialized ONCE into a table beside the staged table
(`<schema>.__staging_<table>`) of the warehouse's staging database (`Warehouse.staging_database`: the
DuckDB warehouse's own file, else a scratch DuckDB file under the landing's spill directory, where DuckDB
also spills when the data outgrows `memory_limit`), then settled there into exactly the rows of this run:

1. custom checks (`check:`, Python, not compilable to SQL) run over that one column, batch by batch (pandas
   on that column only); the rows they reject get the check's label added to their `_violations`;
2. of the versions of a key landed by several extractions, those a later good version replaces are
   deleted (`_keep_current_versions`), then the rows a later copy of a re-delivered file replaces
   (`_withdraw_replaced_copies`);
3. one aggregate counts all rows, bad rows and failures per rule (`summary`), BEFORE anything is written:
   the caller refuses the whole step when the bad rows of a delivery (a file, or an extraction; counted
   as delivered, before step 2) are over the entity's `max_bad_fraction` of its rows and more than one
   (`DeliveryShare.refused`);
4. `quarantine_rows` gives one row per (bad row, broken rule) for `ops.quarantine` (upserted on
   `QUARANTINE_KEY`), spilled to a Parquet file so that they can be loaded once the database is closed;
5. `resolved` gives the quarantine rows of earlier runs this run's good rows resolve (`superseded`,
   `released`), for the caller to record once the staged load committed;
6. `staged_rows` closes the database and hands the table over, with the filter of the good rows (and
   without `_violations`), to the warehouse load: a DuckDB warehouse keeps the table in place, any other
   reads it as Arrow batches; either way it is removed once loaded.

Memory stays bounded by the batch size and DuckDB's memory limit, never by the delivery.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from platform_assets.catalog import rules
from platform_assets.catalog.model import Entity
from platform_assets.quality.profile import TableProfile, profile_sql, read_profile
from platform_assets.staging.sql import (
    CAST_ERRORS_COLUMN,
    ORIGIN_COLUMN,
    RECORD_COLUMN,
    VIOLATIONS_COLUMN,
    sql_string,
)
from resources.landing.delivered import drop_parsed_copies, parse_copies, rejected_records
from resources.landing.query import DEFAULT_STAGING_MEMORY, StagingMemory
from resources.landing.zone import EXTRACTED_AT_COLUMN, SOURCE_COLUMN
from resources.warehouses.base import Warehouse
from resources.warehouses.duckdb_file_rows import DuckDBFileRows, StagingDatabase
from resources.warehouses.duckdb_warehouse import qualified_name, quote_identifier

QUARANTINE_SCHEMA = "ops"
QUARANTINE_TABLE = "quarantine"
QUARANTINE_COLUMNS = (
    "asset_key",
    "row_key",
    "rule",
    "column",
    "run_id",
    "row_json",
    "quarantined_at",
    "key_json",
    "status",
    "resolved_at",
)
"""One row per broken rule of a quarantined row: `row_key` is where the row was landed (`<landed
file>#<record>`); `row_json` is the whole staged row as JSON text (typed values; a value that did not parse
is NULL there and kept verbatim in `_cast_errors`), with its lineage (`_origin`, `_record`, `_source`,
`_extracted_at`); `key_json` its primary key as JSON text (NULL without one), to find later versions of the
key by; `status` and `resolved_at` say whether it is still held back (`HELD`)."""
QUARANTINE_KEY = ["asset_key", "row_key", "rule", "column"]
"""A full staging run rebuilds from every landed file, so a bad row is found again: it is upserted on
this key (one row per landed row and broken rule, `run_id` and `quarantined_at` of the latest run that
found it), never appended again."""
HELD, SUPERSEDED, RELEASED = "held", "superseded", "released"
"""A quarantine row's `status`: `held` back (NULL in rows written before statuses); `superseded` once a later
good version of its key is staged (a correction delivered after it); `released` once the row itself is
staged after all (a relaxed rule, a fixed check: `dataplatform replay`). It leaves `held` when a staging
run's load stages what resolves it (`resolved_at`), so the staged table and the held rows never hold the
same key's current version."""
QUARANTINE_ARROW = pa.schema(
    [
        *((name, pa.string()) for name in QUARANTINE_COLUMNS[:6]),
        ("quarantined_at", pa.timestamp("us")),
        ("key_json", pa.string()),
        ("status", pa.string()),
        ("resolved_at", pa.timestamp("us")),
    ]
)

_ROW = "__row"


@dataclass(frozen=True)
class DeliveryShare:
    """The rows one delivery brought to a run, and how many of them broke rules that are not exempt."""

    delivery: str
    """Which delivery: its file and extraction time (`file, time`), or its extraction time."""
    rows: int
    bad: int

    @property
    def fraction(self) -> float:
        return self.bad / self.rows if self.rows else 0.0

    def refused(self, max_bad_fraction: float) -> bool:
        """Whether the delivery's bad rows refuse the staging step: more than `max_bad_fraction` of its
        rows, and more than one. A single bad row is quarantined whatever the delivery's size: deliveries
        of a few rows are common, one bad row of three is 33%, and no share would otherwise let the
        quarantine take it (the schema registry reads a lone unparseable value alike: a bad row, not a
        type change)."""
        return self.bad > 1 and self.fraction > max_bad_fraction


@dataclass
class SplitSummary:
    total: int = 0
    bad: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)
    drifted: int = 0
    """Bad rows that break only exempt rules (`summary(exempt=...)`): quarantined, but outside
    `bad_fraction`."""
    deliveries: tuple[DeliveryShare, ...] = ()
    """The deliveries with rows quarantined for data quality, the largest share first: the delivery with
    the largest share need not be one that is refused (one bad row of three is not), so each is judged."""

    @property
    def worst(self) -> DeliveryShare | None:
        """The delivery with the largest share of rows quarantined for data quality."""
        return self.deliveries[0] if self.deliveries else None

    @property
    def bad_fraction(self) -> float:
        """The largest share of one delivery's rows quarantined for data quality: what `max_bad_fraction`
        bounds. Per delivery, so that a bad new file is not diluted by the rows of every file before it."""
        return self.worst.fraction if self.worst is not None else 0.0

    def refused(self, max_bad_fraction: float) -> DeliveryShare | None:
        """The delivery (the largest share of those) whose bad rows refuse the staging step
        (`DeliveryShare.refused`); None when no delivery does."""
        return next((share for share in self.deliveries if share.refused(max_bad_fraction)), None)


class StagingSplit:
    """The staged rows of one run in a staging database, with each row's broken error-severity rules, in
    the table `<schema>.__staging_<table>` until the warehouse load takes it over."""

    def __init__(
        self,
        select_sql: str,
        entity: Entity,
        checks: Mapping[str, Callable[[Any], Any]],
        database: StagingDatabase,
        target: tuple[str, str],
        *,
        spill_dir: Path,
        batch_rows: int,
        memory: StagingMemory = DEFAULT_STAGING_MEMORY,
        type_counted: Sequence[str] = (),
        redelivered: Sequence[str] = (),
        delivery: Sequence[str] = (EXTRACTED_AT_COLUMN,),
        parsed_copies: Sequence[Path] = (),
    ) -> None:
        """`delivery`: the staged columns that tell one delivery from another (`delivery_key`); type
        failures and bad rows are counted per delivery. `parsed_copies`: the landed files whose delivered
        copies `select_sql` reads parsed (`staging_select(..., parsed=True)`), parsed here first. `memory`:
        the database's memory limit and threads (`staging_memory`)."""
        self.entity = entity
        self.delivery = ", ".join(f"{quote_identifier(name)}::VARCHAR" for name in delivery)
        self.batch_rows = batch_rows
        self.database = database
        self.spill_dir = spill_dir
        schema, table = target
        self.schema, self.name = schema, f"__staging_{table}"
        self.table = qualified_name(self.schema, self.name)
        self.con = database.connect(
            memory_limit=memory.memory_limit, spill_dir=spill_dir, threads=memory.threads
        )
        try:
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}")
            parse_copies(self.con, parsed_copies)
            self.con.execute(f"CREATE OR REPLACE TABLE {self.table} AS {select_sql}")
            drop_parsed_copies(self.con, parsed_copies)
            self.malformed = rejected_records(self.con)
            """Records of the delivered copies too malformed to be rows, set aside by the scan."""
            self._renumber_after(self.malformed)
            self.type_counts = self._type_counts(type_counted)
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE custom_failures ({_ROW} BIGINT, violation VARCHAR)"
            )
            for name, function in checks.items():
                if rules.column_severity(entity, name) == "error":
                    self._run_check(name, function)
            ((rejected,),) = self.con.execute("SELECT count(*) FROM custom_failures").fetchall()
            if rejected:
                self.con.execute(_merge_custom_failures(self.table))
            if redelivered:
                self._find_copies(redelivered)
            self._count_deliveries(replaced_copies=bool(redelivered))
            self._keep_current_versions()
            if redelivered:
                self._withdraw_replaced_copies()
        except BaseException:
            self.close()
            raise

    def _renumber_after(self, rejected: Sequence[Mapping[str, Any]]) -> None:
        """`_record` of the rows after a record the scan set aside, plus one per such record before them:
        the scan numbers the rows it keeps, so without this a row would take the number of the record
        before it. A row numbered n follows the j-th rejected record (0-based, in file order) of its copy
        when that record's number minus j is at most n."""
        if not rejected:
            return
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE __rejected (origin VARCHAR, extracted_at TIMESTAMPTZ, line BIGINT)"
        )
        self.con.executemany(
            "INSERT INTO __rejected VALUES (?, ?, ?)",
            [(record["file"], record["extracted_at"], record["line"]) for record in rejected],
        )
        origin, record = quote_identifier(ORIGIN_COLUMN), quote_identifier(RECORD_COLUMN)
        extracted_at = quote_identifier(EXTRACTED_AT_COLUMN)
        self.con.execute(
            f"UPDATE {self.table} AS t SET {record} = t.{record} + shifted.n FROM ("
            f"SELECT t.rowid AS id, count(*) AS n FROM {self.table} AS t JOIN ("
            f"SELECT origin, extracted_at, line - row_number() OVER (PARTITION BY origin, extracted_at "
            f"ORDER BY line) + 1 AS first_after FROM __rejected) AS r "
            f"ON r.origin = t.{origin} AND r.extracted_at = t.{extracted_at} AND r.first_after <= t.{record} "
            f"GROUP BY t.rowid) AS shifted WHERE t.rowid = shifted.id"
        )

    def _type_counts(self, names: Sequence[str]) -> dict[str, list[tuple[int, int]]]:
        """Per column (error-severity, so that `_violations` marks its type failures): the numbers of its
        landed non-null values that did and did not parse as its staged type, one pair per delivery."""
        if not names:
            return {}
        violations = quote_identifier(VIOLATIONS_COLUMN)
        selects = []
        for name in names:
            label = sql_string(rules.rule_label(name, rules.TYPE))
            selects += [
                f"count({quote_identifier(name)})",
                f"count(*) FILTER (WHERE list_contains({violations}, {label}))",
            ]
        rows = self.con.execute(
            f"SELECT {', '.join(selects)} FROM {self.table} GROUP BY {self.delivery}"
        ).fetchall()
        return {
            name: [(row[2 * index], row[2 * index + 1]) for row in rows] for index, name in enumerate(names)
        }

    def _find_copies(self, redelivered: Sequence[str]) -> None:
        """`copies`: each landed copy (file, extraction) of the delivered files this run holds several
        copies of (`redelivered`, `platform_assets/staging/redelivery.py`); made only in a run that has
        some, so that a run without re-deliveries counts its deliveries without an anti-join."""
        origin, extracted_at = quote_identifier(ORIGIN_COLUMN), quote_identifier(EXTRACTED_AT_COLUMN)
        files = "[" + ", ".join(sql_string(name) for name in redelivered) + "]::VARCHAR[]"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE copies AS SELECT DISTINCT {origin}, {extracted_at} "
            f"FROM {self.table} WHERE list_contains({files}, {origin})"
        )

    def _later_copy(self) -> str:
        """SQL: a later copy of the file the row of `self.table` came from exists (the row's copy is
        replaced)."""
        origin, extracted_at = quote_identifier(ORIGIN_COLUMN), quote_identifier(EXTRACTED_AT_COLUMN)
        return (
            f"SELECT 1 FROM copies AS later WHERE later.{origin} = {self.table}.{origin} "
            f"AND later.{extracted_at} > {self.table}.{extracted_at}"
        )

    def _count_deliveries(self, *, replaced_copies: bool) -> None:
        """The rows of each delivery per set of broken rules, as delivered: before later versions of a
        key replace earlier ones, so that a delivery is judged on what it brought, whatever came after
        (a full rebuild then judges each delivery as the incremental run that first staged it did). A copy
        of a file that a later copy replaces is no delivery any more: a delivery refused for its bad rows
        and delivered again corrected is judged on the correction alone."""
        current = f"WHERE NOT EXISTS ({self._later_copy()}) " if replaced_copies else ""
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE delivered AS SELECT concat_ws(', ', {self.delivery}) AS delivery, "
            f"{quote_identifier(VIOLATIONS_COLUMN)} AS violations, count(*) AS n "
            f"FROM {self.table} {current}GROUP BY ALL"
        )

    def _keep_current_versions(self) -> None:
        """Delete the versions of a key that a later good version replaces.

        A key's current version is its latest GOOD one: a correction that breaks a rule is quarantined and
        the version before it stays staged, exactly as an upsert of only the good rows of each run leaves
        it (`staging_plan`), so a rebuild and a chain of incremental runs stage the same rows. Two versions
        of a key in ONE extraction both stay, for the schema contract to report as a duplicate instead of
        one being dropped silently. A single extraction (a first or full load) needs nothing.
        """
        extracted_at = quote_identifier(EXTRACTED_AT_COLUMN)
        ((oldest, newest),) = self.con.execute(
            f"SELECT min({extracted_at}), max({extracted_at}) FROM {self.table}"
        ).fetchall()
        if not self.entity.primary_key or oldest == newest:
            return
        key = [quote_identifier(name) for name in self.entity.primary_key]
        columns = ", ".join(key)
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE latest_good AS SELECT {columns}, max({extracted_at}) AS __latest "
            f"FROM {self.table} WHERE {quote_identifier(VIOLATIONS_COLUMN)} IS NULL AND {extracted_at} > ? "
            f"GROUP BY {columns}",
            [oldest],
        )
        matches = " AND ".join(f"{self.table}.{name} = later.{name}" for name in key)
        self.con.execute(
            f"DELETE FROM {self.table} USING latest_good AS later "
            f"WHERE {matches} AND {self.table}.{extracted_at} < later.__latest"
        )

    def _withdraw_replaced_copies(self) -> None:
        """Apply re-deliveries (the `copies` of `_find_copies`): a later copy of a file replaces the earlier
        copy's rows.

        Runs after `_keep_current_versions`, so the good rows left are each key's current version: one that a
        later copy of its own file no longer holds is withdrawn, and the key with it (an earlier version of
        the key from another file does not come back, as in an incremental run it could not). The bad rows
        of an earlier copy are dropped too: they were quarantined when that copy was staged, and the later
        copy's bad rows (same file and record) take their place."""
        origin, extracted_at = quote_identifier(ORIGIN_COLUMN), quote_identifier(EXTRACTED_AT_COLUMN)
        key = [quote_identifier(name) for name in self.entity.primary_key]
        later_copy = self._later_copy()
        if key:  # first, while every later copy still has all its rows to be looked up
            same_key = " AND ".join(f"kept.{name} = {self.table}.{name}" for name in key)
            self.con.execute(
                f"DELETE FROM {self.table} WHERE EXISTS ({later_copy} AND NOT EXISTS (SELECT 1 FROM "
                f"{self.table} AS kept WHERE kept.{origin} = later.{origin} AND kept.{extracted_at} = "
                f"later.{extracted_at} AND {same_key}))"
            )
        # What is left of an earlier copy: its bad rows, and (without a key to follow) all of its rows.
        violations = quote_identifier(VIOLATIONS_COLUMN)
        unkeyed = "" if not key else f"{violations} IS NOT NULL AND "
        self.con.execute(f"DELETE FROM {self.table} WHERE {unkeyed}EXISTS ({later_copy})")

    def _run_check(self, name: str, function: Callable[[Any], Any]) -> None:
        """Rows whose (non-null) value of `name` the custom check rejects, into `custom_failures`."""
        from platform_assets.quality.pandera_schemas import apply_check, to_pandas

        column = quote_identifier(name)
        label = rules.rule_label(name, rules.CHECK)
        reader = self.con.cursor()  # the rejections go through self.con: it alone sees its TEMP tables
        try:
            batches = reader.sql(
                f"SELECT rowid AS {_ROW}, {column} FROM {self.table} WHERE {column} IS NOT NULL"
            ).to_arrow_reader(self.batch_rows)
            for batch in batches:
                frame = to_pandas(batch)
                valid = apply_check(function, frame[name])
                rejected = pa.table(
                    {
                        _ROW: pa.array(frame.loc[~valid.to_numpy(), _ROW].to_numpy(), pa.int64()),
                        "violation": pa.array([label] * int((~valid).sum()), pa.string()),
                    }
                )
                if rejected.num_rows:
                    self.con.register("__rejected", rejected)
                    self.con.execute("INSERT INTO custom_failures SELECT * FROM __rejected")
                    self.con.unregister("__rejected")
        finally:
            reader.close()

    def summary(self, exempt: frozenset[str] = frozenset()) -> SplitSummary:
        """Counts of all rows, bad rows and failures per rule; rows whose every broken rule is in `exempt`
        (rule labels, e.g. the type rule of a column quarantined for schema drift) are `drifted`."""
        violations = quote_identifier(VIOLATIONS_COLUMN)
        labels = "[" + ", ".join(sql_string(label) for label in sorted(exempt)) + "]::VARCHAR[]"
        ((total, bad, drifted),) = self.con.execute(
            f"SELECT count(*), count({violations}), "
            f"count(*) FILTER (WHERE list_has_all({labels}, {violations})) FROM {self.table}"
        ).fetchall()
        by_rule = self.con.execute(
            f"SELECT v, count(*) FROM (SELECT unnest({violations}) AS v FROM {self.table}) "
            f"GROUP BY v ORDER BY v"
        ).fetchall()
        deliveries = self.con.execute(
            f"SELECT delivery, sum(n), coalesce(sum(n) FILTER (WHERE violations IS NOT NULL AND NOT "
            f"list_has_all({labels}, violations)), 0) AS bad FROM delivered GROUP BY delivery "
            f"HAVING bad > 0 ORDER BY bad / sum(n) DESC, delivery"
        ).fetchall()
        return SplitSummary(
            total,
            bad,
            Counter({rule: count for rule, count in by_rule}),
            drifted,
            tuple(DeliveryShare(*share) for share in deliveries),
        )

    def cast_error_values(self, among: Collection[str]) -> list[str]:
        """The values of `among` that this run's bad rows hold as cast errors (`_cast_errors`,
        `column=value`): for a message about the rows set aside that names what did not parse (e.g. a null
        marker the entity does not declare)."""
        if not among:
            return []
        errors = quote_identifier(CAST_ERRORS_COLUMN)
        bad = f"{errors} IS NOT NULL AND {quote_identifier(VIOLATIONS_COLUMN)} IS NOT NULL"
        listed = ", ".join(sql_string(value) for value in among)
        rows = self.con.execute(
            f"SELECT DISTINCT value FROM (SELECT substr(e, strpos(e, '=') + 1) AS value FROM (SELECT "
            f"unnest(string_split({errors}, '; ')) AS e FROM {self.table} WHERE {bad})) "
            f"WHERE value IN ({listed}) ORDER BY value"
        ).fetchall()
        return [value for (value,) in rows]

    def quarantine_rows(self, asset_key: str, run_id: str) -> pa.RecordBatchReader:
        """One row per broken rule of each bad row, shaped as `ops.quarantine`: written to a Parquet file in
        the spill directory now, read from it (and the file deleted) whenever the reader is consumed, so
        that the staging database, which may be the warehouse's file, can be closed for their load."""
        row = ", ".join(
            f"{sql_string(name)}, {quote_identifier(name)}"
            for name in [*self.entity.columns, *_LINEAGE_IN_JSON]
        )
        sql = (
            f"SELECT {sql_string(asset_key)} AS asset_key, "
            f"concat({quote_identifier(ORIGIN_COLUMN)}, '#', {quote_identifier(RECORD_COLUMN)}) AS row_key, "
            f"split_part(v, ': ', 2) AS rule, split_part(v, ': ', 1) AS {quote_identifier('column')}, "
            f"{sql_string(run_id)} AS run_id, json_object({row})::VARCHAR AS row_json, "
            f"now()::TIMESTAMP AS quarantined_at, {self._key_json()} AS key_json, "
            f"{sql_string(HELD)} AS status, NULL::TIMESTAMP AS resolved_at "
            f"FROM (SELECT *, unnest({quote_identifier(VIOLATIONS_COLUMN)}) AS v FROM {self.table}) AS broken"
        )
        spilled = self.spill_dir / f"quarantine-{self.name}.parquet"
        self.con.execute(f"COPY ({sql}) TO {sql_string(str(spilled))} (FORMAT parquet)")
        parquet = pq.ParquetFile(spilled)
        batches = parquet.iter_batches(self.batch_rows)
        return pa.RecordBatchReader.from_batches(parquet.schema_arrow, _deleting(batches, spilled))

    def _key_json(self) -> str:
        """A row's primary key as JSON text, in one rendering for every run: how a quarantined row finds the
        later versions of its key (`resolved`)."""
        if not self.entity.primary_key:
            return "NULL::VARCHAR"
        pairs = ", ".join(f"{sql_string(name)}, {quote_identifier(name)}" for name in self.entity.primary_key)
        return f"json_object({pairs})::VARCHAR"

    def resolved(self, held: pa.Table) -> pa.Table:
        """Of `held` (quarantine rows of earlier runs still held back, `QUARANTINE_ARROW`), those this run's
        good rows resolve, with their new status: `released` when the very landed row (file, record and
        extraction) is staged now, `superseded` when a later version of its key is."""
        if not held.num_rows:
            return held
        origin, record = quote_identifier(ORIGIN_COLUMN), quote_identifier(RECORD_COLUMN)
        extracted_at = quote_identifier(EXTRACTED_AT_COLUMN)
        good = (
            f"SELECT {self._key_json()} AS key_json, concat({origin}, '#', {record}) AS row_key, "
            f"{extracted_at} AS extracted_at FROM {self.table} "
            f"WHERE {quote_identifier(VIOLATIONS_COLUMN)} IS NULL"
        )
        held_at = "CAST(json_extract_string(h.row_json, '$._extracted_at') AS TIMESTAMPTZ)"
        status = (
            f"CASE WHEN EXISTS (SELECT 1 FROM good WHERE good.row_key = h.row_key "
            f"AND good.extracted_at = {held_at}) THEN {sql_string(RELEASED)} "
            f"WHEN EXISTS (SELECT 1 FROM good WHERE good.key_json = h.key_json "
            f"AND good.extracted_at > {held_at}) THEN {sql_string(SUPERSEDED)} END"
        )
        kept = ", ".join(f"h.{quote_identifier(name)}" for name in QUARANTINE_COLUMNS[:-2])
        self.con.register("__held", held)
        try:
            judged = self.con.sql(
                f"WITH good AS ({good}) SELECT * EXCLUDE (__status), __status AS status, "
                f"now()::TIMESTAMP AS resolved_at FROM (SELECT {kept}, {status} AS __status "
                f"FROM __held AS h) WHERE __status IS NOT NULL"
            ).to_arrow_table()
        finally:
            self.con.unregister("__held")
        return judged.cast(QUARANTINE_ARROW)

    def profile(self, entity: Entity) -> TableProfile:
        """The profile of the rows that will be staged, without running the staging query again."""
        violations = quote_identifier(VIOLATIONS_COLUMN)
        good = f"SELECT * EXCLUDE ({violations}) FROM {self.table} WHERE {violations} IS NULL"
        (row,) = self.con.sql(profile_sql(good, entity)).to_arrow_table().to_pylist()
        return read_profile(row, entity)

    def staged_rows(self) -> DuckDBFileRows:
        """The good rows, without `_violations`: the database is closed and the table handed over, to be
        kept in place by a DuckDB warehouse or streamed as Arrow batches to any other, then removed."""
        with contextlib.suppress(duckdb.Error):
            self.con.close()
        violations = quote_identifier(VIOLATIONS_COLUMN)
        return DuckDBFileRows(
            self.database,
            self.schema,
            self.name,
            where=f"{violations} IS NULL",
            exclude=[VIOLATIONS_COLUMN],
            batch_rows=self.batch_rows,
        )

    def close(self) -> None:
        """Close the database and remove what this run built (a failed step leaves nothing behind)."""
        with contextlib.suppress(duckdb.Error):
            self.con.close()
        self.database.discard(self.table)


_LINEAGE_IN_JSON = (CAST_ERRORS_COLUMN, ORIGIN_COLUMN, RECORD_COLUMN, SOURCE_COLUMN, EXTRACTED_AT_COLUMN)


def _merge_custom_failures(table: str) -> str:
    """The custom checks' rejections added to the rejected rows' `_violations` (NULL = a good row)."""
    violations = quote_identifier(VIOLATIONS_COLUMN)
    return (
        f"UPDATE {table} SET {violations} = "
        f"list_concat(coalesce({table}.{violations}, []::VARCHAR[]), c.found) "
        f"FROM (SELECT {_ROW}, list(violation ORDER BY violation) AS found FROM custom_failures "
        f"GROUP BY {_ROW}) AS c WHERE {table}.rowid = c.{_ROW}"
    )


def _deleting(batches: Iterator[pa.RecordBatch], path: Path) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    finally:
        path.unlink(missing_ok=True)


def held_rows(warehouse: Warehouse, asset_key: str) -> pa.Table:
    """The quarantine rows of `asset_key` still held back (`QUARANTINE_ARROW`), read before a staging run
    builds its rows: what its good rows may resolve. A table written before statuses lacks their columns:
    its rows are all held."""
    existing = {name for name, _ in warehouse.columns(QUARANTINE_SCHEMA, QUARANTINE_TABLE)}
    if not existing:
        return QUARANTINE_ARROW.empty_table()
    quote = warehouse.quote
    selected = ", ".join(quote(name) if name in existing else "NULL" for name in QUARANTINE_COLUMNS)
    status = quote("status")
    held = f" AND ({status} IS NULL OR {status} = {sql_string(HELD)})" if "status" in existing else ""
    rows = warehouse.query(
        f"SELECT {selected} FROM {warehouse.table_ref(QUARANTINE_SCHEMA, QUARANTINE_TABLE)} "
        f"WHERE {quote('asset_key')} = {sql_string(asset_key)}{held}"
    )
    return pa.Table.from_pylist(
        [dict(zip(QUARANTINE_COLUMNS, row, strict=True)) for row in rows], schema=QUARANTINE_ARROW
    )


def record_resolved(warehouse: Warehouse, resolved: pa.Table) -> dict[str, int]:
    """Upsert the quarantine rows a staging run resolved (`StagingSplit.resolved`) with their new status,
    once the staged table holds what resolves them; how many of each status."""
    if resolved.num_rows:
        warehouse.load(
            QUARANTINE_SCHEMA,
            QUARANTINE_TABLE,
            resolved.to_batches(),
            mode="upsert",
            primary_key=QUARANTINE_KEY,
        )
    counts = Counter(resolved.column("status").to_pylist())
    return {status: counts[status] for status in (SUPERSEDED, RELEASED)}


def over_threshold_message(
    where: str, table: str, summary: SplitSummary, refused: DeliveryShare, max_bad_fraction: float
) -> str:
    """Why the staging step refuses the `refused` delivery (`SplitSummary.refused`), and what to do."""
    rules_text = ", ".join(f"{rule} {count}" for rule, count in summary.by_rule.most_common())
    return (
        f"{where}: {refused.bad} of {refused.rows} rows ({refused.fraction:.1%}) of one delivery "
        f"({refused.delivery}) break error-severity rules, more than max_bad_fraction {max_bad_fraction:.1%} "
        f"allows (it bounds each delivery; a single bad row is always quarantined). Failures per rule in "
        f"this run: {rules_text}. "
        f"Nothing was written (neither {table} nor {QUARANTINE_SCHEMA}.{QUARANTINE_TABLE}). Fix the "
        f"delivery at the source (the rows are in the landed files), or, if this share of bad rows is "
        f"acceptable, raise `max_bad_fraction` of {where} in the catalog, or lower the rules to "
        f"`severity: warn`."
    )
