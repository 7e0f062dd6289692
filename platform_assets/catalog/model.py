"""The shape of a source declaration in the catalog, validated strictly: an unknown key or a wrong type
is an error, never ignored.

One file declares one source system: how to reach it (`connection`, one of three kinds), and its
entities. Each entity says where its records come from with the block of its source's kind (`file`,
`table` or `endpoint`); the blocks themselves are the connectors' own configuration models, so the catalog
and the connectors cannot drift apart.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from platform_assets.catalog.retention import Retention, inherited_retention
from resources.databases.config import DatabaseConnection, TableExtraction
from resources.files.config import BadFilePolicy, FileFormat, MalformedPolicy
from resources.files.headers import MAX_NAME_LENGTH, normalized_names, snake_case
from resources.files.readiness import Readiness, marker_problem
from resources.landing.delivered import Renaming
from resources.rest.config import RestConnection, RestEndpoint
from resources.warehouses.load import TableLayout

SqlName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=63)]
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _plain_column_name(value: str) -> str:
    """A column name every warehouse takes unquoted; a delivered header that is not one (`Order ID`,
    `Größe`) is declared under its snake_case name, which `normalize_headers` lands it as."""
    if _PLAIN_NAME.fullmatch(value) and len(value) <= MAX_NAME_LENGTH:
        return value
    raise PydanticCustomError(
        "column_name",
        f"{value!r} is not a plain column name (letters, digits and _, not starting with a digit, at most 63 "
        f"characters); declare it as {snake_case(value)!r} and set `normalize_headers: snake_case` in the "
        f"entity's `file:` block, which lands a delivered {value!r} as {snake_case(value)!r}",
    )


ColumnName = Annotated[str, AfterValidator(_plain_column_name)]
Reference = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
]


class ColumnType(StrEnum):
    """Logical column types; each layer maps them to its own physical type."""

    INTEGER = "integer"
    DOUBLE = "double"
    STRING = "string"
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMP = "timestamp"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DecimalSeparator = Literal[".", ","]
ThousandsSeparator = Literal[".", ",", " ", "'", "_", "\u00a0"]
"""What groups digits in numbers as delivered (`1.234,75`, `1 234.75`, `1'234.75`)."""


def _iana_time_zone(value: str) -> str:
    """`value` when it names an IANA time zone (`zoneinfo`'s, which DuckDB's ICU knows too); else a
    ValueError saying what one looks like. Schedules and timestamp columns both take one. `localtime` is
    refused: it is whatever zone the machine is set to, so the same catalog would mean another time
    elsewhere (and DuckDB does not know it)."""
    if value not in available_timezones() or value == "localtime":
        raise ValueError(f"{value!r} is not an IANA time zone name (e.g. UTC, Europe/Berlin)")
    return value


def _optional_time_zone(value: str | None) -> str | None:
    """`_iana_time_zone` of a declaration that may be absent (a column's or an entity's `timezone`)."""
    return None if value is None else _iana_time_zone(value)


@dataclass(frozen=True)
class TextFormat:
    """How the text of one text-landed column (CSV, JSON, APIs) is read before it is typed: `null_values`
    are the texts that mean a missing value, the separators and strptime formats those of the delivery's
    locale. The defaults are DuckDB's own casts (ISO dates, a dot for decimals, no digit grouping), so a
    column that declares nothing is typed exactly as before these options existed.

    `timezone` is the one part that applies to typed values too (`typed`): the IANA zone a naive
    timestamp (text without an offset, a Parquet timestamp without a zone) is local time in, converted to
    UTC when staged; None reads it as UTC. A value that carries its own offset or zone is exact whatever
    this says."""

    null_values: tuple[str, ...] = ()
    decimal_separator: DecimalSeparator = "."
    thousands_separator: ThousandsSeparator | None = None
    date_format: str | None = None
    timestamp_format: str | None = None
    timezone: str | None = None

    def typed(self) -> TextFormat:
        """What of this reading applies to a typed value (Parquet, a database's): its time zone only;
        markers, separators and formats are the business of text."""
        return TextFormat(timezone=self.timezone)

    @property
    def locale_numbers(self) -> bool:
        """Whether numbers need rewriting before DuckDB's cast reads them."""
        return self.decimal_separator != "." or self.thousands_separator is not None


PLAIN_TEXT = TextFormat()
"""Text read as DuckDB's casts read it, with only the empty value missing."""

_FORMAT_SAMPLES = {"date_format": "2025-12-31 00:00:00", "timestamp_format": "2025-12-31 13:14:00"}


def _strptime_format(value: str | None, key: str) -> str | None:
    """A `date_format` / `timestamp_format` DuckDB's strptime accepts and that reads back what it writes (a
    format without a year, month or day, or a timestamp format without hours and minutes, would type values
    wrongly or never); checked when the catalog loads rather than when a delivery is staged. Checked on a
    session set to UTC: a format with `%z` reads back a TIMESTAMPTZ, which DuckDB compares with the sample
    taken as local time in the session's zone (a machine set to Berlin refused every such format)."""
    if value is None:
        return None
    import duckdb

    sample = _FORMAT_SAMPLES[key]
    try:
        with duckdb.connect(":memory:") as con:
            con.execute("SET TimeZone = 'UTC'")
            (back,) = con.execute(
                "SELECT try_strptime(strftime(CAST(? AS TIMESTAMP), ?), ?) = CAST(? AS TIMESTAMP)",
                [sample, value, value, sample],
            ).fetchone() or (None,)
    except duckdb.Error as error:
        message = str(error).splitlines()[0]
        raise ValueError(
            f"{key} {value!r} is not a strptime format DuckDB accepts ({message}); write it with DuckDB's "
            f"specifiers, e.g. '%d.%m.%Y' for 31.12.2025"
        ) from None
    if not back:
        wanted = "year, month and day" + (", hours and minutes" if key == "timestamp_format" else "")
        raise ValueError(
            f"{key} {value!r} does not read back the {wanted} it must carry (e.g. "
            f"{'%d.%m.%Y %H:%M:%S' if key == 'timestamp_format' else '%d.%m.%Y'}); use %d, %m, %Y"
            f"{', %H, %M' if key == 'timestamp_format' else ''}"
        )
    return value


Severity = Literal["error", "warn"]
"""`error`: a violation is quarantined (row rules) or fails the blocking check; `warn`: reported only."""
DottedPath = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")]


class Column(Strict):
    type: ColumnType
    nullable: bool = True
    unique: bool = False
    min: float | None = None
    max: float | None = None
    allowed_values: list[str] | None = None
    regex: str | None = Field(default=None, description="Full-match regular expression for string values.")
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    check: DottedPath | None = Field(
        default=None,
        description="`package.module.function`: takes the column as a pandas Series, returns a boolean "
        "Series (True = valid).",
    )
    severity: Severity = Field(default="error", description="Severity of this column's rules.")
    references: Reference | None = Field(
        default=None, description="`source.entity.column` this column points to (a foreign key)."
    )
    references_severity: Severity = Field(
        default="warn", description="Severity of orphan rows (values not found in the referenced column)."
    )
    description: str | None = None
    decimal_separator: DecimalSeparator | None = Field(
        default=None, description="Text-landed integer/double column: overrides the entity's."
    )
    thousands_separator: ThousandsSeparator | None = Field(
        default=None, description="Text-landed integer/double column: overrides the entity's."
    )
    date_format: str | None = Field(default=None, description="Text-landed date column: strptime format.")
    timestamp_format: str | None = Field(
        default=None, description="Text-landed timestamp column: strptime format."
    )
    timezone: str | None = Field(
        default=None,
        description="Timestamp column: the IANA zone its naive values are local time in (converted to UTC); "
        "overrides the entity's.",
    )

    @field_validator("date_format", "timestamp_format")
    @classmethod
    def _is_strptime_format(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _strptime_format(value, str(info.field_name))

    _is_timezone = field_validator("timezone")(_optional_time_zone)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"regex {value!r} does not compile: {error}") from None
            _compiles_in_duckdb(value)
        return value

    @model_validator(mode="after")
    def _rules_fit_the_type(self) -> Column:
        numeric = self.type in (ColumnType.INTEGER, ColumnType.DOUBLE)
        misfits = [rule for rule in ("min", "max") if getattr(self, rule) is not None and not numeric]
        misfits += [
            rule
            for rule in ("regex", "min_length", "max_length")
            if getattr(self, rule) is not None and self.type != ColumnType.STRING
        ]
        misfits += [
            rule
            for rule in ("decimal_separator", "thousands_separator")
            if getattr(self, rule) is not None and not numeric
        ]
        misfits += [rule for rule in ("date_format",) if self.date_format and self.type != ColumnType.DATE]
        misfits += [
            rule
            for rule in ("timestamp_format", "timezone")
            if getattr(self, rule) and self.type != ColumnType.TIMESTAMP
        ]
        if misfits:
            raise ValueError(
                f"{', '.join(misfits)} do(es) not apply to a {self.type.value} column (min/max, "
                f"decimal_separator, thousands_separator: integer or double; regex, min_length, max_length: "
                f"string; date_format: date; timestamp_format, timezone: timestamp); remove the option, or "
                f"fix the column's type"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} is greater than max_length {self.max_length}")
        return self


def _compiles_in_duckdb(pattern: str) -> None:
    """Staging evaluates `regex` in DuckDB (RE2 syntax): refuse what RE2 does not know (lookarounds,
    backreferences) when the catalog loads rather than when a delivery is staged."""
    import duckdb

    try:
        duckdb.execute("SELECT regexp_full_match('', ?)", [pattern]).fetchall()
    except duckdb.Error as error:
        message = str(error).splitlines()[0]
        raise ValueError(
            f"regex {pattern!r} is not RE2 syntax, which staging uses ({message}); avoid lookarounds and "
            f"backreferences"
        ) from None


class SchemaEvolution(Strict):
    """What a delivery whose columns differ from the last staged version may do.

    `compatibility` (as in schema registries): `backward` = the new schema reads old data (columns may be
    removed, nullable columns added); `forward` = old readers read new data (columns may be added, nullable
    columns removed); `full` = both (only nullable columns added or removed); `none` = anything goes.
    `on_drift` when a type drifts or a column goes missing: `evolve` (add nullable columns; widen integer ->
    double, date -> timestamp, anything -> string only with `allow_string_widening`; relax a missing
    non-nullable column to nullable; widening and relaxing only under `backward` or `none`, whose readers
    accept them, else the step fails), `quarantine` the drifting rows, or `fail` the step. The full table:
    `schema_evolution.py`."""

    compatibility: Literal["backward", "forward", "full", "none"] = "backward"
    on_drift: Literal["evolve", "quarantine", "fail"] = "fail"
    allow_string_widening: bool = False


class VolumeAnomaly(Strict):
    """Row-count anomaly: |z| of the row count's change since the previous materialization against the changes
    over the last `history` materializations."""

    sensitivity: float = Field(default=3.0, gt=0)
    min_history: int = Field(default=5, ge=2)
    history: int = Field(default=20, ge=2)
    direction: Literal["spike", "drop", "both"] = "both"


class Anomalies(Strict):
    volume: VolumeAnomaly = Field(default_factory=VolumeAnomaly)
    null_rate_max_increase: float = Field(
        default=0.1, ge=0, le=1, description="Largest allowed rise of a column's null rate over its mean."
    )
    mean_shift_sensitivity: float = Field(
        default=3.0, gt=0, description="Allowed shift of a numeric column's mean, in historical stddevs."
    )


CRON_FIELD = re.compile(
    r"^(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*$"
)
CRON_ALIASES = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly"}


class Schedule(Strict):
    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _is_cron(cls, value: str) -> str:
        fields = value.split()
        if value not in CRON_ALIASES and (len(fields) != 5 or not all(map(CRON_FIELD.match, fields))):
            raise ValueError(f"{value!r} is not a cron expression (five fields, e.g. '0 6 * * *', or @daily)")
        return value

    @field_validator("timezone")
    @classmethod
    def _is_timezone(cls, value: str) -> str:
        return _iana_time_zone(value)


class Freshness(Strict):
    """The entity is stale when its last successful materialization is older than `max_lag_minutes`."""

    max_lag_minutes: float = Field(gt=0)


class FileEntity(FileFormat):
    """A file entity: a glob under the source's root, and how its files are parsed."""

    path: str = Field(min_length=1, description="Glob relative to the source's root, e.g. `orders/*.csv`.")
    snapshot: bool = Field(
        default=False,
        description="Each delivery is the whole entity: keys absent from the latest one are removed from "
        "the staged table (bounded by the entity's `max_delete_fraction`).",
    )
    stable_after_seconds: float = Field(
        default=0,
        ge=0,
        description="Land a file only once its size and version (mtime, GCS generation) were unchanged in "
        "two listings at least this many seconds apart: a file still being written waits. 0: at once.",
    )
    on_bad_file: BadFilePolicy = Field(
        default="fail",
        description="A delivered file that cannot be read at all (truncated or damaged archive, a zip of "
        "several files, not the declared format or encoding): `fail` fails the raw step naming it; `skip` "
        "sets it aside with its error (materialization metadata `files_set_aside`) and lands the other "
        "files. A set-aside file is not tried again until it is re-delivered changed.",
    )
    ready_marker: str | None = Field(
        default=None,
        description="Land a file only once this file exists beside it: `_SUCCESS` (one for the directory), "
        "`{name}.done` (one per file; `{stem}`: the name without its suffix). Markers are never landed.",
    )

    @field_validator("ready_marker")
    @classmethod
    def _usable_marker(cls, value: str | None) -> str | None:
        if value is not None and (problem := marker_problem(value)) is not None:
            raise ValueError(f"ready_marker {value!r} {problem}")
        return value

    def readiness(self) -> Readiness:
        """When a listed file of this entity may land (`resources/files/readiness.py`)."""
        return Readiness(self.stable_after_seconds, self.ready_marker)


class FilesConnection(Strict):
    kind: Literal["files"]
    root: str = Field(min_length=1, description="Local directory or `gs://bucket/prefix`.")


class DatabaseSourceConnection(DatabaseConnection):
    kind: Literal["database"]


class RestSourceConnection(RestConnection):
    kind: Literal["rest"]


Connection = Annotated[
    FilesConnection | DatabaseSourceConnection | RestSourceConnection, Field(discriminator="kind")
]
ENTITY_BLOCK = {"files": "file", "database": "table", "rest": "endpoint"}
"""Which entity block each connection kind reads its records from (checked by the catalog loader, which
can point at the entity's line)."""


class Layout(Strict):
    """Physical layout of the staged table where the warehouse has one natively (BigQuery partitioning and
    clustering); DuckDB and PostgreSQL ignore it."""

    partition_by: ColumnName | None = Field(default=None, description="A date or timestamp column.")
    partition_granularity: Literal["DAY", "HOUR", "MONTH", "YEAR"] = "DAY"
    cluster_by: list[ColumnName] = Field(default_factory=list, max_length=4)

    def table_layout(self) -> TableLayout:
        return TableLayout(self.partition_by, self.partition_granularity, tuple(self.cluster_by))


class Deletes(Strict):
    """How rows deleted at a database source leave the staged table (files: `file.snapshot`).

    `soft`: the source keeps deleted rows and marks them in `column` (a boolean true, or any non-null
    value, e.g. `deleted_at`); a key whose current version is so marked is removed from the staged table.
    `reconcile`: the source forgets deleted rows, which an incremental extraction never sees; every
    `every_minutes` the raw asset also lands the table's primary keys (only those columns, streamed) and
    staging removes the staged keys absent from that scan."""

    mode: Literal["soft", "reconcile"]
    column: ColumnName | None = Field(default=None, description="`soft`: the column marking deletion.")
    every_minutes: float = Field(
        default=60, ge=0, description="`reconcile`: least time between two key scans (0: every run)."
    )

    @model_validator(mode="after")
    def _column_fits_the_mode(self) -> Deletes:
        if (self.mode == "soft") != (self.column is not None):
            raise ValueError(
                "deletes: mode soft needs `column` (the column marking deletion); mode reconcile takes none"
            )
        return self


class Entity(Strict):
    description: str | None = None
    file: FileEntity | None = None
    table: TableExtraction | None = None
    endpoint: RestEndpoint | None = None
    on_malformed: MalformedPolicy = "fail"
    primary_key: list[ColumnName] = Field(min_length=1)
    columns: dict[ColumnName, Column] = Field(min_length=1)
    schedule: Schedule | None = None
    freshness: Freshness | None = None
    layout: Layout | None = None
    unique: list[list[ColumnName]] = Field(
        default_factory=list, description="Composite unique keys, e.g. [[customer_id, email]]."
    )
    max_bad_fraction: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of one delivery's rows (a file, or an extraction) that may be quarantined before "
        "the step fails; a single bad row is always quarantined, however small the delivery. Also the "
        "share of a delivery's text values that may fail to parse as a column's type (and one unparseable "
        "value more) without being schema drift.",
    )
    deletes: Deletes | None = None
    max_delete_fraction: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of the staged rows a key scan (`deletes: reconcile`) or a snapshot delivery "
        "(`file.snapshot`) may delete before the step fails instead: a bad read must not empty the table.",
    )
    schema_evolution: SchemaEvolution = Field(default_factory=SchemaEvolution)
    anomalies: Anomalies = Field(default_factory=Anomalies)
    pandera_model: DottedPath | None = Field(
        default=None,
        description="`package.module.Model`: a hand-written Pandera `DataFrameModel` the staged table must "
        "also satisfy (checked by the blocking schema_contract, batch by batch; not quarantined).",
    )
    null_values: list[str] | None = Field(
        default=None,
        description="Texts that mean a missing value in text-landed columns (e.g. ['NA', 'NULL', '\\N']); "
        "the source's when not given; the empty value always is one.",
    )
    decimal_separator: DecimalSeparator = Field(
        default=".", description="Text-landed integer and double columns: `,` for `12,50`."
    )
    thousands_separator: ThousandsSeparator | None = Field(
        default=None, description="Text-landed integer and double columns: `.` for `1.234,75`."
    )
    date_format: str | None = Field(
        default=None, description="Text-landed date columns: strptime format, e.g. '%d.%m.%Y'."
    )
    timestamp_format: str | None = Field(
        default=None, description="Text-landed timestamp columns: strptime format, e.g. '%d.%m.%Y %H:%M'."
    )
    timezone: str | None = Field(
        default=None,
        description="Timestamp columns: the IANA zone their naive values are local time in, e.g. "
        "Europe/Berlin (converted to UTC); UTC when not given.",
    )
    retention: Retention | None = Field(
        default=None,
        description="What of the landed files and quarantine is kept (`catalog/retention.py`); the "
        "source's, key by key, where the entity sets none.",
    )

    @field_validator("date_format", "timestamp_format")
    @classmethod
    def _is_strptime_format(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _strptime_format(value, str(info.field_name))

    _is_timezone = field_validator("timezone")(_optional_time_zone)

    def text_format(self, column: str) -> TextFormat:
        """How `column`'s text is read when it lands as text: its own separators and formats, else the
        entity's (an undeclared column, evolved or dropped: the entity's)."""
        own = self.columns.get(column) or Column(type=ColumnType.STRING)
        return TextFormat(
            tuple(self.null_values or ()),
            own.decimal_separator or self.decimal_separator,
            own.thousands_separator or self.thousands_separator,
            own.date_format or self.date_format,
            own.timestamp_format or self.timestamp_format,
            own.timezone or self.timezone,
        )

    @model_validator(mode="after")
    def _separators_differ(self) -> Entity:
        """A number whose decimal and thousands separators are the same character cannot be read; reported
        where the clash is declared (the column, else the entity)."""
        clashes: list[tuple[tuple[str, ...], str]] = []
        if self.thousands_separator == self.decimal_separator:
            clashes.append((("thousands_separator",), self.decimal_separator))
        for name, column in self.columns.items():
            read = self.text_format(name)
            own = column.decimal_separator is not None or column.thousands_separator is not None
            if own and read.thousands_separator == read.decimal_separator:
                key = "thousands_separator" if column.thousands_separator else "decimal_separator"
                clashes.append((("columns", name, key), read.decimal_separator))
        if clashes:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "separators_clash",
                            "decimal_separator and thousands_separator are both '{separator}', so no number "
                            "can be read; set thousands_separator to the character grouping the digits "
                            "(e.g. '.' with decimal_separator ','), or remove it",
                            {"separator": separator},
                        ),
                        loc=location,
                        input=separator,
                    )
                    for location, separator in clashes
                ],
            )
        return self

    def table_layout(self) -> TableLayout | None:
        return self.layout.table_layout() if self.layout else None

    @property
    def headers(self) -> Renaming | None:
        """How delivered column names are staged (a file entity's `normalize_headers`); None: as delivered."""
        if self.file is None or self.file.normalize_headers is None:
            return None
        return functools.partial(normalized_names, normalization=self.file.normalize_headers)

    def is_nullable(self, column: str) -> bool:
        """Primary-key columns never are, whatever their declaration says."""
        return self.columns[column].nullable and column not in self.primary_key

    def unique_keys(self) -> list[list[str]]:
        """Column sets whose values must be unique: the primary key, each `unique` column, each composite
        `unique` key."""
        singles = [[name] for name, column in self.columns.items() if column.unique]
        return [self.primary_key, *singles, *(list(key) for key in self.unique)]

    @model_validator(mode="after")
    def _deletes_fit_the_source(self) -> Entity:
        deletes = self.deletes
        if deletes is None:
            return self
        if self.table is None:
            raise ValueError(
                "deletes applies to database tables; a file entity whose deliveries are each the whole "
                "entity declares `file: {snapshot: true}`"
            )
        if deletes.column is not None and deletes.column not in self.columns:
            raise ValueError(f"deletes.column {deletes.column!r} is not declared; declare it under columns")
        if deletes.mode == "reconcile" and (self.table.incremental is None or self.table.query is not None):
            raise ValueError(
                "deletes: reconcile scans the keys of an incremental `table:`; a table without `incremental` "
                "is read whole every run (deleted rows leave with the next run), and a custom `query` "
                "has no table to scan"
            )
        return self

    @model_validator(mode="after")
    def _columns_are_normalized_names(self) -> Entity:
        """Under `normalize_headers: snake_case` every delivered column lands under a snake_case name: a
        column declared otherwise could never be delivered."""
        if self.file is None or self.file.normalize_headers is None:
            return self
        problems = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "not_normalized",
                    f"{name!r} is not a snake_case name, and `normalize_headers: snake_case` lands every "
                    f"delivered column under one: declare it as {snake_case(name)!r}",
                ),
                loc=("columns", name),
                input=name,
            )
            for name in self.columns
            if snake_case(name) != name
        ]
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    @model_validator(mode="after")
    def _named_columns_are_declared(self) -> Entity:
        """Every column `primary_key`, `unique` and `layout` name is declared, each misspelling reported at
        its own place (`unique.0.1`, not the entity), all of them at once: raised as one ValidationError,
        which pydantic nests under the entity's location like any field error."""
        named = [(name, ("primary_key", i)) for i, name in enumerate(self.primary_key)]
        named += [(name, ("unique", i, j)) for i, key in enumerate(self.unique) for j, name in enumerate(key)]
        if self.layout is not None:
            named += [(name, ("layout", "cluster_by", i)) for i, name in enumerate(self.layout.cluster_by)]
            if self.layout.partition_by is not None:
                named.append((self.layout.partition_by, ("layout", "partition_by")))
        declared = ", ".join(self.columns)
        problems = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "undeclared_column",
                    f"{name!r} is not a declared column (columns: {declared}); declare it under columns or "
                    f"fix its spelling",
                ),
                loc=location,
                input=name,
            )
            for name, location in named
            if name not in self.columns
        ]
        partition = self.layout.partition_by if self.layout else None
        kind = self.columns[partition].type if partition in self.columns else None
        if kind is not None and kind not in (ColumnType.DATE, ColumnType.TIMESTAMP):
            problems.append(
                InitErrorDetails(
                    type=PydanticCustomError(
                        "partition_type",
                        f"{partition!r} is {kind.value}; partition by a date or timestamp column",
                    ),
                    loc=("layout", "partition_by"),
                    input=partition,
                )
            )
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self


