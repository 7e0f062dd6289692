"""The schema registry of staged entities: the delivered schema of each staging run as logical types,
versioned by fingerprint and recorded in the staged asset's materialization metadata.

**Delivered schema.** Over all landed files of a run (`landed_schema`: a Parquet footer, or DuckDB's
sniffing of a delivered copy's first rows; no data read for typed columns): int*/uint* -> integer,
float*/decimal -> double, bool -> boolean, date -> date, timestamp -> timestamp, string/large_string ->
string (time, binary and anything else -> string). A column typed differently in different files takes
the type that holds both (integer + double -> double, date + timestamp -> timestamp, anything else ->
string). Lineage columns (`_source`, `_file`, ...) are not part of it.

**Text-landed columns.** CSV, JSON and API deliveries land every value as text, so an Arrow `string`
says nothing about the delivery's type. Such a column is typed by what its values parse as, relative
to the type it is *expected* to have (the declared type, else the previous version's type), *delivery by
delivery* (`delivery_key`: a delivered file, or an extraction of a database table or an API), and takes
the type that holds every delivery's: judged over all the rows at once, one all-decimal file among
350,000 integer rows was a 0.3% share, inside the tolerance, and its drift went unseen. Per delivery:
the expected type when its non-null values parse as it *losslessly* (DuckDB's TRY_CAST rounds `1.5` to
the integer 2 and cuts `2024-01-01 10:00` to a date, so integer also requires an integral value, and date
a value without time of day), else the first of the expected type's widenings (integer -> double ->
string, date -> timestamp -> string, others -> string) they parse as. A share of unparseable values up to
`tolerance` (pass the entity's `max_bad_fraction`) of a delivery does not change the type: a few bad
values are the rules' business (cast errors, quarantine), not schema drift. Nor does one value more that
parses as none of the typed candidates (the expected type and its widenings but string): the column
takes the first of them that its other values parse as (within `tolerance`), and that value is a bad row.
A single value cannot tell a type change from a typo, and in a delivery of three rows one typo is 33%: the
column would turn string and hold the entity behind a drift proposal. A real type change brings more text
values, and the first delivery with two of them (beyond the share) drifts to string as before. A value
that parses as a widening still widens (a lone `1.5` makes an integer column double): it does say what
the type became. A text column with no
expected type (a new, undeclared column) is `string`: guessing a type from one delivery's values would
turn the next delivery's first non-numeric value into a type change. A column without a single non-null
value keeps its expected type. Values are read as staging reads them (`formats`: the entity's declared null
markers are missing values, and numbers and dates are read with its separators and strptime formats:
`without_null_markers`, `parses_losslessly`), so a drift decision and the staged values agree.

**Delivered names.** Under `file.normalize_headers` a column is staged under a name its delivery did
not give it (`Order ID` -> `order_id`); each staging run records which (`schema/delivered_names`), and
`ops/schema_registry` keeps it with the version. The names are not part of the fingerprint: the staged
schema is the same whatever the delivery's spelling.

**Time zones.** A timestamp column typed with a zone (Parquet `timestamp[ms, tz=UTC]`, a database's
timestamptz, which extraction lands as `tz=UTC`) has that zone in the delivered schema, a naive one none
(`delivered_time_zones`: the zone of the column's latest delivery, from the Parquet footers, since DuckDB
reads every zone as TIMESTAMPTZ in the session's). A column that turns zoned, naive, or changes zone
changes the fingerprint, and the diff says so (`timezone_changed: {col: [null, "UTC"]}`). It is recorded
and logged, not drift under `schema_evolution`: staging converts every value to the exact UTC instant
either way (a zoned one exactly, a naive one from the column's declared `timezone`), so no reader sees
a different type and no row is lost; what may need a look is a naive delivery of a column that used to
carry its zone, whose declared `timezone` is then what places it. Text carries no zone in its schema: an
offset in a text value is read per value. An entity whose timestamps never carry a zone fingerprints
and records exactly what it did before zones were recorded.

**Versions.** The fingerprint is the sha256 of the sorted `name:type` lines (`name:timestamp@zone` for a
zoned column); a delivery with the fingerprint of the previous version IS that version (same number, same
`recorded_at`); any other gets the next number. Versions live in the staged asset's materialization
metadata (`schema/*`), read back with `previous_version(instance, asset_key)`; the `ops/schema_registry`
asset collects them into a table.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa

from platform_assets.catalog.model import PLAIN_TEXT, ColumnType, TextFormat
from resources.landing.delivered import (
    Renaming,
    constant_value,
    landed_relation,
    landed_schema,
    staged_names,
    timestamp_zones,
)
from resources.landing.query import DEFAULT_MEMORY_LIMIT
from resources.landing.zone import EXTRACTED_AT_COLUMN, RUN_ID_COLUMN, SOURCE_COLUMN

FILE_COLUMN = "_file"
"""The delivered file a landed row came from (file sources only)."""
LINEAGE_COLUMNS = frozenset(
    {SOURCE_COLUMN, EXTRACTED_AT_COLUMN, RUN_ID_COLUMN, FILE_COLUMN, "_record", "_page"}
)
"""Columns the landing adds to every row: not part of a delivery's schema."""

