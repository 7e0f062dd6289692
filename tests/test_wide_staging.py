"""A wide delivery (500 columns x 100k rows of CSV) stages through a real Dagster materialization on
DuckDB: staging's memory limit and threads follow the delivery's width (`staging_memory`), so DuckDB
spills instead of failing with an OutOfMemoryException at the quarantine split."""

import os
from pathlib import Path

import dagster as dg

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Source
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from platform_assets.factories.raw_assets import build_raw_asset
from platform_assets.factories.staged_assets import build_staged_asset
from platform_assets.keys import STAGED_SCHEMA, staged_table
from resources.environment import PlatformSettings, build_resources
from resources.landing.query import STAGING_MEMORY_CEILING_VAR, StagingMemory, staging_memory

COLUMNS = 500
ROWS = int(os.environ.get("WIDE_ROWS", "100000"))  # WIDE_ROWS=500000: memory stays bounded past row groups


def write_wide_csv(path: Path, columns: int, rows: int) -> None:
    """`id` then `c1..c{columns-1}`, alternately integers and short strings, written in blocks; every
    1000th row's `c1` is no integer (a row for the quarantine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ["id", *(f"c{i}" for i in range(1, columns))]
    values = ",".join(str(i) if i % 2 else f"v{i}" for i in range(1, columns))
    bad = values.replace("1,", "x,", 1)
    with path.open("w") as out:
        out.write(",".join(names) + "\n")
        for start in range(0, rows, 10_000):
            out.write(
                "".join(
                    f"{row},{bad if row % 1000 == 0 else values}\n"
                    for row in range(start, min(rows, start + 10_000))
                )
            )


def test_a_500_column_delivery_of_100k_rows_stages(tmp_path: Path) -> None:
    root = tmp_path / "deliveries"
    write_wide_csv(root / "wide" / "1.csv", COLUMNS, ROWS)
    columns = {"id": {"type": "integer"}} | {
        f"c{i}": {"type": "integer" if i % 2 else "string"} for i in range(1, COLUMNS)
    }
    source = Source.model_validate(
        {
            "source": "wide",
            "connection": {"kind": "files", "root": str(root)},
            "entities": {
                "rows": {
                    "file": {"format": "csv", "path": "wide/*.csv"},
                    "primary_key": ["id"],
                    "columns": columns,
                }
            },
        }
    )
    item = CatalogEntity(source, "rows", source.entities["rows"])
    settings = PlatformSettings.local(tmp_path / "data")
    definitions = dg.Definitions(
        assets=[build_raw_asset(item), build_staged_asset(item, "test")],
        resources=build_resources(settings, DBT_PROJECT_DIR),
    )
    with dg.instance_for_test() as instance:
        result = definitions.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, raise_on_error=False
        )
    failures = [event.message for event in result.all_events if event.is_step_failure]
    assert result.success, failures
    warehouse = build_resources(settings, DBT_PROJECT_DIR)["warehouse"]
    table = warehouse.table_ref(STAGED_SCHEMA, staged_table("wide", "rows"))
    ((count, width),) = warehouse.query(f"SELECT count(*), max(c{COLUMNS - 1}) FROM {table}")
    assert (count, width) == (ROWS - ROWS // 1000, COLUMNS - 1)
    quarantine = warehouse.table_ref("ops", "quarantine")
    assert warehouse.query(f"SELECT count(*), min(rule) FROM {quarantine}") == [(ROWS // 1000, "type")]


def test_staging_memory_follows_the_width_within_the_ceiling() -> None:
    assert staging_memory(1.0, 20) == StagingMemory("256MB")
    assert staging_memory(0.5, 20) == StagingMemory("128MB")
    assert staging_memory(1.0, 500, {}) == StagingMemory("628MB", threads=1)
    assert staging_memory(0.25, 500, {}) == StagingMemory("628MB", threads=1)  # healing cannot go below
    assert staging_memory(1.0, 500, {STAGING_MEMORY_CEILING_VAR: "512"}) == StagingMemory("512MB", threads=1)
