"""A one-entity platform (files source `acme.orders`, raw + staged assets, both contract checks and a
downstream asset) materialized in process on the warehouse of `warehouse_settings`: what the quarantine and
incremental-staging tests deliver files to and read the staged table and `ops.quarantine` back from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Source
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from platform_assets.factories.raw_assets import build_raw_asset
from platform_assets.factories.staged_assets import build_contract_checks, build_staged_asset
from platform_assets.keys import STAGED_SCHEMA, staged_key, staged_table
from platform_assets.quality.quarantine import QUARANTINE_COLUMNS, QUARANTINE_SCHEMA, QUARANTINE_TABLE
from resources.environment import PlatformSettings, build_resources
from resources.warehouses.base import Warehouse

HEADER = "order_id,email,code,status,amount,qty,note,nickname"
STAGED = staged_key("acme", "orders")
DOWNSTREAM = dg.AssetKey(["downstream_of_orders"])


def _source(root: Path, max_bad_fraction: float = 0.25) -> CatalogEntity:
    source = Source.model_validate(
        {
            "source": "acme",
            "connection": {"kind": "files", "root": str(root)},
            "entities": {
                "orders": {
                    "file": {"format": "csv", "path": "orders/*.csv"},
                    "primary_key": ["order_id"],
                    "unique": [["email", "code"]],
                    "max_bad_fraction": max_bad_fraction,
                    "columns": {
                        "order_id": {"type": "integer"},
                        "email": {"type": "string", "regex": r"[^@\s]+@[^@\s]+\.[a-z]+", "max_length": 40},
                        "code": {"type": "string", "min_length": 3, "max_length": 5},
                        "status": {
                            "type": "string",
                            "nullable": False,
                            "allowed_values": ["paid", "shipped"],
                        },
                        "amount": {"type": "double", "min": 0, "max": 1000},
                        "qty": {"type": "integer"},
                        "note": {"type": "string", "check": "quality_rule_checks.is_upper"},
                        "nickname": {"type": "string", "min_length": 2, "severity": "warn"},
                    },
                }
            },
        }
    )
    return CatalogEntity(source, "orders", source.entities["orders"])


def good_row(i: int) -> str:
    return f"{i},user{i}@shop.example,C{i:02d},paid,{i}.5,{i},OK,nick{i}"


@dataclass
class MiniPlatform:
    root: Path
    settings: PlatformSettings
    instance: dg.DagsterInstance
    warehouse: Warehouse
    downstream_runs: list[str]

    def deliver(self, name: str, lines: list[str]) -> None:
        orders = self.root / "orders"
        orders.mkdir(parents=True, exist_ok=True)
        (orders / name).write_text("\n".join([HEADER, *lines]) + "\n")

    def materialize(self, max_bad_fraction: float = 0.25) -> dg.ExecuteInProcessResult:
        job = self.definitions(max_bad_fraction).resolve_implicit_global_asset_job_def()
        return job.execute_in_process(instance=self.instance, raise_on_error=False)

    def definitions(self, max_bad_fraction: float = 0.25) -> dg.Definitions:
        item = _source(self.root, max_bad_fraction)

        @dg.asset(key=DOWNSTREAM, deps=[STAGED])
        def downstream(context) -> None:
            self.downstream_runs.append(context.run.run_id)

        return dg.Definitions(
            assets=[build_raw_asset(item), build_staged_asset(item, self.warehouse.kind), downstream],
            asset_checks=build_contract_checks(item),
            resources=build_resources(self.settings, DBT_PROJECT_DIR),
        )

    def staged(self, columns: str) -> list[tuple]:
        return self.warehouse.query(f"SELECT {columns} FROM {self._staged_table()} ORDER BY order_id")

    def drop_staged(self) -> None:
        """Drop the staged table: the next staging run must rebuild it in full."""
        self.warehouse.query(f"DROP TABLE {self._staged_table()}")

    def _staged_table(self) -> str:
        return self.warehouse.table_ref(STAGED_SCHEMA, staged_table("acme", "orders"))

    def quarantine(self) -> list[dict]:
        if QUARANTINE_TABLE not in self.warehouse.tables(QUARANTINE_SCHEMA):
            return []
        table = self.warehouse.table_ref(QUARANTINE_SCHEMA, QUARANTINE_TABLE)
        quote = self.warehouse.quote
        names = list(QUARANTINE_COLUMNS)
        rows = self.warehouse.query(f"SELECT {', '.join(quote(n) for n in names)} FROM {table}")
        return [dict(zip(names, row, strict=True)) for row in rows]