VERSION_METADATA = "schema/version"
FINGERPRINT_METADATA = "schema/fingerprint"
COLUMNS_METADATA = "schema/columns"
TIME_ZONES_METADATA = "schema/timezones"
DIFF_METADATA = "schema/diff"
RECORDED_AT_METADATA = "schema/recorded_at"
DELIVERED_NAMES_METADATA = "schema/delivered_names"

WIDENINGS: dict[ColumnType, tuple[ColumnType, ...]] = {
    ColumnType.INTEGER: (ColumnType.DOUBLE, ColumnType.STRING),
    ColumnType.DATE: (ColumnType.TIMESTAMP, ColumnType.STRING),
    ColumnType.DOUBLE: (ColumnType.STRING,),
    ColumnType.TIMESTAMP: (ColumnType.STRING,),
    ColumnType.BOOLEAN: (ColumnType.STRING,),
    ColumnType.STRING: (),
}
"""The types each type widens to, narrowest first: every value of the type is a value of these."""

_DUCKDB = {
    ColumnType.INTEGER: "BIGINT",
    ColumnType.DOUBLE: "DOUBLE",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.DATE: "DATE",
    ColumnType.TIMESTAMP: "TIMESTAMP",
}


def widens_to(narrow: ColumnType, wide: ColumnType) -> bool:
    """Whether every value of `narrow` is a value of `wide` (equal types included)."""
    return narrow == wide or wide in WIDENINGS[narrow]


def common_type(a: ColumnType, b: ColumnType) -> ColumnType:
    """The narrowest type holding the values of both."""
    if widens_to(a, b):
        return b
    if widens_to(b, a):
        return a
    return ColumnType.STRING


def logical_type(arrow_type: pa.DataType) -> ColumnType | None:
    """The logical type of an Arrow type; None for the null type (a column without any value)."""
    t = pa.types
    if t.is_dictionary(arrow_type):
        return logical_type(arrow_type.value_type)
    if t.is_null(arrow_type):
        return None
    if t.is_integer(arrow_type):
        return ColumnType.INTEGER
    if t.is_floating(arrow_type) or t.is_decimal(arrow_type):
        return ColumnType.DOUBLE
    if t.is_boolean(arrow_type):
        return ColumnType.BOOLEAN
    if t.is_date(arrow_type):
        return ColumnType.DATE
    if t.is_timestamp(arrow_type):
        return ColumnType.TIMESTAMP
    return ColumnType.STRING


