"""Delivered files landed as the bytes delivered, and the one DuckDB scan that reads them back.

A text delivery (CSV) is not parsed when it lands: its bytes are copied as a stream, hashed while copied,
compressed with zstd when they were not compressed (kept as they are when gzip or zstd, which DuckDB reads
natively), and renamed into place like every landed part. Staging then parses it once, in DuckDB, with the
reader function and options the landing recorded (`read_csv(..., delim = ';')`): those are DuckDB's own
options, so a new parsing option is a catalog setting passed through, not code. Parsing once matters: the
landing used to parse a CSV and rewrite it as Parquet, which cost what DuckDB needs for the whole load.

The lineage every landed row carries (`_file`, `_record`, `_source`, `_extracted_at`, `_run_id`) is the same
for a whole copy but `_record`, so it is kept beside the copy in a small sidecar (`<copy>.lineage.json`)
and added by the scan as constants; `_record` is numbered by the scan. A copy's sidecar is moved into
place before the copy, so a committed copy always has one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from resources.warehouses.duckdb_warehouse import quote_identifier

SIDECAR_SUFFIX = ".lineage.json"
Renaming = Callable[[Sequence[str]], Mapping[str, str]]
"""Delivered column names -> the staged name of each (an entity's `file.normalize_headers`); raises
ValueError when two would take one name."""
_TEXT_COPY_LINEAGE = (
    pa.field("_record", pa.int64()),
    pa.field("_file", pa.string()),
    pa.field("_source", pa.string()),
    pa.field("_extracted_at", pa.timestamp("us", tz="UTC")),
    pa.field("_run_id", pa.string()),
)
"""The lineage columns a text copy's scan adds (`_copy_scan`), in its order."""
LINEAGE_NAMES = frozenset({"_file", "_record", "_source", "_extracted_at", "_run_id", "_page"})
"""Columns the landing adds to delivered ones (`_page`: an API page's number): never renamed."""
COPY_CHUNK_BYTES = 1 << 20
ZSTD_LEVEL = 1
"""1M rows of the benchmark's CSV (100 MB, hashed too) copy in 0.36-0.41 s into 25 MB at level 1, 0.58-0.65 s
into 26 MB at zstd's default 3 (DuckDB reads either as fast); gzip, from pyarrow, took 17 s."""
_LINEAGE_TIMESTAMPS = frozenset({"_extracted_at"})
"""The landing's own timestamp column: not a delivered one."""
_ANY_VALUE = "_any_value"
PARQUET_READER = "read_parquet"
_ROW_NUMBER = "file_row_number"
PARSE_FILES_PER_SCAN = 1000
"""Copies parsed by one `read_csv` scan (`parse_copies`): the reader holds a state per file it is given,
and 30,000 one-row copies in one scan ran out of staging's 256 MB; in scans of 1,000 they parse in order
into the same table."""
_COPY_PATH = "__copy_path"
"""The column `parse_copies` records each row's copy in (DuckDB's `filename` option)."""
"""The column `read_parquet(..., file_row_number = true)` adds: the row's 0-based position in the file."""


@dataclass(frozen=True)
class DeliveredCopy:
    """What the sidecar of a landed copy says: how DuckDB reads it, and its rows' lineage."""

    reader: str
    """The DuckDB table function that parses the copy (`read_csv`)."""
    options: dict[str, Any]
    """Its named parameters, as DuckDB spells them (`delim`, `quote`, `header`, `names`...)."""
    file: str
    """The delivered file's path relative to its store's root: `_file` of every row."""
    source: str
    extracted_at: str
    """ISO 8601, with its time zone."""
    run_id: str
    records_after: int = 0
    """Added to the scan's record numbers: 1 when the first record is a header, so `_record` is the
    record's number counting the header, which is the line where it starts unless a value before it spans
    lines or an empty line precedes it (DuckDB skips those; records it sets aside are counted back in by
    staging). DuckDB numbers the records it rejects the same way."""

    def extraction_time(self) -> datetime:
        return datetime.fromisoformat(self.extracted_at)


def sidecar_of(copy: Path) -> Path:
    return copy.with_name(copy.name + SIDECAR_SUFFIX)


def is_sidecar(path: Path) -> bool:
    return path.name.endswith(SIDECAR_SUFFIX)


@functools.lru_cache(maxsize=4096)
def delivered_copy(landed: Path) -> DeliveredCopy | None:
    """The sidecar of a landed copy; None for a landed Parquet part (its lineage is in its columns). Cached:
    a landed file is never rewritten (a changed delivery lands under a new name)."""
    sidecar = sidecar_of(landed)
    if not sidecar.exists():
        return None
    return DeliveredCopy(**json.loads(sidecar.read_text()))


def write_sidecar(copy: Path, described: DeliveredCopy) -> None:
    """Keys in their given order: a copy's `columns` are in the order of its fields."""
    atomic_write_bytes(sidecar_of(copy), json.dumps(asdict(described)).encode())


def copy_bytes(raw: BinaryIO, target: Path, *, compress: bool) -> str:
    """Stream `raw` into `target` through a temporary file, zstd-compressed when `compress`, fsynced and
    renamed; the `sha256:<hex>` of the bytes read (what `FileStore.content_hash` computes)."""
    temporary = target.with_name(f".{target.name}.tmp")
    digest = hashlib.sha256()
    try:
        with open(temporary, "wb") as out:
            sink: BinaryIO = out
            if compress:
                sink = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(out, closefd=False)
            while chunk := raw.read(COPY_CHUNK_BYTES):
                digest.update(chunk)
                sink.write(chunk)
            if sink is not out:
                sink.close()
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return f"sha256:{digest.hexdigest()}"


def landed_relation(
    paths: Sequence[Path],
    *,
    parsed: bool = False,
    headers: Renaming | None = None,
    naive_timestamps_as_text: bool = False,
) -> str:
    """A relation (SQL, for a FROM clause) of the rows of landed files with their lineage columns: landed
    Parquet parts in one `read_parquet`, each copy in its own scan, all by column name. `parsed`: the text
    copies are read from the tables `parse_copies` filled on the connection the relation is used on.

    `headers` (the entity's `file.normalize_headers`): each file's delivered columns under their normalized
    names, so files that spell a column differently (`Order ID`, `order id`) stage it as one (each part is
    then its own scan); a landed file keeps what was delivered.

    `naive_timestamps_as_text`: every Parquet file's timestamp columns without a zone are read as their
    text (`2025-06-01 10:00:00`). DuckDB unifies a column that is naive in one file and zoned in another
    as TIMESTAMPTZ, taking the naive values as local time of the session's TimeZone: staging, which reads
    naive values in the column's declared zone, could no longer tell them apart. As text they stay naive,
    and the zoned values of the other files become text with their offset, so each reads exactly."""
    parts = [path for path in paths if delivered_copy(path) is None]
    grouped = _copy_groups(paths) if parsed else []
    in_groups = {copy for copies in grouped for copy in copies}
    scans = [
        _naive_as_text(_copy_scan(path, headers), [path], naive_timestamps_as_text, headers)
        for path in paths
        if path not in set(parts) and path not in in_groups
    ]
    scans += [_parsed_scan(copies, headers) for copies in grouped]
    part_groups: dict[tuple[str, ...], list[Path]] = {}
    for path in parts:
        naive = tuple(_naive_timestamps(path)) if naive_timestamps_as_text else ()
        part_groups.setdefault((*naive, str(path)) if headers is not None else naive, []).append(path)
    for group in reversed(part_groups.values()):
        files = ", ".join(_string(str(path)) for path in group)
        scan = f"SELECT *{_renaming(group[0], headers)} FROM read_parquet([{files}], union_by_name = true)"
        scans.insert(0, _naive_as_text(scan, group, naive_timestamps_as_text, headers))
    return "(" + " UNION ALL BY NAME ".join(f"({scan})" for scan in scans) + ")"


def timestamp_zones(landed: Path) -> dict[str, str | None]:
    """The timestamp columns of a landed Parquet file (a part, or a delivered Parquet copy), lineage
    excluded, with the zone its footer gives them (None: naive); empty for a text copy. Only the footer
    knows the zone a file was written with: DuckDB reads every zoned column as a TIMESTAMPTZ shown in the
    session's zone."""
    described = delivered_copy(landed)
    if described is not None and described.reader != PARQUET_READER:
        return {}
    return {
        field.name: field.type.tz
        for field in pq.read_schema(landed)
        if pa.types.is_timestamp(field.type) and field.name not in _LINEAGE_TIMESTAMPS
    }


def _naive_timestamps(landed: Path) -> list[str]:
    return [name for name, zone in timestamp_zones(landed).items() if zone is None]


def _naive_as_text(scan: str, files: Sequence[Path], enabled: bool, headers: Renaming | None) -> str:
    """`scan` of `files` (alike: one copy, or parts with the same naive columns) with their naive
    timestamp columns as text, when `enabled` (`landed_relation`); named as `headers` renames them."""
    renamed = staged_names(files[0], headers) if enabled else {}
    naive = [renamed.get(name, name) for name in _naive_timestamps(files[0])] if enabled else []
    if not naive:
        return scan
    replaced = ", ".join(
        f"CAST({quote_identifier(name)} AS VARCHAR) AS {quote_identifier(name)}" for name in naive
    )
    return f"SELECT * REPLACE ({replaced}) FROM ({scan})"


def landed_schema(landed: Path, headers: Renaming | None = None) -> pa.Schema:
    """The columns of a landed file, lineage included (the delivered ones renamed by `headers`): a text
    copy's from its sidecar (every column text, as its scan reads it: no file opened, which at thousands
    of landed copies was most of a staging run), a Parquet file's from its footer, a Parquet copy's from
    DuckDB (its scan adds the lineage)."""
    described = delivered_copy(landed)
    renamed = staged_names(landed, headers)
    if described is None:
        schema = pq.read_schema(landed)
        return pa.schema([column.with_name(renamed.get(column.name, column.name)) for column in schema])
    if described.reader != PARQUET_READER:
        columns = [pa.field(renamed.get(name, name), pa.string()) for name in described.options["columns"]]
        return pa.schema([*columns, *_TEXT_COPY_LINEAGE])
    with duckdb.connect(":memory:") as con:
        relation = landed_relation([landed], headers=headers)
        return con.sql(f"SELECT * FROM {relation} LIMIT 0").to_arrow_table().schema


def staged_names(landed: Path, headers: Renaming | None) -> dict[str, str]:
    """Delivered -> staged name of the columns of a landed file that `headers` renames (empty: none)."""
    if headers is None:
        return {}
    delivered = [name for name in _delivered_columns(landed) if name not in LINEAGE_NAMES]
    return {name: new for name, new in headers(delivered).items() if name != new}


def _delivered_columns(landed: Path) -> list[str]:
    """The names of a landed file's columns as delivered, lineage included: a CSV copy's from its sidecar
    (the names it is read with), a Parquet copy's or part's from its footer."""
    described = delivered_copy(landed)
    if described is not None and described.reader != PARQUET_READER:
        return list(described.options["columns"])
    return pq.read_schema(landed).names


def _renaming(landed: Path, headers: Renaming | None) -> str:
    """The ` RENAME (...)` of a `SELECT *` over a landed file's columns under `headers` (empty: none to
    rename). Two columns that would take one name raise ValueError, naming the delivered file."""
    try:
        renamed = staged_names(landed, headers)
    except ValueError as exc:
        described = delivered_copy(landed)
        raise ValueError(f"{described.file if described else landed} {exc}") from None
    pairs = ", ".join(f"{quote_identifier(name)} AS {quote_identifier(new)}" for name, new in renamed.items())
    return f" RENAME ({pairs})" if pairs else ""


def landed_rows(landed: Path) -> int | None:
    """The rows of a landed file from its Parquet footer; None for a text copy, whose records are counted
    when staging parses it."""
    described = delivered_copy(landed)
    if described is not None and described.reader != PARQUET_READER:
        return None
    return pq.read_metadata(landed).num_rows


def read_landed(paths: Sequence[Path]) -> pa.Table:
    """Every row of landed files, lineage included, as staging reads them (for inspection and tests)."""
    with duckdb.connect(":memory:") as con:
        return con.sql(f"SELECT * FROM {landed_relation(paths)}").to_arrow_table()


def rejected_records(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The malformed records (`file`, `line`, `error`, `text`, and the copy's `extracted_at`) the copies
    scanned on `con` with `store_rejects` set aside (`on_malformed: skip`), `file` as delivered; empty when
    none was. `line` is DuckDB's record number, the header counted: what `_record` numbers."""
    try:
        rows = con.execute(
            # One row per record: DuckDB reports a record once per scan of it, and once per missing or
            # surplus field, counting them up ("Found: 1", "Found: 2"... for a record of one field of
            # three): the first missing field's report, or the last surplus one's, counts the record's.
            "WITH errors AS (SELECT s.file_path, e.line, e.error_type, CASE WHEN e.error_type = "
            "'TOO MANY COLUMNS' THEN arg_max(e.error_message, e.column_idx) ELSE arg_min(e.error_message, "
            "e.column_idx) END AS message, any_value(e.csv_line) AS text FROM reject_errors AS e "
            "JOIN reject_scans AS s USING (scan_id, file_id) GROUP BY s.file_path, e.line, e.error_type) "
            "SELECT file_path, line, string_agg(error_type || ': ' || message, '; ' ORDER BY error_type), "
            "any_value(text) FROM errors GROUP BY file_path, line ORDER BY ALL"
        ).fetchall()
    except duckdb.CatalogException:  # no scan stored rejects on this connection
        return []
    records = []
    for path, line, error, text in rows:
        described = delivered_copy(Path(path))
        records.append(
            {
                "file": described.file if described else path,
                "extracted_at": described.extraction_time() if described else None,
                "line": line,
                "error": error,
                "text": text,
            }
        )
    return records


def malformed_copy_message(error: duckdb.Error) -> str | None:
    """What to tell about DuckDB's refusal to parse a copy (a record with the wrong number of fields, text
    not in the declared encoding), naming the delivered file and its line; None for any other error."""
    text = str(error)
    # The record's text ("Original Line: ...") may span lines (a quote left open): what went wrong is the
    # last line before DuckDB's suggestions.
    found = re.search(r"CSV Error on Line: (\d+)\n(.*?)\n+Possible (?:fixes|Solution)", text, re.DOTALL)
    path = re.search(r"^\s*file = (.+)$", text, re.MULTILINE)
    if found is None or path is None:
        return None
    what = found.group(2).rsplit("\n", 1)[-1].rstrip(".")
    described = delivered_copy(Path(path.group(1)))
    delivered = described.file if described else path.group(1)
    return (
        f"{delivered} (landed as {path.group(1)}): line {found.group(1)}: {what}. Fix the file and "
        f"deliver it again, or set `on_malformed: skip` on the entity to set such records aside and stage "
        f"the rest."
    )


def constant_lineage(landed: Path) -> Mapping[str, object] | None:
    """`_file`, `_source`, `_extracted_at` and `_run_id` of every row of a copy; None for a Parquet part."""
    described = delivered_copy(landed)
    if described is None:
        return None
    return {
        "_file": described.file,
        "_source": described.source,
        "_extracted_at": described.extraction_time(),
        "_run_id": described.run_id,
    }


def parse_copies(con: duckdb.DuckDBPyConnection, paths: Sequence[Path]) -> None:
    """Parse the delivered text copies among `paths` once into temporary tables on `con`, which
    `landed_relation(..., parsed=True)` then reads: one table, and one scan, per set of copies read with the
    same options (a delivery's files, usually all of them), so DuckDB parses the files side by side (a zstd
    copy is read by one thread: 10 copies of 1M rows parsed one after the other took 9.6 s, together 5.7 s).

    Why a table: DuckDB's CSV reader has no record number, and numbering rows in the scan (`row_number()
    OVER ()`) runs the whole parse on one thread. A table filled in file order numbers them for free: each
    copy's rows are contiguous, in order, so a record's number is its `rowid` minus its copy's first. File
    order needs `preserve_insertion_order`, which staging's connections drop (it costs their copies twice
    the time): without it a table that spilled was out of order (7.9 of 8 million rows here). The tables
    spill to the connection's temporary directory beyond its memory limit, so memory stays bounded. A
    Parquet copy needs none: its reader numbers its rows."""
    groups = _copy_groups(paths)
    if not groups:
        return
    ((kept,),) = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()
    con.execute("SET preserve_insertion_order = true")
    try:
        for copies in groups:
            table = _parsed_table(copies)
            for start in range(0, len(copies), PARSE_FILES_PER_SCAN):
                reader = _reader(copies[start : start + PARSE_FILES_PER_SCAN], filename=_COPY_PATH)
                fill = f"CREATE OR REPLACE TEMP TABLE {table} AS" if start == 0 else f"INSERT INTO {table}"
                con.execute(f"{fill} SELECT * FROM {reader}")
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if kept else 'false'}")


def drop_parsed_copies(con: duckdb.DuckDBPyConnection, paths: Sequence[Path]) -> None:
    """Free what `parse_copies` filled, once the relation over it has been materialized."""
    for copies in _copy_groups(paths):
        con.execute(f"DROP TABLE IF EXISTS {_parsed_table(copies)}")


def _copy_groups(paths: Sequence[Path]) -> list[tuple[Path, ...]]:
    """The text copies among `paths`, grouped by how they are read (reader and options), in order."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        described = delivered_copy(path)
        if described is not None and described.reader != PARQUET_READER:
            how = json.dumps([described.reader, described.options], sort_keys=True)
            groups.setdefault(how, []).append(path)
    return [tuple(copies) for copies in groups.values()]


def _parsed_table(copies: Sequence[Path]) -> str:
    digest = hashlib.sha256("\n".join(map(str, copies)).encode()).hexdigest()[:16]
    return quote_identifier("__parsed_" + digest)


def _reader(copies: Sequence[Path], **extra: object) -> str:
    """The DuckDB table function call that parses `copies` (read alike) as their sidecar says (and
    `extra`)."""
    described = delivered_copy(copies[0])
    assert described is not None
    options = {**described.options, **extra}
    named = "".join(f", {name} = {_literal(value)}" for name, value in options.items())
    files = "[" + ", ".join(_string(str(copy)) for copy in copies) + "]"
    # The landing's `load_date=` directories are no Hive partitions of the delivery.
    return f"{described.reader}({files}{named}, hive_partitioning = false)"


def _lineage(described: DeliveredCopy) -> str:
    return (
        f"{_string(described.file)} AS _file, {_string(described.source)} AS _source, "
        f"{_string(described.extracted_at)}::TIMESTAMPTZ AS _extracted_at, "
        f"{_string(described.run_id)} AS _run_id"
    )


def _copy_scan(copy: Path, headers: Renaming | None) -> str:
    """One copy's rows with their lineage, read in the scan itself. A Parquet copy's rows are numbered by
    its reader; a text copy's in file order by `row_number() OVER ()` (DuckDB streams it without sorting, on
    one thread: for inspection and the schema registry's counts; staging reads `_parsed_scan`), records
    without any value dropped (a line of delimiters only carries nothing). Delivered columns renamed by
    `headers`."""
    renaming = _renaming(copy, headers)
    described = delivered_copy(copy)
    assert described is not None
    if described.reader == PARQUET_READER:
        row = quote_identifier(_ROW_NUMBER)
        return (
            f"SELECT * EXCLUDE ({row}){renaming}, {row} + 1 AS _record, {_lineage(described)} "
            f"FROM {_reader([copy], file_row_number=True)}"
        )
    return (
        f"SELECT * EXCLUDE ({_ANY_VALUE}){renaming}, {_lineage(described)} FROM ("
        f"SELECT *, row_number() OVER () + {int(described.records_after)} AS _record, "
        f"coalesce(*COLUMNS(*)) AS {quote_identifier(_ANY_VALUE)} FROM {_reader([copy])}) "
        f"WHERE {_ANY_VALUE} IS NOT NULL"
    )


def _parsed_scan(copies: Sequence[Path], headers: Renaming | None) -> str:
    """The rows of copies `parse_copies` parsed together, with their lineage: each copy's from the table's
    rows of its path, numbered from its first `rowid`; records without any value dropped; delivered columns
    renamed by `headers` (copies read alike have the same names)."""
    table = _parsed_table(copies)
    path = quote_identifier(_COPY_PATH)
    lineage = ", ".join(
        f"({_string(str(copy))}, {int(described.records_after) + 1}, {_lineage_values(described)})"
        for copy in copies
        if (described := delivered_copy(copy)) is not None
    )
    any_value = quote_identifier(_ANY_VALUE)
    return (
        f"SELECT parsed.* EXCLUDE ({path}, __row, {any_value}){_renaming(copies[0], headers)}, "
        f"parsed.__row - copies.first_row + copies.first_record AS _record, "
        f"copies.* EXCLUDE ({path}, first_row, first_record) FROM ("
        f"SELECT *, rowid AS __row, coalesce(*COLUMNS(* EXCLUDE ({path}))) AS {any_value} FROM {table}"
        f") AS parsed JOIN ("
        f"SELECT * FROM (VALUES {lineage}) AS lineage({path}, first_record, _file, _source, _extracted_at, "
        f"_run_id) JOIN (SELECT {path}, min(rowid) AS first_row FROM {table} GROUP BY ALL) USING ({path})"
        f") AS copies USING ({path}) WHERE parsed.{any_value} IS NOT NULL"
    )


def _lineage_values(described: DeliveredCopy) -> str:
    return (
        f"{_string(described.file)}, {_string(described.source)}, "
        f"{_string(described.extracted_at)}::TIMESTAMPTZ, {_string(described.run_id)}"
    )


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_string(str(k))}: {_literal(v)}" for k, v in value.items()) + "}"
    return _string(str(value))


def _string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def constant_value(landed: Path, column: str) -> object:
    """The one value `column` has in every row of a landed file (a lineage column: `_extracted_at`, `_file`),
    from a copy's sidecar or a part's Parquet statistics, without reading the rows; None when the file lacks
    the column, has no rows, holds several values, or its statistics do not say."""
    lineage = constant_lineage(landed)
    if lineage is not None:
        return lineage.get(column)
    metadata = pq.read_metadata(landed)
    names = metadata.schema.to_arrow_schema().names
    if column not in names or metadata.num_row_groups == 0:
        return None
    index = names.index(column)
    values = set()
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(index).statistics
        if statistics is None or not statistics.has_min_max:
            return None
        values |= {statistics.min, statistics.max}
    return values.pop() if len(values) == 1 else None