class Source(Strict):
    source: SqlName
    description: str | None = None
    owners: list[str] = Field(default_factory=list)
    vars: dict[str, str] = Field(
        default_factory=dict, description="Values for `{{ name }}` placeholders in this file."
    )
    connection: Connection
    schedule: Schedule | None = Field(default=None, description="Default schedule of every entity.")
    null_values: list[str] = Field(
        default_factory=list,
        description="Default `null_values` of every entity (an entity's own replace them).",
    )
    retention: Retention | None = Field(
        default=None, description="Default `retention` of every entity (an entity's own keys override it)."
    )
    entities: dict[SqlName, Entity] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _entities_inherit_retention(cls, data: object) -> object:
        """Each entity's `retention` completed by the source's, written into the entity: the assets see
        only the entity."""
        if not isinstance(data, Mapping) or data.get("retention") is None:
            return data
        entities = data.get("entities")
        if not isinstance(entities, Mapping):
            return data
        inherited = {
            name: {**entity, "retention": inherited_retention(data["retention"], entity.get("retention"))}
            if isinstance(entity, Mapping)
            else entity
            for name, entity in entities.items()
        }
        return {**data, "entities": inherited}

    @model_validator(mode="before")
    @classmethod
    def _entities_inherit_null_values(cls, data: object) -> object:
        """Each entity without its own `null_values` takes the source's, written into the entity so that
        staging (which sees only the entity) and its fingerprint read one value."""
        if not isinstance(data, Mapping) or "null_values" not in data:
            return data
        entities = data.get("entities")
        if not isinstance(entities, Mapping):
            return data
        inherited = {
            name: {**entity, "null_values": data["null_values"]}
            if isinstance(entity, Mapping) and entity.get("null_values") is None
            else entity
            for name, entity in entities.items()
        }
        return {**data, "entities": inherited}
