"""The catalog loader rejects a bad declaration at load time, naming the file, the line and the fix, and
reports every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from platform_assets.catalog_loader import CATALOG_DIR, CatalogError, load_catalog

VALID = """\
source: shop
entities:
  orders:
    format: csv
    path: files/orders/*.csv
    primary_key: [order_id]
    columns:
      order_id: {type: integer, nullable: false}
      amount: {type: double, min: 0}
"""


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_shipped_catalog_declares_the_shop_orders() -> None:
    entities = {(item.source_name, item.name) for item in load_catalog(CATALOG_DIR)}
    assert ("shop", "orders") in entities


def test_valid_catalog_loads(tmp_path: Path) -> None:
    _write(tmp_path, "shop.yaml", VALID)
    (item,) = load_catalog(tmp_path)
    assert item.source_name == "shop"
    assert item.entity.primary_key == ["order_id"]


def test_every_problem_in_every_file_is_reported_with_file_and_line(tmp_path: Path) -> None:
    broken = _write(
        tmp_path,
        "a_broken.yaml",
        VALID.replace("    path:", "    pth:").replace("type: double", "type: money"),
    )
    bad_name = _write(tmp_path, "b_bad_name.yaml", VALID.replace("source: shop", "source: Shop-EU"))
    with pytest.raises(CatalogError) as raised:
        load_catalog(tmp_path)
    message = str(raised.value)
    assert f"{broken}:5: entities.orders.pth: Extra inputs are not permitted (unknown key" in message
    assert f"{broken}:9: entities.orders.columns.amount.type:" in message
    assert "expected one of: 'integer', 'double', 'string', 'boolean', 'date' or 'timestamp'" in message
    assert f"{bad_name}:1: source: String should match pattern" in message
    assert "lower-case letters, digits and underscores" in message


def test_primary_key_must_name_a_declared_column(tmp_path: Path) -> None:
    _write(tmp_path, "shop.yaml", VALID.replace("primary_key: [order_id]", "primary_key: [id]"))
    with pytest.raises(CatalogError, match=r"primary_key names undeclared column\(s\) \['id'\]"):
        load_catalog(tmp_path)


def test_a_source_declared_twice_is_an_error(tmp_path: Path) -> None:
    first = _write(tmp_path, "a.yaml", VALID)
    second = _write(tmp_path, "b.yaml", VALID)
    with pytest.raises(CatalogError) as raised:
        load_catalog(tmp_path)
    assert f"{second}: source 'shop' is already declared in {first}" in str(raised.value)


def test_invalid_yaml_and_empty_directory_are_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="No source declarations"):
        load_catalog(tmp_path)
    _write(tmp_path, "shop.yaml", "source: [unclosed\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(tmp_path)
