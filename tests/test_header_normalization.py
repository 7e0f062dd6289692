"""Headers written for people (`Order ID`, `MixedCase`, `Größe`): `file.normalize_headers: snake_case`
stages them under plain names the catalog declares, whatever the format, and records the delivered names;
a declared column the delivery spells differently is named in the message ("did you mean"); catalog errors
say which name to declare.

End to end: real CSV, Parquet and JSON Lines deliveries materialized through Dagster on DuckDB and
PostgreSQL (`exports` fixture, `tests/fixtures/exports_platform.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures.exports_platform import ExportsPlatform, step_failure

from platform_assets.catalog.loader import CatalogError, load_catalog
from platform_assets.factories.schema_registry_asset import registry_rows
from platform_assets.keys import staged_key
from resources.files.headers import HeaderCollisionError, normalized_names, snake_case


@pytest.mark.parametrize(
    ("delivered", "staged"),
    [
        ("Order ID", "order_id"),
        ("MixedCase", "mixed_case"),
        ("orderId", "order_id"),
        ("HTTPServer", "http_server"),
        ("Größe", "grosse"),
        ("Café Crème", "cafe_creme"),
        ("Body Mass (g)", "body_mass_g"),
        ("2024 sales", "_2024_sales"),
        ("  padded  ", "padded"),
        ("already_snake", "already_snake"),
        ("%", "column_3"),
        ("x" * 80, "x" * 63),
    ],
)
def test_snake_case_makes_plain_names(delivered: str, staged: str) -> None:
    assert snake_case(delivered, position=3) == staged


def test_columns_that_normalize_alike_are_refused_naming_both() -> None:
    with pytest.raises(HeaderCollisionError, match="'Order ID' and 'order_id' -> 'order_id'"):
        normalized_names(["Order ID", "order_id", "amount"], "snake_case")
    assert normalized_names(["Order ID"], None) == {"Order ID": "Order ID"}


CATALOG = """\
source: exports
connection: {{kind: files, root: /tmp/exports}}
entities:
  orders:
    file: {{path: "orders/*.csv", format: csv{file}}}
    primary_key: [order_id]
    columns:
      order_id: {{type: integer}}
{columns}"""


@pytest.mark.parametrize(
    ("file", "columns", "where", "message"),
    [
        (
            "",
            '      "Order Date": {type: date}\n',
            "exports.yaml:9: entities.orders.columns.Order Date.[key]",
            "'Order Date' is not a plain column name (letters, digits and _, not starting with a digit, at "
            "most 63 characters); declare it as 'order_date' and set `normalize_headers: snake_case`",
        ),
        (
            ", normalize_headers: snake_case",
            "      MixedCase: {type: string}\n",
            "entities.orders.columns.MixedCase",
            "'MixedCase' is not a snake_case name, and `normalize_headers: snake_case` lands every delivered "
            "column under one: declare it as 'mixed_case'",
        ),
    ],
)
def test_undeclarable_names_are_catalog_errors_naming_the_name_to_declare(
    tmp_path: Path, file: str, columns: str, where: str, message: str
) -> None:
    (tmp_path / "exports.yaml").write_text(CATALOG.format(file=file, columns=columns))
    with pytest.raises(CatalogError) as raised:
        load_catalog(tmp_path, {}, {})
    assert where in str(raised.value)
    assert message in str(raised.value)


def _entity(fmt: str, **file: object) -> dict[str, object]:
    return {
        "file": {"format": fmt, "path": f"orders/*.{fmt}", **file},
        "schema_evolution": {"on_drift": "evolve"},
        "columns": {
            "order_id": {"type": "integer"},
            "mixed_case": {"type": "string", "nullable": False},
            "grosse": {"type": "double"},
        },
    }


def test_normalized_headers_stage_under_declared_names_in_every_format_and_the_mapping_is_recorded(
    exports: ExportsPlatform,
) -> None:
    """Three deliveries spell the same columns three ways (CSV `Order ID`, Parquet `OrderID`, JSON Lines
    `order id`) and bring an undeclared `Body Mass (g)`: each stages under the declared snake_case names,
    the undeclared column evolves as `body_mass_g` (no quoting needed), and the raw and staged
    materializations and the schema registry say which delivered names were renamed. The same delivery
    without `normalize_headers` fails, naming the delivered spelling of the missing column."""
    exports.deliver("1.csv", ["Order ID,MixedCase,Größe,Body Mass (g)", "1,a,1.5,3750", "2,b,2.25,"])
    unnormalized = exports.materialize(_entity("csv"))
    assert not unnormalized.success
    failure = step_failure(unnormalized)
    assert "order_id: declared non-nullable integer column is missing from the delivery" in failure
    assert (
        "order_id is not delivered, but 'Order ID' is (did you mean it?): declare `normalize_headers: "
        "snake_case` in the entity's `file:` block to stage it as order_id" in failure
    )
    assert "mixed_case is not delivered, but 'MixedCase' is" in failure

    normalized = exports.materialize(_entity("csv", normalize_headers="snake_case"))
    assert normalized.success, step_failure(normalized)
    metadata = exports.staged_metadata(normalized)
    assert metadata["schema/columns"] == {
        "body_mass_g": "string",
        "grosse": "double",
        "mixed_case": "string",
        "order_id": "integer",
    }
    assert metadata["schema/delivered_names"] == {
        "body_mass_g": "Body Mass (g)",
        "grosse": "Größe",
        "mixed_case": "MixedCase",
        "order_id": "Order ID",
    }
    assert exports.staged("order_id, mixed_case, grosse, body_mass_g") == [
        (1, "a", 1.5, "3750"),
        (2, "b", 2.25, None),
    ]

    pq.write_table(
        pa.table({"OrderID": [3], "MixedCase": ["c"], "GRÖSSE": [3.5]}), exports.delivered("2.parquet")
    )
    parquet = exports.materialize(_entity("parquet", normalize_headers="snake_case"))
    assert parquet.success, step_failure(parquet)
    (raw,) = parquet.asset_materializations_for_node("raw__exports__orders")
    assert raw.metadata["columns_renamed"].value == {
        "GRÖSSE": "grosse",
        "MixedCase": "mixed_case",
        "OrderID": "order_id",
    }
    exports.delivered("3.jsonl").write_text(
        json.dumps({"order id": 4, "mixed case": "d", "größe": "4"}) + "\n"
    )
    jsonl = exports.materialize(_entity("jsonl", normalize_headers="snake_case"))
    assert jsonl.success, step_failure(jsonl)
    assert exports.staged("order_id, mixed_case, grosse") == [
        (1, "a", 1.5),
        (2, "b", 2.25),
        (3, "c", 3.5),
        (4, "d", 4.0),
    ]
    assert exports.staged_metadata(jsonl)["schema/delivered_names"]["order_id"] == "order id"
    (registry,) = [
        row
        for row in registry_rows(exports.instance, [staged_key("exports", "orders")]).to_pylist()
        if row["version"] == 1
    ]
    assert json.loads(registry["delivered_names_json"])["grosse"] == "Größe"


def test_a_misspelt_declared_column_is_named_with_the_delivered_one(exports: ExportsPlatform) -> None:
    """A nullable declared column the delivery spells differently would stage as NULL in every row: the
    staged asset warns with the delivered name it probably means. An evolved column whose delivered name
    SQL must quote is named with the setting that avoids it."""
    exports.deliver("1.csv", ["order_id,customer_notes,Body Mass (g)", "1,fragile,3750"])
    result = exports.materialize(
        {
            "file": {"format": "csv", "path": "orders/*.csv"},
            "schema_evolution": {"on_drift": "evolve"},
            "columns": {"order_id": {"type": "integer"}, "customer_note": {"type": "string"}},
        }
    )
    assert result.success
    warnings = exports.warnings(result)
    assert any(
        "customer_note is not delivered, but 'customer_notes' is: did you mean 'customer_notes'?" in warning
        for warning in warnings
    )
    assert any(
        "Column(s) 'Body Mass (g)' are staged under their delivered names, which SQL must quote: declare "
        "`normalize_headers: snake_case` in the entity's `file:` block to stage them as body_mass_g"
        in warning
        for warning in warnings
    )
    assert exports.staged('order_id, customer_note, "Body Mass (g)"') == [(1, None, "3750")]


def test_a_delivery_whose_headers_normalize_alike_fails_its_raw_step_naming_the_file(
    exports: ExportsPlatform,
) -> None:
    exports.deliver("clash.csv", ["Order ID,order_id,MixedCase", "1,2,a"])
    result = exports.materialize(_entity("csv", normalize_headers="snake_case"))
    assert not result.success
    failure = step_failure(result)
    assert "orders/clash.csv has columns whose names normalize_headers: snake_case makes the same" in failure
    assert "'Order ID' and 'order_id' -> 'order_id'" in failure
