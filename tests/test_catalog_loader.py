"""The catalog loader rejects a bad declaration at load time, naming the file, the line and the fix, and
reports every problem at once; placeholders and secret references are handled as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from platform_assets.catalog.loader import CATALOG_DIR, CatalogError, load_catalog
from platform_assets.catalog.template import DuplicateKeyLoader

FILES_SOURCE = """\
source: shop
vars:
  folder: exports
connection:
  kind: files
  root: "{{ sources_dir }}/{{ folder }}"
entities:
  orders:
    file: {path: "orders/*.csv", format: csv}
    primary_key: [order_id]
    columns:
      order_id: {type: integer, nullable: false}
      customer_id: {type: integer, references: crm.customers.customer_id}
      amount: {type: double, min: 0}
"""

DATABASE_SOURCE = """\
source: crm
connection:
  kind: database
  url: "postgresql+psycopg2://etl:${CRM_PASSWORD}@{{ env.CRM_HOST | default(\\"localhost\\") }}/crm"
entities:
  customers:
    table:
      table: customers
      incremental: {mode: timestamp, cursor_column: updated_at}
    primary_key: [customer_id]
    columns:
      customer_id: {type: integer, nullable: false}
"""

REST_SOURCE = """\
source: catalogue
connection:
  kind: rest
  base_url: https://api.example.com
  auth: {kind: bearer, token: "${CATALOGUE_TOKEN}"}
entities:
  products:
    endpoint:
      path: /v1/products
      pagination: {kind: link_header}
    primary_key: [id]
    columns:
      id: {type: integer}
