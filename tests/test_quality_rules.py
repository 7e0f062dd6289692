"""The catalog's quality rules, compiled twice: to DuckDB SQL in the staging query (what is quarantined) and
to Pandera (what the checks report); both name each failure the same way (`column: rule`), and a rule the
platform cannot enforce is refused when the catalog loads, naming the column."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Column, Entity, Source
from platform_assets.catalog.rules import CatalogRuleError, resolve_checks, unique_keys
from platform_assets.factories.staged_assets import build_contract_checks
from platform_assets.keys import STAGED_SCHEMA, staged_table
from platform_assets.quality.contract_validation import validate_staged_table
from platform_assets.quality.quarantine import QUARANTINE_COLUMNS, StagingSplit
from platform_assets.staging.sql import staging_select
from resources.landing.zone import Lineage, write_parquet
from resources.warehouses.duckdb_file_rows import StagingDatabase
from resources.warehouses.duckdb_warehouse import DuckDBWarehouse

LINEAGE = Lineage(source="acme.users", extracted_at=datetime(2026, 1, 2, tzinfo=UTC), run_id="extract-1")
COLUMNS = {
    "user_id": {"type": "integer"},
    "email": {"type": "string", "nullable": False, "regex": r"[a-z]+@[a-z]+\.com"},
    "handle": {"type": "string", "min_length": 2, "max_length": 4},
    "age": {"type": "integer", "min": 0, "max": 130},
    "tier": {"type": "string", "allowed_values": ["free", "pro"]},
    "shout": {"type": "string", "check": "quality_rule_checks.is_upper"},
    "bio": {"type": "string", "max_length": 5, "severity": "warn", "unique": True},
}


def _item(columns: dict = COLUMNS, **entity: object) -> CatalogEntity:
    source = Source.model_validate(
        {
            "source": "acme",
            "connection": {"kind": "files", "root": "/deliveries"},
            "entities": {
                "users": {
                    "file": {"format": "csv", "path": "*.csv"},
                    "primary_key": ["user_id"],
                    "columns": columns,
                    **entity,
                }
            },
        }
    )
    return CatalogEntity(source, "users", source.entities["users"])


ROWS = {
    "user_id": ["1", "2", "3", "4", "5", "6", "7", "8", "9"],
    "email": ["a@b.com", "A@b.com", "c@d.com", None, "e@f.com", "g@h.com", "i@j.com", "k@l.com", "m@n.com"],
    "handle": ["ab", "ab", "a", "abcde", "abc", "abc", "abc", "abc", "abc"],
    "age": ["30", "30", "30", "30", "-1", "old", "30", "30", "30"],
    "tier": ["free", "pro", "pro", "pro", "pro", "pro", "gold", "pro", "pro"],
    "shout": ["HI", "HI", "HI", "HI", "HI", "HI", "HI", "quiet", None],
    "bio": [None, None, None, None, None, None, None, "toolong", "toolong"],
}
EXPECTED = {
    "email: regex": 1,
    "handle: min_length": 1,
    "email: nullable": 1,
    "handle: max_length": 1,
    "age: min": 1,
    "age: type": 1,
    "tier: allowed_values": 1,
    "shout: check": 1,
}


def _land(tmp_path: Path, rows: dict[str, list[str | None]]) -> Path:
    count = len(next(iter(rows.values())))
    batch = pa.RecordBatch.from_pydict(
        {
            **{name: pa.array(values, pa.string()) for name, values in rows.items()},
            "_file": pa.array(["users.csv"] * count),
            "_record": pa.array(range(2, count + 2), pa.int64()),
        }
    )
    landed = write_parquet(tmp_path / "landed.parquet", [batch], LINEAGE)
    assert landed is not None
    return landed.path


def _split(tmp_path: Path, item: CatalogEntity, batch_rows: int = 2) -> StagingSplit:
    landed = _land(tmp_path, ROWS)
    select = staging_select(item.entity, [landed], {*ROWS, "_file", "_record"}, "run-1")
    checks = resolve_checks("acme", "users", item.entity)
    database = StagingDatabase(tmp_path / "scratch.duckdb")
    return StagingSplit(
        select, item.entity, checks, database, ("staged", "users"), spill_dir=tmp_path, batch_rows=batch_rows
    )


def test_every_error_rule_is_compiled_to_sql_and_custom_checks_run_batch_by_batch(tmp_path: Path) -> None:
    split = _split(tmp_path, _item())
    summary = split.summary()
    assert summary.total == 9
    assert summary.bad == 7, "user 4 breaks two rules, user 9's NULL shout is not the check's business"
    assert dict(summary.by_rule) == EXPECTED
    quarantined = split.quarantine_rows("staged/acme/users", "run-1").read_all()
    assert quarantined.num_rows == 8
    assert quarantined.column_names == list(QUARANTINE_COLUMNS)
    staged = pa.Table.from_batches(list(split.staged_rows()))
    assert sorted(staged.column("user_id").to_pylist()) == [1, 9]
    assert "_violations" not in staged.column_names
    assert not (tmp_path / "scratch.duckdb").exists(), "the scratch database goes with the staged stream"


def test_pandera_schemas_name_failures_like_the_quarantine(tmp_path: Path) -> None:
    """The same rows, loaded as they are (no quarantine): the error check finds what staging would have
    quarantined, the warn check only the warn rules (bio: max_length, and bio's `unique`)."""
    item = _item()
    landed = _land(tmp_path, ROWS)
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    select = staging_select(item.entity, [landed], {*ROWS, "_file", "_record"}, "run-1")
    with warehouse.connection() as con:
        con.execute(f"CREATE SCHEMA {STAGED_SCHEMA}")
        con.execute(f"CREATE TABLE {STAGED_SCHEMA}.{staged_table('acme', 'users')} AS {select}")

    errors = validate_staged_table(warehouse, item, batch_rows=4)
    assert dict(errors.counts) == EXPECTED
    typed = next(v for v in errors.examples if v.rule == "type")
    assert (typed.column, typed.value, typed.key, typed.source_record) == (
        "age",
        "age=old",
        {"user_id": "6"},
        7,
    )

    warnings = validate_staged_table(warehouse, item, batch_rows=4, severity="warn")
    assert dict(warnings.counts) == {"bio: max_length": 2, "bio: unique": 2}
    assert warnings.rows_checked == 9


def test_a_hand_written_pandera_model_joins_the_error_check(tmp_path: Path) -> None:
    item = _item(pandera_model="quality_rule_checks.AdultUsers")
    landed = _land(tmp_path, ROWS)
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    select = staging_select(item.entity, [landed], {*ROWS, "_file", "_record"}, "run-1")
    with warehouse.connection() as con:
        con.execute(f"CREATE SCHEMA {STAGED_SCHEMA}")
        con.execute(f"CREATE TABLE {STAGED_SCHEMA}.{staged_table('acme', 'users')} AS {select}")
    errors = validate_staged_table(warehouse, item, batch_rows=4)
    assert dict(errors.counts) == {**EXPECTED, "age: greater_than_or_equal_to(18)": 1}
    assert validate_staged_table(warehouse, item, batch_rows=4, severity="warn").counts == {
        "bio: max_length": 2,
        "bio: unique": 2,
    }, "the model is part of the error check only"

    with pytest.raises(CatalogRuleError, match=r"acme\.users: pandera_model 'quality_rule_checks\.is_upper'"):
        build_contract_checks(_item(pandera_model="quality_rule_checks.is_upper"))


def test_unique_keys_by_severity() -> None:
    item = _item(unique=[["email", "handle"]])
    assert unique_keys(item.entity, "error") == [["user_id"], ["email", "handle"]]
    assert unique_keys(item.entity, "warn") == [["bio"]]


def test_a_custom_check_that_does_not_import_is_named_by_its_column() -> None:
    for path, expected in [
        ("no_such_module.check", "acme.users.shout: check 'no_such_module.check': module 'no_such_module'"),
        ("quality_rule_checks.missing", "module 'quality_rule_checks' has no attribute 'missing'"),
        ("quality_rule_checks.NOT_A_FUNCTION", "is a int, not a function"),
    ]:
        item = _item({"user_id": {"type": "integer"}, "shout": {"type": "string", "check": path}})
        with pytest.raises(CatalogRuleError, match=expected.replace("(", r"\(").replace(".", r"\.")):
            resolve_checks("acme", "users", item.entity)


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ({"type": "integer", "regex": "[0-9]+"}, "regex do(es) not apply to a integer column"),
        ({"type": "string", "min": 1}, "min do(es) not apply to a string column"),
        ({"type": "string", "min_length": 5, "max_length": 2}, "min_length 5 is greater than max_length 2"),
        ({"type": "double", "min": 5, "max": 2}, "min 5.0 is greater than max 2.0"),
        ({"type": "string", "regex": "(a"}, "does not compile"),
        ({"type": "string", "regex": "(?=a)a"}, "is not RE2 syntax"),
        ({"type": "string", "severity": "fatal"}, "Input should be 'error' or 'warn'"),
        ({"type": "string", "check": "not_dotted"}, "String should match pattern"),
    ],
)
def test_rules_that_cannot_be_enforced_are_refused_by_the_catalog(column: dict, message: str) -> None:
    with pytest.raises(ValidationError) as error:
        Column.model_validate(column)
    assert message in str(error.value)


def test_primary_key_columns_are_always_error_severity() -> None:
    entity = Entity.model_validate(
        {
            "file": {"format": "csv", "path": "*.csv"},
            "primary_key": ["id"],
            "columns": {"id": {"type": "integer", "severity": "warn"}},
        }
    )
    assert unique_keys(entity, "error") == [["id"]]
    assert unique_keys(entity, "warn") == []
