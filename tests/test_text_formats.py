"""How text-landed values are read before they are typed: declared null markers (`null_values`: `NA`,
`NULL`, `\\N`, ...) and locale formats (decimal and thousands separators, strptime date and timestamp
formats), applied alike by staging's cast and the schema registry's parse counting; the catalog errors of
bad settings; and the hint that names an undeclared null marker in the drift and bad-row messages.

The SQL pieces are tested on DuckDB directly; two end-to-end tests materialize real CSV deliveries through
Dagster on DuckDB and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from fixtures.exports_platform import ExportsPlatform, step_failure

from platform_assets.catalog.loader import CatalogEntity, CatalogError, load_catalog
from platform_assets.catalog.model import ColumnType, Entity, TextFormat
from platform_assets.keys import staged_key
from platform_assets.staging.null_markers import cast_error_values, null_marker_hint
from platform_assets.staging.plan import staging_fingerprint
from platform_assets.staging.schema_registry import delivered_schema, strict_cast, without_null_markers
from platform_assets.staging.sql import staging_select
from resources.landing.zone import Lineage, write_parquet

GERMAN = TextFormat(("NA",), ",", ".", "%d.%m.%Y", "%d.%m.%Y %H:%M")


def _read(text: str, kind: ColumnType, read: TextFormat) -> object:
    """What staging makes of one landed text value."""
    literal = "'" + text.replace("'", "''") + "'"
    sql = f"SELECT {strict_cast(without_null_markers(literal, read), kind, read)}"
    (value,) = duckdb.execute(sql).fetchone() or (None,)
    return value


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("12,50", ColumnType.DOUBLE, 12.5),
        ("1.234,75", ColumnType.DOUBLE, 1234.75),
        ("-1.234.567,125", ColumnType.DOUBLE, -1234567.125),
        ("1.234", ColumnType.INTEGER, 1234),
        ("12,0", ColumnType.INTEGER, 12),
        ("31.12.2025", ColumnType.DATE, date(2025, 12, 31)),
        ("31.12.2025 23:59", ColumnType.TIMESTAMP, datetime(2025, 12, 31, 23, 59)),
        ("NA", ColumnType.DOUBLE, None),
    ],
)
def test_locale_text_is_typed_exactly(text: str, kind: ColumnType, expected: object) -> None:
    assert _read(text, kind, GERMAN) == expected


def test_a_decimal_comma_value_is_the_same_double_as_its_dot_form() -> None:
    for comma, dot in [("0,1", "0.1"), ("1.234,75", "1234.75"), ("3,14159265358979", "3.14159265358979")]:
        assert _read(comma, ColumnType.DOUBLE, GERMAN) == _read(dot, ColumnType.DOUBLE, TextFormat())


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("1.5", ColumnType.DOUBLE),  # a dot is the thousands separator: no number groups 5 digits by one
        ("1.23,4", ColumnType.DOUBLE),  # digits not grouped by three
        ("12,5", ColumnType.INTEGER),  # a fraction is not an integer
        ("2025-12-31", ColumnType.DATE),  # not the declared format
        ("31.12.2025 10:00", ColumnType.DATE),  # a time of day is not a date
    ],
)
def test_text_the_locale_does_not_read_is_a_cast_error(text: str, kind: ColumnType) -> None:
    assert _read(text, kind, GERMAN) is None


def test_only_declared_null_markers_are_missing() -> None:
    read = TextFormat(("NA", "\\N"))
    assert _read("\\N", ColumnType.INTEGER, read) is None
    assert _read("NULL", ColumnType.STRING, read) == "NULL"  # not declared: a value
    assert _read("NA", ColumnType.STRING, TextFormat()) == "NA"  # the default: only the empty value


def test_the_schema_registry_counts_parses_as_staging_reads(tmp_path: Path) -> None:
    """Drift is decided on the same reading as the cast: a column of decimal commas and `NA` is double,
    not string."""
    path = tmp_path / "landed.parquet"
    duckdb.execute(
        "COPY (SELECT *, 'a.csv' AS _file, TIMESTAMPTZ '2026-01-01' AS _extracted_at FROM (VALUES "
        f"('1', '1.234,75', '31.12.2025'), ('2', 'NA', 'NA')) AS t(id, amount, day)) TO '{path}' "
        "(FORMAT parquet)"
    )
    expected = {"id": ColumnType.INTEGER, "amount": ColumnType.DOUBLE, "day": ColumnType.DATE}
    assert delivered_schema([path], expected, formats=lambda _: GERMAN) == expected
    plain = delivered_schema([path], expected)
    assert (plain["amount"], plain["day"]) == (ColumnType.STRING, ColumnType.STRING)


def test_staging_reads_text_landed_columns_only_as_declared(tmp_path: Path) -> None:
    """A JSON or API delivery lands text beside typed columns: `NA` in text is missing and `1.234,5` is
    read with the entity's separators; a typed double (Parquet) keeps its value, which the decimal comma
    of the entity does not concern."""
    batch = pa.record_batch(
        {"id": pa.array(["1", "2"]), "amount": pa.array(["1.234,5", "NA"]), "rate": pa.array([0.5, 1.25])}
    )
    lineage = Lineage(source="exports.sales", extracted_at=datetime(2026, 1, 1, tzinfo=UTC), run_id="r1")
    landed = write_parquet(tmp_path / "landed.parquet", [batch], lineage)
    assert landed is not None
    entity = Entity.model_validate(
        {
            "primary_key": ["id"],
            "null_values": ["NA"],
            "decimal_separator": ",",
            "thousands_separator": ".",
            "columns": {"id": {"type": "integer"}, "amount": {"type": "double"}, "rate": {"type": "double"}},
        }
    )
    select = staging_select(entity, [landed.path], {"id", "amount", "rate"}, "run")
    rows = duckdb.execute(f"SELECT id, amount, rate, _cast_errors FROM ({select}) ORDER BY id").fetchall()
    assert rows == [(1, 1234.5, 0.5, None), (2, None, 1.25, None)]


def test_the_null_marker_hint_names_what_to_declare() -> None:
    hint = null_marker_hint(["abc", "NA", "\\N"])
    assert "Values like 'NA', '\\\\N' look like a null marker" in hint
    assert "declare `null_values: ['NA', '\\\\N']` on the entity" in hint
    assert null_marker_hint(["abc", "12x"]) == ""
    assert cast_error_values("amount=NA; score=-; amount_2=x", "amount") == ["NA"]


CATALOG = """\
source: exports
connection: {{kind: files, root: /data}}
null_values: ["NA", "NULL"]
entities:
  sales:
    file: {{path: "sales/*.csv", format: csv, delimiter: ";"}}
    primary_key: [id]
{entity}    columns:
      id: {{type: integer}}
{columns}
"""


def _catalog(tmp_path: Path, entity: str = "", columns: str = "") -> dict[str, CatalogEntity]:
    (tmp_path / "exports.yaml").write_text(CATALOG.format(entity=entity, columns=columns))
    return {item.name: item for item in load_catalog(tmp_path, {}, {})}


def test_an_entity_takes_its_sources_null_values_unless_it_declares_its_own(tmp_path: Path) -> None:
    inherited = _catalog(tmp_path)["sales"].entity
    assert inherited.text_format("id").null_values == ("NA", "NULL")
    own = _catalog(tmp_path, entity="    null_values: ['-']\n")["sales"].entity
    assert own.text_format("id").null_values == ("-",)


def test_a_column_format_overrides_the_entitys_and_the_fingerprint_sees_both(tmp_path: Path) -> None:
    entity = _catalog(
        tmp_path,
        entity="    decimal_separator: ','\n    thousands_separator: '.'\n",
        columns="      price: {type: double, thousands_separator: ' '}\n",
    )["sales"].entity
    assert (
        entity.text_format("price").decimal_separator,
        entity.text_format("price").thousands_separator,
    ) == (
        ",",
        " ",
    )
    assert entity.text_format("id").thousands_separator == "."
    other = entity.model_copy(update={"decimal_separator": "."})
    assert staging_fingerprint(entity, []) != staging_fingerprint(other, [])


@pytest.mark.parametrize(
    ("entity", "columns", "line", "where", "message"),
    [
        (
            "    decimal_separator: ','\n    thousands_separator: ','\n",
            "",
            9,
            "entities.sales.thousands_separator",
            "decimal_separator and thousands_separator are both ','",
        ),
        (
            "    decimal_separator: ','\n",
            "      price: {type: double, thousands_separator: ','}\n",
            11,
            "entities.sales.columns.price.thousands_separator",
            "set thousands_separator to the character grouping the digits",
        ),
        (
            "",
            "      day: {type: date, date_format: '%d.%Q.%Y'}\n",
            10,
            "entities.sales.columns.day.date_format",
            "date_format '%d.%Q.%Y' is not a strptime format DuckDB accepts",
        ),
        (
            "    timestamp_format: '%d.%m.%Y'\n",
            "",
            8,
            "entities.sales.timestamp_format",
            "does not read back the year, month and day, hours and minutes",
        ),
        (
            "",
            "      note: {type: string, decimal_separator: ','}\n",
            10,
            "entities.sales.columns.note",
            "decimal_separator do(es) not apply to a string column",
        ),
    ],
)
def test_bad_format_settings_are_catalog_errors_at_their_line(
    tmp_path: Path, entity: str, columns: str, line: int, where: str, message: str
) -> None:
    with pytest.raises(CatalogError) as raised:
        _catalog(tmp_path, entity, columns)
    assert f"exports.yaml:{line}: {where}: " in str(raised.value)
    assert message in str(raised.value)


# End to end: real CSV deliveries through real Dagster materializations.

ORDERS = staged_key("exports", "orders")


R_EXPORT = {
    "file": {"format": "csv", "path": "orders/*.csv"},
    "max_bad_fraction": 0.1,
    "columns": {
        "order_id": {"type": "integer"},
        "amount": {"type": "double"},
        "shipped": {"type": "date"},
        "note": {"type": "string"},
        "score": {"type": "integer", "severity": "warn"},
    },
}


def test_declared_null_markers_stage_as_nulls_and_undeclared_ones_are_named_in_the_failures(
    exports: ExportsPlatform,
) -> None:
    """An R/database export writes missing values as `NA`, `NULL` and `\\N`. Undeclared, one `NA` among
    20 rows is a quarantined cast error and many are schema drift: both messages name the marker. Once
    declared, the same files stage the markers as NULL and nothing is quarantined."""
    header = "order_id,amount,note,shipped,score"
    good = [f"{i},{i}.5,n{i},2025-01-{i:02d},{i}" for i in range(1, 20)]
    exports.deliver("1.csv", [header, *good, "20,NA,n20,2025-01-20,1", "25,2.5,n25,2025-01-25,-"])
    first = exports.materialize(R_EXPORT)
    assert first.success
    assert exports.staged_metadata(first)["rows_quarantined"] == 1
    (warning,) = [w for w in exports.warnings(first) if w.startswith("Quarantining")]
    assert "Values like 'NA' look like a null marker; declare `null_values: ['NA']` on the entity" in warning
    # A warn-severity column keeps its row; the quality_warnings check reports the value and the hint.
    (warned,) = [e for e in first.get_asset_check_evaluations() if e.check_name == "quality_warnings"]
    assert not warned.passed
    assert "declare `null_values: ['-']`" in warned.metadata["hint"].value

    exports.deliver(
        "2.csv", [header, "21,NA,NULL,\\N,1", "22,NULL,NA,\\N,2", "23,\\N,x,NA,3", "24,1.5,y,NA,4"]
    )
    drifted = exports.materialize(R_EXPORT)
    assert not drifted.success
    failure = step_failure(drifted)
    assert "amount: type changed from double to string" in failure
    assert "Values like 'NA', 'NULL', '\\\\N' look like a null marker" in failure

    declared = exports.materialize({**R_EXPORT, "null_values": ["NA", "NULL", "\\N", "-"]})
    assert declared.success
    assert all(check.passed for check in declared.get_asset_check_evaluations())
    metadata = exports.staged_metadata(declared)
    assert (metadata["rows_quarantined"], metadata["staging/mode"]) == (0, "full")
    assert metadata["quarantine/released"] == 1  # the row quarantined for its `NA` is staged now
    assert exports.staged("order_id, amount, shipped, note, score")[19:] == [
        (20, None, date(2025, 1, 20), "n20", 1),
        (21, None, None, None, 1),
        (22, None, None, None, 2),
        (23, None, None, "x", 3),
        (24, 1.5, None, "y", 4),
        (25, 2.5, date(2025, 1, 25), "n25", None),
    ]


def test_semicolon_csv_with_decimal_commas_thousands_dots_and_day_first_dates_stages_exactly(
    exports: ExportsPlatform,
) -> None:
    exports.deliver(
        "1.csv",
        [
            "order_id;amount;qty;ordered;paid_at;fee",
            '1;12,50;1.200;31.12.2025;31.12.2025 23:59;"1 000,5"',
            "2;1.234,75;7;01.02.2026;01.02.2026 08:00;0,1",
            "3;-0,01;1.000.000;29.02.2024;;",
        ],
    )
    result = exports.materialize(
        {
            "file": {"format": "csv", "path": "orders/*.csv", "delimiter": ";"},
            "decimal_separator": ",",
            "thousands_separator": ".",
            "date_format": "%d.%m.%Y",
            "timestamp_format": "%d.%m.%Y %H:%M",
            "columns": {
                "order_id": {"type": "integer"},
                "amount": {"type": "double"},
                "qty": {"type": "integer"},
                "ordered": {"type": "date"},
                "paid_at": {"type": "timestamp"},
                "fee": {"type": "double", "thousands_separator": " "},
            },
        }
    )
    assert result.success
    metadata = exports.staged_metadata(result)
    assert (metadata["rows_quarantined"], metadata["schema/action"]) == (0, "none")
    assert metadata["schema/columns"] == {
        "order_id": "integer",
        "amount": "double",
        "qty": "integer",
        "ordered": "date",
        "paid_at": "timestamp",
        "fee": "double",
    }
    assert exports.staged("order_id, amount, qty, ordered, paid_at, fee") == [
        (1, 12.5, 1200, date(2025, 12, 31), datetime(2025, 12, 31, 23, 59), 1000.5),
        (2, 1234.75, 7, date(2026, 2, 1), datetime(2026, 2, 1, 8, 0), 0.1),
        (3, -0.01, 1000000, date(2024, 2, 29), None, None),
    ]