"""

ENVIRON = {"CRM_PASSWORD": "s3cret", "CATALOGUE_TOKEN": "t0ken"}
VARIABLES = {"sources_dir": "/data/sources"}


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def _load(directory: Path, environ: dict[str, str] | None = None) -> dict[str, object]:
    items = load_catalog(directory, VARIABLES, ENVIRON if environ is None else environ)
    return {f"{item.source_name}.{item.name}": item for item in items}


def _problems(directory: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(CatalogError) as raised:
        _load(directory, environ)
    return str(raised.value)


def test_shipped_catalog_declares_the_demo_sources() -> None:
    items = load_catalog(CATALOG_DIR, {"sources_dir": "/x"}, {"SHOP_API_KEY": "k"})
    kinds = {(item.source_name, item.name): item.source.connection.kind for item in items}
    assert kinds[("shop", "orders")] == "files"
    assert kinds[("shop", "web_events")] == "files"
    assert kinds[("shop_db", "customers")] == "database"
    assert kinds[("shop_db", "payments")] == "database"
    assert kinds[("shop_api", "products")] == "rest"


def test_placeholders_are_filled_and_secrets_stay_references(tmp_path: Path) -> None:
    for name, text in [("a.yaml", FILES_SOURCE), ("b.yaml", DATABASE_SOURCE), ("c.yaml", REST_SOURCE)]:
        _write(tmp_path, name, text)
    items = _load(tmp_path, {**ENVIRON, "CRM_HOST": "10.0.0.5"})
    assert items["shop.orders"].source.connection.root == "/data/sources/exports"
    url = items["crm.customers"].source.connection.url
    assert url == "postgresql+psycopg2://etl:${CRM_PASSWORD}@10.0.0.5/crm"
    assert items["catalogue.products"].source.connection.auth.token == "${CATALOGUE_TOKEN}"


def test_a_placeholder_default_applies_when_the_variable_is_unset(tmp_path: Path) -> None:
    for name, text in [("a.yaml", FILES_SOURCE), ("b.yaml", DATABASE_SOURCE)]:
        _write(tmp_path, name, text)
    assert "@localhost/crm" in _load(tmp_path)["crm.customers"].source.connection.url


def test_every_problem_in_every_file_is_reported_with_file_line_and_fix(tmp_path: Path) -> None:
    files = _write(
        tmp_path,
        "a.yaml",
        FILES_SOURCE.replace("    file:", "    fille:")
        .replace("type: double", "type: money")
        .replace("{{ folder }}", "{{ fodler }}"),
    )
    _write(
        tmp_path,
        "b.yaml",
        DATABASE_SOURCE.replace("table: customers", 'table: "cust\\"omers"').replace(
            "statement", "statement"
        ),
    )
    rest = _write(tmp_path, "c.yaml", REST_SOURCE.replace("kind: link_header", "kind: link"))
    message = _problems(tmp_path, {"CATALOGUE_TOKEN": "t"})
    assert f"{files}:6: variable 'fodler' in {{{{ fodler }}}} is not defined" in message
    assert 'or give a default: {{ fodler | default("...") }} (variables: folder, sources_dir)' in message
    assert "CRM_PASSWORD" not in message, "an unset secret is a warning, not a catalog error"
    assert f"{rest}:10: entities.products.endpoint.pagination: Input tag 'link' found" in message
    assert "expected tags: 'none', 'page_number', 'offset', 'cursor', 'next_url', 'link_header'" in message
    assert f"{files}:9: entities.orders.fille: Extra inputs are not permitted" in message
    assert f"{files}:14: entities.orders.columns.amount.type: Input should be" in message


def test_unknown_key_wrong_type_and_bad_name_are_reported_with_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "a.yaml",
        FILES_SOURCE.replace("    file:", "    fille:")
        .replace("type: double", "type: money")
        .replace("source: shop", "source: Shop-EU")
        .replace("      customer_id: {type: integer, references: crm.customers.customer_id}\n", ""),
    )
    message = _problems(tmp_path)
    assert f"{path}:9: entities.orders.fille: Extra inputs are not permitted (unknown key" in message
    assert f"{path}:13: entities.orders.columns.amount.type:" in message
    assert "expected one of: 'integer', 'double', 'string', 'boolean', 'date' or 'timestamp'" in message
    assert f"{path}:1: source: String should match pattern" in message
    assert "lower-case letters, digits and underscores" in message


def test_an_entity_declared_twice_is_an_error_not_a_silent_override(tmp_path: Path) -> None:
    twice = FILES_SOURCE.replace(
        "      customer_id: {type: integer, references: crm.customers.customer_id}\n", ""
    )
    entity = twice[twice.index("  orders:") :]
    path = _write(tmp_path, "a.yaml", twice + entity)
    message = _problems(tmp_path)
    assert f"{path}:14: key 'orders' is declared twice (first on line 8)" in message


def test_the_catalog_is_parsed_by_libyaml_and_its_errors_keep_their_lines(tmp_path: Path) -> None:
    """libyaml (C) parses the catalog; duplicate keys (above) and syntax errors still name their line."""
    assert yaml.__with_libyaml__ and issubclass(DuplicateKeyLoader, yaml.CSafeLoader)
    broken = FILES_SOURCE.replace("primary_key: [order_id]", "primary_key: [order_id")
    path = _write(tmp_path, "a.yaml", broken)
    line = broken[: broken.index("primary_key: [order_id")].count("\n") + 1
    message = _problems(tmp_path)
    assert f"{path}: not valid YAML:" in message
    assert f"line {line}, column" in message


def test_a_reference_to_an_undeclared_entity_or_column_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.yaml", FILES_SOURCE)
    message = _problems(tmp_path)
    assert f"{path}:13: entities.orders.columns.customer_id.references: references crm.customers" in message
    assert "which no catalog file declares (entities: shop.orders)" in message
    _write(
        tmp_path,
        "b.yaml",
        DATABASE_SOURCE.replace("customer_id: {type", "id: {type").replace(
            "primary_key: [customer_id]", "primary_key: [id]"
        ),
    )
    assert "references column 'customer_id', which crm.customers does not declare (columns: id)" in _problems(
        tmp_path
    )


def test_invalid_database_identifiers_and_mismatched_blocks_are_errors(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", FILES_SOURCE.replace("    file:", "    table: {table: orders}\n    fil:"))
    database = _write(
        tmp_path,
        "b.yaml",
        DATABASE_SOURCE.replace("table: customers", 'table: "cust\\"omers"').replace(
            "cursor_column: updated_at", "cursor_column: ''"
        ),
    )
    message = _problems(tmp_path)
    assert f"{database}:8: entities.customers.table.table: 'cust\"omers' is not a valid database" in message
    assert f"{database}:9: entities.customers.table.incremental.cursor_column: '' is not a valid" in message


def test_an_entity_block_must_fit_its_source_kind(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "a.yaml",
        FILES_SOURCE.replace(
            '    file: {path: "orders/*.csv", format: csv}\n', "    table: {table: orders}\n"
        ),
    )
    _write(tmp_path, "b.yaml", DATABASE_SOURCE)
    message = _problems(tmp_path)
    assert f"{path}:8: entities.orders: a files source reads each entity from a `file:` block" in message
    assert "(found: table)" in message


def test_primary_key_must_name_a_declared_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.yaml", REST_SOURCE.replace("primary_key: [id]", "primary_key: [product_id]"))
    assert (
        f"{path}:11: entities.products.primary_key.0: 'product_id' is not a declared column (columns: id)"
        in _problems(tmp_path)
    )


def test_a_misspelled_unique_column_is_reported_at_the_unique_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "a.yaml",
        REST_SOURCE.replace("primary_key: [id]", "primary_key: [id]\n    unique:\n      - [id, skuu]")
        + "      sku: {type: string}\n",
    )
    message = _problems(tmp_path)
    assert f"{path}:13: entities.products.unique.0.1: 'skuu' is not a declared column (columns: id, sku)" in (
        message
    ), "line 13 holds the misspelled key, line 8 the entity"


def test_a_composite_unique_without_primary_key_says_a_primary_key_is_needed(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "a.yaml",
        REST_SOURCE.replace("primary_key: [id]", "unique: [[id, sku]]") + "      sku: {type: string}\n",
    )
    message = _problems(tmp_path)
    assert f"{path}:7: entities.products.primary_key: Field required (every entity needs `primary_key:" in (
        message
    )
    assert "a composite `unique:` key is checked besides it and does not replace it" in message


def test_a_bad_reference_is_reported_with_the_files_other_errors_in_one_pass(tmp_path: Path) -> None:
    """The reference is checked although its file (and the file it points into) have other errors, and a
    reference into a file with errors resolves against what that file declares."""
    files = _write(tmp_path, "a.yaml", FILES_SOURCE.replace("type: double", "type: money"))
    database = _write(
        tmp_path,
        "b.yaml",
        DATABASE_SOURCE.replace("source: crm", "source: crm\nowner: nobody")
        + "      order_id: {type: integer, references: shop.orders.order_idd}\n"
        + "      shop_order: {type: integer, references: shop.orders.order_id}\n",
    )
    message = _problems(tmp_path)
    assert f"{files}:14: entities.orders.columns.amount.type:" in message
    assert f"{database}:2: owner: Extra inputs are not permitted" in message
    assert f"{files}:13: entities.orders.columns.customer_id.references" not in message, (
        "crm.customers.customer_id is declared, in a file with an error elsewhere"
    )
    assert (
        f"{database}:14: entities.customers.columns.order_id.references: references column 'order_idd'"
        in (message)
    )
    assert "shop_order.references" not in message
    assert message.count("\n  - ") == 3


def test_a_source_declared_twice_is_an_error(tmp_path: Path) -> None:
    first = _write(tmp_path, "a.yaml", REST_SOURCE)
    second = _write(tmp_path, "b.yaml", REST_SOURCE)
    assert f"{second}:1: source 'catalogue' is already declared in {first}" in _problems(tmp_path)


def test_bad_cron_and_time_zone_are_errors(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "a.yaml",
        REST_SOURCE.replace("entities:", "schedule: {cron: '61 * *', timezone: Mars/Olympus}\nentities:"),
    )
    message = _problems(tmp_path)
    assert f"{path}:6: schedule.cron: Value error, '61 * *' is not a cron expression" in message
    assert f"{path}:6: schedule.timezone: Value error, 'Mars/Olympus' is not an IANA time zone" in message


def test_invalid_yaml_and_empty_directory_are_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="No source declarations"):
        _load(tmp_path)
    _write(tmp_path, "shop.yaml", "source: [unclosed\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        _load(tmp_path)


def test_readiness_options_load_and_bad_ones_are_reported_at_their_lines(tmp_path: Path) -> None:
    options = 'stable_after_seconds: 30, ready_marker: "{name}.done"'
    ready = f'    file: {{path: "orders/*.csv", format: csv, {options}}}\n'
    _write(tmp_path, "a.yaml", FILES_SOURCE.replace('    file: {path: "orders/*.csv", format: csv}\n', ready))
    _write(tmp_path, "b.yaml", DATABASE_SOURCE)
    file = _load(tmp_path)["shop.orders"].entity.file  # type: ignore[attr-defined]
    assert (file.stable_after_seconds, file.ready_marker) == (30, "{name}.done")

    for bad, expected in [
        ("stable_after_seconds: -5", "greater than or equal to 0"),
        ('ready_marker: "done/{name}"', "no directory part"),
        ('ready_marker: "*.done"', "not a glob"),
        ('ready_marker: "{file}.done"', "knows only the placeholders {name}"),
        ('ready_marker: "{name}"', "must name a file other than the delivered one"),
    ]:
        path = _write(
            tmp_path,
            "a.yaml",
            FILES_SOURCE.replace(
                '    file: {path: "orders/*.csv", format: csv}\n',
                f'    file: {{path: "orders/*.csv", format: csv, {bad}}}\n',
            ),
        )
        message = _problems(tmp_path)
        assert f"{path}:9: entities.orders.file." in message and expected in message, message


def test_an_unset_secret_is_a_warning_and_the_other_sources_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One source's missing secret must not stop the code location: its assets fail when they run, naming
    the variable (resolved at the moment of use), every other source loads."""
    database = _write(tmp_path, "b.yaml", DATABASE_SOURCE)
    _write(tmp_path, "c.yaml", REST_SOURCE)
    with caplog.at_level("WARNING"):
        items = _load(tmp_path, {"CATALOGUE_TOKEN": "t"})
    assert {"crm.customers", "catalogue.products"} <= set(items)
    warning = f"{database}:4: secret ${{CRM_PASSWORD}} refers to environment variable CRM_PASSWORD, which"
    assert f"{warning} is not set" in caplog.text