def _is_text(arrow_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(arrow_type):
        return _is_text(arrow_type.value_type)
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def delivery_key(landed_columns: Collection[str], *, file_column: str = FILE_COLUMN) -> list[str]:
    """The columns that tell one delivery from another among rows with `landed_columns`: a file source's
    delivery is one file in one extraction (`file_column`, named `_origin` once staged, and
    `_extracted_at`); a database table's or an API's is one extraction. Drift and the share of bad rows
    are judged per delivery, so that history does not dilute what a new delivery did."""
    if FILE_COLUMN in landed_columns:
        return [file_column, EXTRACTED_AT_COLUMN]
    return [EXTRACTED_AT_COLUMN]


def merged_schema(before: Mapping[str, ColumnType], after: Mapping[str, ColumnType]) -> dict[str, ColumnType]:
    """The schema of the deliveries of `before` and of `after` together: every column of either, a column of
    both with the type holding both. An incremental run's delivered schema is the last version merged with
    its new files', which is what a full run over every file finds (`delivered_schema` over the union)."""
    merged = dict(before)
    for name, kind in after.items():
        merged[name] = common_type(merged[name], kind) if name in merged else kind
    return merged


def delivered_schema(
    landed: Iterable[Path],
    expected: Mapping[str, ColumnType | str] | None = None,
    *,
    tolerance: float = 0.0,
    parse_text: bool = True,
    formats: Callable[[str], TextFormat] | None = None,
    headers: Renaming | None = None,
) -> dict[str, ColumnType]:
    """The logical type of every delivered column over all `landed` files (see the module docstring);
    `expected` types text-landed columns, `tolerance` is the share of their non-null values in one
    delivery that may fail to parse without changing the type. Empty when no file was landed. Without
    `parse_text`, no data is read: text columns are taken to parse as their expected type, for a caller
    that verifies it while it reads them anyway (`text_types_hold`). `formats` says how each text column's
    values are read (null markers, separators, strptime formats: `Entity.text_format`, as staging reads
    them), DuckDB's plain casts without it. `headers`: the entity's `file.normalize_headers`, under whose
    names columns are typed."""
    files = [Path(path) for path in landed]
    expected_types = {name: ColumnType(value) for name, value in (expected or {}).items()}
    typed: dict[str, ColumnType | None] = {}
    text: set[str] = set()
    landed_columns: set[str] = set()
    for path in files:
        for arrow_field in landed_schema(path, headers):
            name = arrow_field.name
            landed_columns.add(name)
            if name in LINEAGE_COLUMNS:
                continue
            if _is_text(arrow_field.type):
                text.add(name)
                typed.setdefault(name, None)
                continue
            kind = logical_type(arrow_field.type)
            current = typed.get(name)
            typed[name] = kind if current is None else current if kind is None else common_type(current, kind)
    parsed = (
        _parse_text_columns(
            files, delivery_key(landed_columns), sorted(text), expected_types, tolerance, formats, headers
        )
        if text and parse_text
        else {}
    )
    result: dict[str, ColumnType] = {}
    for name, kind in typed.items():
        text_kind = parsed.get(name)
        if text_kind is not None:
            kind = text_kind if kind is None else common_type(kind, text_kind)
        result[name] = kind if kind is not None else expected_types.get(name, ColumnType.STRING)
    return result


def delivered_time_zones(landed: Iterable[Path], headers: Renaming | None = None) -> dict[str, str | None]:
    """The zone of each timestamp column typed in any of the `landed` files (None: naive), as its latest
    delivery (extraction time, then path) has it: what the column is delivered as now, named as `headers`
    stages it. Footers only."""
    typed = [(path, _staged_zones(Path(path), headers)) for path in landed]
    ordered = sorted(
        ((path, zones) for path, zones in typed if zones),
        key=lambda item: (_extraction_order(item[0]), str(item[0])),
    )
    delivered: dict[str, str | None] = {}
    for _, zones in ordered:
        delivered.update(zones)
    return delivered


def merged_time_zones(before: Mapping[str, str], after: Mapping[str, str | None]) -> dict[str, str]:
    """The zoned columns of the deliveries of `before` (a version's) and then `after`
    (`delivered_time_zones` of newer files): the newer files say what each column they type is now."""
    merged: dict[str, str | None] = {**before, **after}
    return {name: zone for name, zone in merged.items() if zone is not None}


def _staged_zones(path: Path, headers: Renaming | None) -> dict[str, str | None]:
    renamed = staged_names(path, headers)
    return {renamed.get(name, name): zone for name, zone in timestamp_zones(path).items()}


def _extraction_order(path: Path) -> str:
    """A sortable form of the file's extraction time ('' when it does not say: first)."""
    extracted = constant_value(path, EXTRACTED_AT_COLUMN)
    return extracted.astimezone(UTC).isoformat() if isinstance(extracted, datetime) else ""


def text_columns(landed: Iterable[Path], headers: Renaming | None = None) -> set[str]:
    """The delivered columns landed as text in any of the files (their schemas only; no data read), named
    as `headers` stages them."""
    return {
        field.name
        for path in landed
        for field in landed_schema(path, headers)
        if field.name not in LINEAGE_COLUMNS and _is_text(field.type)
    }


def text_types_hold(counts: Mapping[str, Iterable[tuple[int, int]]], tolerance: float) -> bool:
    """Whether `delivered_schema` would have typed each column as assumed: `counts` is, per column, the
    (parsed, failed) numbers of its non-null values against its expected type, one pair per delivery.
    These counts cannot tell a lone unparseable value (still the expected type) from a lone widening one
    (`1.5`: double), so a delivery that needs the lone value's allowance is not taken as holding: the
    caller scans it, and `delivered_schema` decides."""
    return all(
        _type_holds(failed, parsed + failed, tolerance)
        for pairs in counts.values()
        for parsed, failed in pairs
    )


def _type_holds(failed: int, present: int, tolerance: float, unparseable: int = 0) -> bool:
    """The rule by which a delivery's text column is of a type: of its `present` non-null values, `failed`
    do not parse as the type, and they are at most `tolerance` of them, not counting one of the
    `unparseable` values (those that parse as none of the column's typed candidates). One value is
    allowed beyond the share because it cannot tell a type change from a typo (module docstring); only
    an unparseable one, since a value that parses as a widening does tell."""
    return failed - min(unparseable, 1) <= tolerance * present


def without_null_markers(raw: str, read: TextFormat) -> str:
    """DuckDB SQL: the text-landed column expression `raw`, NULL where its text is one of the entity's
    `null_values` (`NA`, `\\N`, ...). Staging and the schema registry's parse counting both read text
    columns through it, so a declared marker is a missing value to the rules and to drift alike."""
    if not read.null_values:
        return raw
    markers = ", ".join(_sql_string(value) for value in read.null_values)
    return f"CASE WHEN CAST({raw} AS VARCHAR) IN ({markers}) THEN NULL ELSE {raw} END"


def _number_text(text: str, read: TextFormat) -> str:
    """DuckDB SQL: the VARCHAR `text` of a number written with the locale's separators rewritten as DuckDB's
    cast reads it (`1.234,75` -> `1234.75`), NULL when it is not such a number: a thousands separator
    must group digits by three (`1.23,4` is no number), and a dot that is neither separator is refused
    (with decimal comma, `1.5` is not one and a half)."""
    if not read.locale_numbers:
        return text
    decimal = re.escape(read.decimal_separator)
    digits = r"\d+"
    if read.thousands_separator is not None:
        digits = rf"(\d+|\d{{1,3}}({re.escape(read.thousands_separator)}\d{{3}})+)"
    pattern = rf"[+-]?{digits}({decimal}\d+)?([eE][+-]?\d+)?"
    trimmed = f"trim({text})"
    rewritten = trimmed
    if read.thousands_separator is not None:
        rewritten = f"replace({rewritten}, {_sql_string(read.thousands_separator)}, '')"
    rewritten = f"replace({rewritten}, {_sql_string(read.decimal_separator)}, '.')"
    return f"CASE WHEN regexp_full_match({trimmed}, {_sql_string(pattern)}) THEN {rewritten} END"


def _format_of(kind: ColumnType, read: TextFormat) -> str | None:
    """The strptime format a date column's text is read with (None: DuckDB's ISO cast; timestamps:
    `utc_timestamp`)."""
    return read.date_format if kind == ColumnType.DATE else None


_ZONE_SUFFIX = r"\d:\d\d(:\d\d(\.\d*)?)?\s*([zZ]|[+-]\d\d?(:?\d\d){0,2}|[A-Za-z][A-Za-z0-9_+/-]*)\s*$"
"""A timestamp text that carries its own offset or zone after the time of day: `Z`, `+02`, `+0200`,
`+02:00`, `UTC`, `Europe/Paris` (as DuckDB's TIMESTAMPTZ cast reads them, and renders a TIMESTAMPTZ)."""


def utc_timestamp(text: str, read: TextFormat = PLAIN_TEXT) -> str:
    """DuckDB SQL: the VARCHAR `text` as a naive UTC TIMESTAMP, NULL when it does not parse. Text with an
    offset or zone (`_ZONE_SUFFIX`, or a `timestamp_format` with `%z`/`%Z`) is that exact instant; naive
    text is local time in `read.timezone` (UTC when None), DST included. Independent of the session's
    TimeZone: DuckDB's own `CAST(text AS TIMESTAMP)` drops an offset (`10:00+02:00` becomes 10:00), and a
    TIMESTAMPTZ cast to TIMESTAMP is its wall time in the session's zone, so each conversion here names its
    zone (`timezone(zone, ...)`)."""
    if read.timestamp_format is not None:
        parsed = f"try_strptime({text}, {_sql_string(read.timestamp_format)})"
        if "%z" in read.timestamp_format or "%Z" in read.timestamp_format:
            return f"timezone('UTC', {parsed})"
        return _naive_in_utc(parsed, read.timezone)
    aware = f"timezone('UTC', TRY_CAST({text} AS TIMESTAMPTZ))"
    naive = _naive_in_utc(f"TRY_CAST({text} AS TIMESTAMP)", read.timezone)
    return f"CASE WHEN regexp_matches({text}, {_sql_string(_ZONE_SUFFIX)}) THEN {aware} ELSE {naive} END"


def _naive_in_utc(naive: str, zone: str | None) -> str:
    """DuckDB SQL: the naive TIMESTAMP `naive`, local time in `zone`, as naive UTC."""
    if zone is None or zone == "UTC":
        return naive
    return f"timezone('UTC', timezone({_sql_string(zone)}, {naive}))"


def parses_losslessly(text: str, kind: ColumnType, read: TextFormat = PLAIN_TEXT) -> str:
    """DuckDB SQL: whether the VARCHAR expression `text` parses as `kind` without loss (TRY_CAST alone
    rounds '1.5' to the integer 2 and cuts '2024-01-01 10:00' to a date), read as `read` says (separators,
    strptime formats, time zone)."""
    if kind == ColumnType.STRING:
        return "true"
    if kind == ColumnType.TIMESTAMP:
        return f"({utc_timestamp(text, read)} IS NOT NULL)"
    strptime_format = _format_of(kind, read)
    if strptime_format is not None:
        parsed = f"try_strptime({text}, {_sql_string(strptime_format)})"
        return f"({parsed} IS NOT NULL AND {parsed} = {parsed}::DATE)"
    if kind in (ColumnType.INTEGER, ColumnType.DOUBLE):
        text = _number_text(text, read)
    cast = f"TRY_CAST({text} AS {_DUCKDB[kind]})"
    if kind == ColumnType.INTEGER:
        return f"({cast} IS NOT NULL AND TRY_CAST({text} AS DOUBLE) = {cast})"
    if kind == ColumnType.DATE:
        return f"({cast} IS NOT NULL AND coalesce(TRY_CAST({text} AS TIMESTAMP) = {cast}::TIMESTAMP, true))"
    return f"({cast} IS NOT NULL)"


def strict_cast(raw: str, kind: ColumnType, read: TextFormat = PLAIN_TEXT) -> str:
    """DuckDB SQL: the column expression `raw` (any type) as `kind`, NULL when it does not convert
    without loss. Use it instead of `TRY_CAST(raw AS type)` in staging, so that a widened delivery
    (1.5 into an integer column, a time of day into a date column) is a cast error, not a silent
    rounding. `read`: how a text-landed column's text is read (separators, strptime formats); null
    markers are `without_null_markers`' business, before this. A timestamp is naive UTC, read through its
    text whatever `raw`'s type (`utc_timestamp`): a TIMESTAMPTZ's text carries its offset, a TIMESTAMP's
    is local time in `read.timezone`."""
    if kind == ColumnType.STRING:
        return f"CAST({raw} AS VARCHAR)"
    text = f"CAST({raw} AS VARCHAR)"
    if kind == ColumnType.TIMESTAMP:
        return utc_timestamp(text, read)
    check = parses_losslessly(text, kind, read)
    strptime_format = _format_of(kind, read)
    if strptime_format is not None:
        value = f"try_strptime({text}, {_sql_string(strptime_format)})::{_DUCKDB[kind]}"
    elif kind in (ColumnType.INTEGER, ColumnType.DOUBLE) and read.locale_numbers:
        value = f"TRY_CAST({_number_text(text, read)} AS {_DUCKDB[kind]})"
    else:
        value = f"TRY_CAST({raw} AS {_DUCKDB[kind]})"
    return f"CASE WHEN {check} THEN {value} END"


def _parse_text_columns(
    files: list[Path],
    delivery: list[str],
    names: list[str],
    expected: Mapping[str, ColumnType],
    tolerance: float,
    formats: Callable[[str], TextFormat] | None = None,
    headers: Renaming | None = None,
) -> dict[str, ColumnType | None]:
    """For each text column: the type holding each delivery's (rows grouped by the `delivery` columns),
    which is the first of its expected type and that type's widenings that the delivery's non-null values
    parse as (all but `tolerance`, and one unparseable value: `_type_holds`); string without an expected
    type; None without any value.

    One pass tries each column's expected type only (a delivery mostly keeps its types); a second pass, over
    the columns that failed it in some delivery, tries their widenings, and decides those deliveries on the
    counts of both passes. Trying every candidate at once cost the pass more (10 million rows, 6 typed text
    columns: 1.4 s against 1.23 s, three runs each)."""
    candidates = {
        name: [expected[name], *WIDENINGS[expected[name]]] if name in expected else [ColumnType.STRING]
        for name in names
    }
    read = {name: formats(name) if formats is not None else PLAIN_TEXT for name in names}
    first = _parse_counts(
        files,
        delivery,
        {name: kinds[:1] for name, kinds in candidates.items()},
        read,
        present=True,
        headers=headers,
    )
    result: dict[str, ColumnType | None] = dict.fromkeys(names)
    failed: dict[str, list[ColumnType]] = {}

    def include(name: str, kind: ColumnType) -> None:
        current = result[name]
        result[name] = kind if current is None else common_type(current, kind)

    for counts in first.values():
        for name in names:
            present = counts[(name, None)]
            if present and _parses(counts, name, candidates[name][0], present, tolerance):
                include(name, candidates[name][0])
            elif present:
                failed[name] = candidates[name][1:]
    widened = _parse_counts(files, delivery, failed, read, present=False, headers=headers) if failed else {}
    for group, counts in first.items():
        # The expected type's counts are the first pass's, the widenings' the second's (none when every
        # widening left is string, which needs no count).
        both = {**counts, **widened.get(group, {})}
        for name in failed:
            present = counts[(name, None)]
            if present and not _parses(counts, name, candidates[name][0], present, tolerance):
                include(name, _typed_as(both, name, candidates[name], present, tolerance))
    return result


def _parses(
    counts: Mapping[tuple[str, ColumnType | None], int],
    name: str,
    kind: ColumnType,
    present: int,
    tolerance: float,
) -> bool:
    """Whether all but `tolerance` of the column's `present` non-null values parse as `kind` (no
    allowance for an unparseable value: the first pass cannot tell one from a widening value)."""
    parsed = present if kind == ColumnType.STRING else counts[(name, kind)]
    return _type_holds(present - parsed, present, tolerance)


def _typed_as(
    counts: Mapping[tuple[str, ColumnType | None], int],
    name: str,
    candidates: list[ColumnType],
    present: int,
    tolerance: float,
) -> ColumnType:
    """The first of the typed `candidates` (the expected type and its widenings but string, all counted
    in `counts`) that one delivery's `present` non-null values parse as by `_type_holds`, else string.
    The unparseable values are taken as those short of the largest count: exact when each widening parses
    the values of the types before it (integer -> double; not a date of a declared `date_format` that the
    timestamp reading does not share, where a lone value of the other reading is then a bad value)."""
    typed = [kind for kind in candidates if kind != ColumnType.STRING]
    unparseable = present - max(counts[(name, kind)] for kind in typed)
    holding = (
        kind for kind in typed if _type_holds(present - counts[(name, kind)], present, tolerance, unparseable)
    )
    return next(holding, ColumnType.STRING)


SCAN_FILES_AT_ONCE = 4
"""Landed files counted per query. Each text copy is a scan of its own (its CSV reader's buffers, ~30 MB);
sixty tiny copies in one query ran out of the 256 MB limit (the chaos soak's malformed delivery: every
later staging run of the entity failed). Counts are sums, so file by file groups add up to the same."""


def _parse_counts(
    files: list[Path],
    delivery: list[str],
    kinds: Mapping[str, list[ColumnType]],
    read: Mapping[str, TextFormat],
    *,
    present: bool,
    headers: Renaming | None,
) -> dict[tuple[object, ...], dict[tuple[str, ColumnType | None], int]]:
    """One pass over the files, per delivery (the values of the `delivery` columns): per column, the
    number of its non-null values (key `(name, None)`, when `present`) and of those that parse losslessly
    as each of `kinds` (strings need no count), each column's text `read` as staging reads it. A column
    some files lack (dropped at the source since) counts as null in them: a group of such files alone
    had failed the query on the missing column (the chaos soak's dropped column)."""
    keys = [
        key
        for name, column_kinds in kinds.items()
        for key in ([(name, None)] if present else [])
        + [(name, k) for k in column_kinds if k != ColumnType.STRING]
    ]
    if not keys:
        return {}

    def selects(columns: set[str]) -> list[str]:
        """The counts of `keys`, a column the files lack counted as all null."""
        counted = []
        for name, kind in keys:
            column = _quote(name) if name in columns else "NULL"
            value = without_null_markers(f"CAST({column} AS VARCHAR)", read[name])
            counted.append(
                f"count({value})"
                if kind is None
                else f"count(*) FILTER (WHERE {parses_losslessly(value, kind, read[name])})"
            )
        return counted

    group = ", ".join(f"CAST({_quote(name)} AS VARCHAR)" for name in delivery)
    width = len(delivery)
    totals: dict[tuple[object, ...], dict[tuple[str, ColumnType | None], int]] = {}
    with duckdb.connect(":memory:", config={"memory_limit": DEFAULT_MEMORY_LIMIT}) as con:
        for start in range(0, len(files), SCAN_FILES_AT_ONCE):
            relation = landed_relation(files[start : start + SCAN_FILES_AT_ONCE], headers=headers)
            columns = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
            sql = f"SELECT {group}, {', '.join(selects(columns))} FROM {relation} GROUP BY {group}"
            for row in con.execute(sql).fetchall():
                counts = totals.setdefault(tuple(row[:width]), dict.fromkeys(keys, 0))
                for key, count in zip(keys, row[width:], strict=True):
                    counts[key] += count
    return totals


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class SchemaDiff:
    added: dict[str, str] = field(default_factory=dict)
    """Columns delivered now and not before, with their type."""
    removed: dict[str, str] = field(default_factory=dict)
    """Columns delivered before and not now, with their former type."""
    type_changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Columns whose type changed: (old, new)."""
    timezone_changed: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    """Columns of both schemas whose zone changed: (old, new), None for naive."""

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.type_changed or self.timezone_changed)

    def to_json(self) -> dict[str, object]:
        """The diff as recorded; `timezone_changed` only when a zone changed, so that the diff of an entity
        whose timestamps carry no zone reads as it did before zones were recorded."""
        recorded: dict[str, object] = {
            "added": dict(self.added),
            "removed": dict(self.removed),
            "type_changed": {name: list(change) for name, change in self.type_changed.items()},
        }
        if self.timezone_changed:
            recorded["timezone_changed"] = {
                name: list(change) for name, change in self.timezone_changed.items()
            }
        return recorded


@dataclass(frozen=True)
class SchemaVersion:
    version: int
    fingerprint: str
    columns: dict[str, str]
    """Column name -> logical type (ColumnType value), sorted by name."""
    recorded_at: datetime
    timezones: dict[str, str] = field(default_factory=dict)
    """Column name -> zone of the timestamp columns delivered zoned, sorted by name; naive ones absent."""

    def column_types(self) -> dict[str, ColumnType]:
        return {name: ColumnType(kind) for name, kind in self.columns.items()}


def _as_strings(columns: Mapping[str, ColumnType | str]) -> dict[str, str]:
    return {name: ColumnType(columns[name]).value for name in sorted(columns)}


def _zones_of(columns: Mapping[str, ColumnType | str], timezones: Mapping[str, str] | None) -> dict[str, str]:
    """The zones of `columns`' timestamp columns, sorted (a zone recorded for any other type is moot)."""
    zones = timezones or {}
    return {
        name: zones[name]
        for name in sorted(zones)
        if name in columns and ColumnType(columns[name]) == ColumnType.TIMESTAMP
    }


def fingerprint(columns: Mapping[str, ColumnType | str], timezones: Mapping[str, str] | None = None) -> str:
    """sha256 (hex) of the sorted `name:type` lines, `name:timestamp@zone` for a zoned column: a schema
    without zones has the fingerprint it had before zones were recorded."""
    zones = _zones_of(columns, timezones)
    lines = "\n".join(
        f"{name}:{kind}" + (f"@{zones[name]}" if name in zones else "")
        for name, kind in _as_strings(columns).items()
    )
    return hashlib.sha256(lines.encode()).hexdigest()


def diff(
    previous: SchemaVersion | Mapping[str, ColumnType | str] | None,
    current: Mapping[str, ColumnType | str],
    timezones: Mapping[str, str] | None = None,
) -> SchemaDiff:
    """What changed from `previous` (a version, or columns without zones; None: nothing before) to
    `current`, whose zoned columns are `timezones`."""
    before = _as_strings(previous.columns if isinstance(previous, SchemaVersion) else previous or {})
    after = _as_strings(current)
    zones_before = previous.timezones if isinstance(previous, SchemaVersion) else {}
    zones_after = _zones_of(current, timezones)
    return SchemaDiff(
        added={name: kind for name, kind in after.items() if name not in before},
        removed={name: kind for name, kind in before.items() if name not in after},
        type_changed={
            name: (before[name], kind)
            for name, kind in after.items()
            if name in before and before[name] != kind
        },
        timezone_changed={
            name: (zones_before.get(name), zones_after.get(name))
            for name in after
            if name in before and zones_before.get(name) != zones_after.get(name)
        },
    )


def next_version(
    previous: SchemaVersion | None,
    current: Mapping[str, ColumnType | str],
    timezones: Mapping[str, str] | None = None,
    *,
    now: datetime | None = None,
) -> SchemaVersion:
    """`previous` itself when `current` (with its zoned columns, `timezones`) has its fingerprint, else the
    next version (1 for the first)."""
    print_ = fingerprint(current, timezones)
    if previous is not None and previous.fingerprint == print_:
        return previous
    return SchemaVersion(
        version=previous.version + 1 if previous is not None else 1,
        fingerprint=print_,
        columns=_as_strings(current),
        recorded_at=now or datetime.now(UTC),
        timezones=_zones_of(current, timezones),
    )


def schema_metadata(version: SchemaVersion, changes: SchemaDiff) -> dict[str, dg.MetadataValue]:
    """Materialization metadata of a staging run: the version (an int, plotted by the UI), fingerprint,
    columns, zoned columns (only when there are any), diff against the previous version and when the
    version was first recorded."""
    zones = {TIME_ZONES_METADATA: dg.MetadataValue.json(dict(version.timezones))} if version.timezones else {}
    return {
        VERSION_METADATA: dg.MetadataValue.int(version.version),
        FINGERPRINT_METADATA: dg.MetadataValue.text(version.fingerprint),
        COLUMNS_METADATA: dg.MetadataValue.json(dict(version.columns)),
        **zones,
        DIFF_METADATA: dg.MetadataValue.json(changes.to_json()),
        RECORDED_AT_METADATA: dg.MetadataValue.text(version.recorded_at.isoformat()),
    }


def version_from_metadata(metadata: Mapping[str, object]) -> SchemaVersion | None:
    """The version recorded in a materialization's metadata; None when it holds none."""
    if VERSION_METADATA not in metadata or COLUMNS_METADATA not in metadata:
        return None
    value = lambda key: getattr(metadata[key], "value", metadata[key])  # noqa: E731
    columns = value(COLUMNS_METADATA)
    recorded = value(RECORDED_AT_METADATA) if RECORDED_AT_METADATA in metadata else None
    recorded_print = value(FINGERPRINT_METADATA) if FINGERPRINT_METADATA in metadata else None
    zones = dict(value(TIME_ZONES_METADATA)) if TIME_ZONES_METADATA in metadata else {}
    return SchemaVersion(
        version=int(value(VERSION_METADATA)),
        fingerprint=str(recorded_print) if recorded_print else fingerprint(columns, zones),
        columns=_as_strings(dict(columns)),
        recorded_at=datetime.fromisoformat(recorded) if recorded else datetime.fromtimestamp(0, UTC),
        timezones=_zones_of(columns, zones),
    )


def diff_from_metadata(metadata: Mapping[str, object]) -> dict[str, object]:
    """The recorded diff (JSON), empty when there is none."""
    if DIFF_METADATA not in metadata:
        return {}
    return dict(getattr(metadata[DIFF_METADATA], "value", metadata[DIFF_METADATA]))


def latest_materialization(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey
) -> tuple[dg.AssetMaterialization, str] | None:
    """The asset's latest materialization and the id of its run; None when it has none."""
    event = instance.get_latest_materialization_event(asset_key)
    if event is None or event.asset_materialization is None:
        return None
    return event.asset_materialization, event.run_id


def previous_version(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> SchemaVersion | None:
    """The schema version recorded by the asset's latest materialization (None: none recorded yet)."""
    latest = latest_materialization(instance, asset_key)
    return version_from_metadata(latest[0].metadata) if latest else None


def expected_types(
    declared: Mapping[str, ColumnType], previous: SchemaVersion | None
) -> dict[str, ColumnType]:
    """What text-landed columns are parsed against: the declared type, else the previous version's type
    (undeclared columns). Declared first, so that a column delivered as text that parses as its declared
    type again after a drift returns to that type (a string drift would otherwise stick: nothing narrows
    back from string)."""
    return {**(previous.column_types() if previous else {}), **declared}


def delivered_names_metadata(
    files: Iterable[Path],
    headers: Renaming | None,
    previous_metadata: Mapping[str, object] | None,
    *,
    incremental: bool,
) -> dict[str, dg.MetadataValue]:
    """`schema/delivered_names`: staged column -> the name its delivery gave it, for the columns `headers`
    (`file.normalize_headers`) renames (none recorded when none is): an incremental run's files merged over
    what the previous materialization recorded, since its table holds both."""
    if headers is None:
        return {}
    names = dict(recorded_delivered_names(previous_metadata or {})) if incremental else {}
    for path in files:
        names.update((staged, delivered) for delivered, staged in staged_names(path, headers).items())
    return {DELIVERED_NAMES_METADATA: dg.MetadataValue.json(dict(sorted(names.items())))} if names else {}


def recorded_delivered_names(metadata: Mapping[str, object]) -> dict[str, str]:
    """The `schema/delivered_names` a materialization recorded (empty: none)."""
    value = metadata.get(DELIVERED_NAMES_METADATA)
    return dict(getattr(value, "value", value) or {})


def columns_json(columns: Mapping[str, str]) -> str:
    return json.dumps(dict(columns), sort_keys=True)
