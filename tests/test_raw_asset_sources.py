"""The raw assets against real sources, through real Dagster materializations: the extraction state (file
ledger, watermark) lives in each materialization's metadata and the next one starts from it; only committed
landings advance it; failed steps leave it (and the landing) as it was; REST extractions resume after the
last landed page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from fixtures.postgres_server import PostgresCluster
from google.cloud import storage
from rest_test_server import (
    PAGE_SIZE,
    Recorded,
    Reply,
    ScriptedServer,
    items,
    json_reply,
    paged_items,
    requested_start,
)

import platform_assets.ingestion.rest as rest_ingestion
from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Source
from platform_assets.factories.raw_assets import build_raw_asset
from resources.landing.delivered import read_landed
from resources.landing.ledger import LEDGER_FILE, FileLedger
from resources.landing.zone import (
    CHECKPOINT_FILE,
    EXTRACTED_AT_COLUMN,
    INFLIGHT_DIR,
    LandingZone,
    QuarantineFile,
)

# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """One Dagster instance per test: consecutive materializations see each other's state, nothing else."""
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def landing(tmp_path: Path) -> LandingZone:
    return LandingZone(root=str(tmp_path / "landing"))


def catalog_entity(declaration: dict[str, Any]) -> CatalogEntity:
    """The (only) entity of a source declared in code, as the catalog loader would hand it over."""
    source = Source.model_validate(declaration)
    ((name, entity),) = source.entities.items()
    return CatalogEntity(source, name, entity)


class RawAsset:
    """One raw asset, materialized again and again on the same instance and landing zone."""

    def __init__(self, item: CatalogEntity, landing: LandingZone, instance: dg.DagsterInstance) -> None:
        self.item = item
        self.asset = build_raw_asset(item)
        self.landing = landing
        self.instance = instance

    def materialize(self, batch_rows: int | None = None, **config: Any) -> dg.ExecuteInProcessResult:
        """`config`: more of the raw asset's run config (`RawConfig`), e.g. a backfill's range."""
        op_config = {**({"batch_rows": batch_rows} if batch_rows else {}), **config}
        run_config = {"ops": {self.asset.op.name: {"config": op_config}}} if op_config else None
        return dg.materialize(
            [self.asset],
            resources={"landing": self.landing},
            instance=self.instance,
            run_config=run_config,
            raise_on_error=False,
        )

    def succeed(self, batch_rows: int | None = None, **config: Any) -> dict[str, Any]:
        """Materialize; the materialization's metadata values (fails the test if the step failed)."""
        result = self.materialize(batch_rows, **config)
        assert result.success, step_error(result)
        (event,) = result.get_asset_materialization_events()
        return {name: value.value for name, value in event.materialization.metadata.items()}

    def fail(self, batch_rows: int | None = None, **config: Any) -> str:
        """Materialize, expecting the step to fail; its error message, causes included."""
        result = self.materialize(batch_rows, **config)
        assert not result.success
        assert result.get_asset_materialization_events() == []
        return step_error(result)

    def recorded_state(self) -> dict[str, Any] | None:
        """The extraction state of the latest materialization the instance recorded."""
        event = self.instance.get_latest_materialization_event(self.asset.key)
        if event is None or event.asset_materialization is None:
            return None
        return event.asset_materialization.metadata["extraction_state"].value

    def committed(self) -> list[Path]:
        return self.landing.committed_files(self.item.source_name, self.item.name)

    def ledger(self) -> dict[str, dict[str, Any]]:
        """The processed-file ledger as the latest run left it (`resources/landing/ledger.py`)."""
        state_dir = self.landing.state_dir(self.item.source_name, self.item.name)
        return FileLedger(state_dir / LEDGER_FILE).entries()

    def inflight_dir(self) -> Path:
        return self.landing.entity_dir(self.item.source_name, self.item.name) / INFLIGHT_DIR


def step_error(result: dg.ExecuteInProcessResult) -> str:
    """The failed step's error and its causes (the extractor's own exception is Dagster's error's cause)."""
    messages: list[str] = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None:
                messages.append(error.message)
                error = error.cause
    return "\n".join(messages)


def read_rows(paths: list[Path] | list[str]) -> list[dict[str, Any]]:
    return [row for path in paths for row in read_landed([Path(path)]).to_pylist()]


def latest_by_key(rows: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    """The rows de-duplicated by key, the latest extraction winning: what downstream layers keep."""
    latest: dict[Any, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda row: row[EXTRACTED_AT_COLUMN]):
        latest[row[key]] = row
    return latest


# ------------------------------------------------------------------------------------------- PostgreSQL

T0 = datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=UTC)
"""Timestamps with microseconds, so that the watermark's round trip through Dagster metadata must be exact."""


def database_name(url: str) -> str:
    database = sa.make_url(url).database
    assert database is not None
    return database


def customers_entity(url: str, *, incremental: bool = True, **connection: Any) -> CatalogEntity:
    table: dict[str, Any] = {"table": "customers"}
    if incremental:
        # lookback 0: these tests pin the strict filter, each row version landed once (a lookback re-lands
        # the window on purpose, and staging de-duplicates it)
        table["incremental"] = {"mode": "timestamp", "cursor_column": "updated_at", "lookback_seconds": 0}
    return catalog_entity(
        {
            "source": "shop_db",
            "connection": {"kind": "database", "url": url, **connection},
            "entities": {
                "customers": {
                    "table": table,
                    "primary_key": ["customer_id"],
                    "columns": {
                        "customer_id": {"type": "integer", "nullable": False},
                        "name": {"type": "string"},
                        "updated_at": {"type": "timestamp", "nullable": False},
                    },
                }
            },
        }
    )


def at(seconds: float) -> str:
    return f"'{(T0 + timedelta(seconds=seconds)).isoformat()}'"


@pytest.fixture
def customers(postgres_server: PostgresCluster, postgres_database: str) -> str:
    """A customers table whose two latest rows share their `updated_at` (ids 4 and 5); id 6 is older."""
    postgres_server.execute(
        database_name(postgres_database),
        f"""
        CREATE TABLE customers (customer_id integer PRIMARY KEY, name text, updated_at timestamptz NOT NULL);
        INSERT INTO customers VALUES
            (1, 'ada', {at(0)}), (2, 'bob', {at(1)}), (3, 'cy', {at(2)}),
            (4, 'dee', {at(10)}), (5, 'eve', {at(10)}), (6, 'fay', {at(5)});
        """,
    )
    return postgres_database


def source_table(postgres_server: PostgresCluster, url: str) -> dict[int, dict[str, Any]]:
    connection = psycopg2.connect(postgres_server.dsn(database_name(url)))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT customer_id, name, updated_at FROM customers")
            return {
                key: {"customer_id": key, "name": name, "updated_at": updated_at}
                for key, name, updated_at in cursor.fetchall()
            }
    finally:
        connection.close()


def without_lineage(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in ("customer_id", "name", "updated_at")}


def test_incremental_table_lands_each_new_row_version_once_across_materializations(
    postgres_server: PostgresCluster,
    customers: str,
    landing: LandingZone,
    instance: dg.DagsterInstance,
) -> None:
    raw = RawAsset(customers_entity(customers), landing, instance)

    first = raw.succeed()
    assert first["dagster/row_count"] == 6
    assert first["load_kind"] == "append"
    assert first["watermark_before"] is None
    assert first["watermark_after"] == {
        "cursor_column": "updated_at",
        "cursor": (T0 + timedelta(seconds=10)).isoformat(timespec="microseconds"),
        "tie_breaker_columns": ["customer_id"],
        "tie_breaker": [5],
    }
    assert first["extraction_state"] == {"watermark": first["watermark_after"]}

    postgres_server.execute(
        database_name(customers),
        f"""
        UPDATE customers SET name = 'fay 2', updated_at = {at(10)} WHERE customer_id = 6;
        INSERT INTO customers VALUES (7, 'gus', {at(10)}), (8, 'hal', {at(20)});
        UPDATE customers SET name = 'bob 2', updated_at = {at(15)} WHERE customer_id = 2;
        """,
    )
    second = raw.succeed()
    (second_file,) = second["landed_files"]
    # 6 and 7 share the watermark's timestamp with a greater key: past the watermark, so landed; 4 and 5,
    # at the watermark itself, are not landed again.
    assert sorted(row["customer_id"] for row in read_rows([second_file])) == [2, 6, 7, 8]
    assert second["dagster/row_count"] == 4
    assert second["watermark_before"] == first["watermark_after"]
    assert second["watermark_after"] == {
        **first["watermark_after"],
        "cursor": (T0 + timedelta(seconds=20)).isoformat(timespec="microseconds"),
        "tie_breaker": [8],
    }

    third = raw.succeed()
    assert (third["dagster/row_count"], third["landed_files"]) == (0, [])
    assert third["watermark_before"] == third["watermark_after"] == second["watermark_after"]
    assert raw.recorded_state() == {"watermark": second["watermark_after"]}

    landed = latest_by_key(read_rows(raw.committed()), "customer_id")
    assert {key: without_lineage(row) for key, row in landed.items()} == source_table(
        postgres_server, customers
    )


def test_full_table_lands_the_whole_table_as_a_snapshot_every_time(
    postgres_server: PostgresCluster,
    customers: str,
    landing: LandingZone,
    instance: dg.DagsterInstance,
) -> None:
    raw = RawAsset(customers_entity(customers, incremental=False), landing, instance)

    first = raw.succeed()
    postgres_server.execute(
        database_name(customers),
        f"INSERT INTO customers VALUES (7, 'gus', {at(30)}); DELETE FROM customers WHERE customer_id = 1",
    )
    second = raw.succeed()

    for metadata in (first, second):
        assert metadata["load_kind"] == "snapshot"
        assert metadata["extraction_state"] == {}
        assert "watermark_before" not in metadata and "watermark_after" not in metadata
    assert first["dagster/row_count"] == 6
    assert second["dagster/row_count"] == 6
    (latest_file,) = second["landed_files"]
    assert {row["customer_id"]: without_lineage(row) for row in read_rows([latest_file])} == source_table(
        postgres_server, customers
    )
    assert len(raw.committed()) == 2


class HeldLock:
    """An ACCESS EXCLUSIVE lock on the table, held by another session until released: the extraction's
    SELECT waits for it until its statement timeout cancels it."""

    def __init__(self, postgres_server: PostgresCluster, url: str) -> None:
        self.connection = psycopg2.connect(postgres_server.dsn(database_name(url)))

    def __enter__(self) -> HeldLock:
        with self.connection.cursor() as cursor:
            cursor.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        return self

    def __exit__(self, *_: object) -> None:
        self.connection.rollback()
        self.connection.close()


@pytest.mark.parametrize("failure", ["table_renamed", "statement_timeout"])
def test_a_failed_database_extraction_keeps_the_previous_watermark_and_the_next_run_resumes_from_it(
    postgres_server: PostgresCluster,
    customers: str,
    landing: LandingZone,
    instance: dg.DagsterInstance,
    failure: str,
) -> None:
    raw = RawAsset(customers_entity(customers, statement_timeout_seconds=0.5), landing, instance)
    first = raw.succeed()
    database = database_name(customers)
    postgres_server.execute(
        database,
        f"INSERT INTO customers VALUES (7, 'gus', {at(20)}); "
        f"UPDATE customers SET name = 'ada 2', updated_at = {at(21)} WHERE customer_id = 1",
    )

    if failure == "table_renamed":
        postgres_server.execute(database, "ALTER TABLE customers RENAME TO customers_moved")
        error = raw.fail()
        assert "Table 'customers' not found" in error and "customers_moved" in error
        postgres_server.execute(database, "ALTER TABLE customers_moved RENAME TO customers")
    else:
        with HeldLock(postgres_server, customers):
            error = raw.fail()
        assert "cancelled after statement_timeout_seconds=0.5" in error

    assert raw.recorded_state() == {"watermark": first["watermark_after"]}
    assert len(raw.committed()) == 1
    assert list(raw.inflight_dir().glob("*.parquet")) == []

    resumed = raw.succeed()
    assert resumed["watermark_before"] == first["watermark_after"]
    assert sorted(row["customer_id"] for row in read_rows(resumed["landed_files"])) == [1, 7]
    landed = latest_by_key(read_rows(raw.committed()), "customer_id")
    assert {key: without_lineage(row) for key, row in landed.items()} == source_table(
        postgres_server, customers
    )


# ------------------------------------------------------------------------------------------------ files

ORDER_COLUMNS = {
    "order_id": {"type": "integer", "nullable": False},
    "amount": {"type": "double"},
}


def orders_entity(root: str, on_malformed: str = "fail", fmt: str = "csv") -> CatalogEntity:
    return catalog_entity(
        {
            "source": "shop",
            "connection": {"kind": "files", "root": root},
            "entities": {
                "orders": {
                    "file": {"path": f"orders/*.{fmt}", "format": fmt},
                    "on_malformed": on_malformed,
                    "primary_key": ["order_id"],
                    "columns": ORDER_COLUMNS,
                }
            },
        }
    )


def landed_orders(paths: list[Path] | list[str]) -> list[tuple[str, str, str]]:
    """(file, order_id, amount) of every landed row, sorted."""
    return sorted((row["_file"], row["order_id"], row["amount"]) for row in read_rows(paths))


def test_gcs_objects_are_each_landed_once_and_again_only_when_their_bytes_change(
    gcs_client: storage.Client, gcs_bucket: str, landing: LandingZone, instance: dg.DagsterInstance
) -> None:
    bucket = gcs_client.bucket(gcs_bucket)

    def upload(name: str, data: bytes) -> None:
        bucket.blob(f"drops/{name}").upload_from_string(data)

    upload("orders/a.csv", b"order_id,amount\n1,10.0\n2,20.0\n")
    upload("orders/b.csv", b"order_id,amount\n3,30.0\n")
    upload("orders/notes.txt", b"not an order file\n")
    upload("other/c.csv", b"order_id,amount\n99,0\n")
    raw = RawAsset(orders_entity(f"gs://{gcs_bucket}/drops"), landing, instance)

    first = raw.succeed()
    assert first["files_landed_names"] == ["orders/a.csv", "orders/b.csv"]
    assert "dagster/row_count" not in first  # a copy's records are counted as staging parses them
    assert landed_orders(first["landed_files"]) == [
        ("orders/a.csv", "1", "10.0"),
        ("orders/a.csv", "2", "20.0"),
        ("orders/b.csv", "3", "30.0"),
    ]
    ledger = raw.ledger()
    assert sorted(ledger) == ["orders/a.csv", "orders/b.csv"]
    assert first["extraction_state"]["file_ledger"]["entries"] == 2, "the ledger is no longer in the event"
    assert first["ledger_delta"]["written"] == 2

    unchanged = raw.succeed()
    assert unchanged["files_landed"] == unchanged["dagster/row_count"] == 0
    assert unchanged["landed_files"] == []
    assert unchanged["extraction_state"] == first["extraction_state"]

    upload("orders/c.csv", b"order_id,amount\n4,40.0\n")  # new
    upload("orders/a.csv", b"order_id,amount\n1,11.0\n2,22.0\n")  # same size, other bytes
    upload("orders/b.csv", b"order_id,amount\n3,30.0\n")  # same bytes, new generation
    changed = raw.succeed()
    assert changed["files_landed_names"] == ["orders/a.csv", "orders/c.csv"]
    assert landed_orders(changed["landed_files"]) == [
        ("orders/a.csv", "1", "11.0"),
        ("orders/a.csv", "2", "22.0"),
        ("orders/c.csv", "4", "40.0"),
    ]
    changed_ledger = raw.ledger()
    assert changed["ledger_delta"]["written"] == 3, "the new file, the changed one, the new generation"
    assert changed_ledger["orders/b.csv"]["hash"] == ledger["orders/b.csv"]["hash"]
    assert changed_ledger["orders/b.csv"]["version"] != ledger["orders/b.csv"]["version"]
    assert changed_ledger["orders/a.csv"]["hash"] != ledger["orders/a.csv"]["hash"]

    bucket.blob("drops/orders/c.csv").delete()
    after_delete = raw.succeed()
    assert after_delete["files_landed"] == 0
    assert sorted(raw.ledger()) == ["orders/a.csv", "orders/b.csv"]
    assert after_delete["ledger_delta"] == {"written": 0, "dropped": 1, "paths": []}
    assert len(raw.committed()) == 4


def test_malformed_records_are_quarantined_with_file_and_line_and_the_valid_rows_land(
    tmp_path: Path, landing: LandingZone, instance: dg.DagsterInstance
) -> None:
    """Formats landing parses record by record (JSON Lines here) set malformed records aside as they land;
    a CSV delivery lands as its bytes and its malformed records are set aside by staging
    (`test_quarantine.py`)."""
    root = tmp_path / "sources"
    (root / "orders").mkdir(parents=True)
    (root / "orders" / "a.jsonl").write_text(
        '{"order_id": "1", "amount": "10.0"}\n{"order_id": "2",\n{"order_id": "3", "amount": "30.0"}\n'
    )
    (root / "orders" / "b.jsonl").write_text('[4\n{"order_id": "5", "amount": "50.0"}\n')
    raw = RawAsset(orders_entity(str(root), on_malformed="skip", fmt="jsonl"), landing, instance)

    metadata = raw.succeed()

    assert metadata["malformed_records"] == 2
    assert metadata["dagster/row_count"] == 3
    assert landed_orders(raw.committed()) == [
        ("orders/a.jsonl", "1", "10.0"),
        ("orders/a.jsonl", "3", "30.0"),
        ("orders/b.jsonl", "5", "50.0"),
    ]
    (quarantine,) = (Path(landing.root) / "_quarantine" / "shop" / "orders").glob("*.parquet")
    assert metadata["quarantine_file"] == str(quarantine)
    assert sorted((row["file"], row["line"], row["text"]) for row in read_rows([quarantine])) == [
        ("orders/a.jsonl", 2, '{"order_id": "2",'),
        ("orders/b.jsonl", 1, "[4"),
    ]
    assert sorted(raw.ledger()) == ["orders/a.jsonl", "orders/b.jsonl"]


def test_a_malformed_line_under_fail_commits_nothing_and_keeps_the_ledger_until_the_file_is_fixed(
    tmp_path: Path, landing: LandingZone, instance: dg.DagsterInstance
) -> None:
    orders = tmp_path / "sources" / "orders"
    orders.mkdir(parents=True)
    (orders / "a.jsonl").write_text('{"order_id": "1", "amount": "10.0"}\n')
    raw = RawAsset(orders_entity(str(tmp_path / "sources"), fmt="jsonl"), landing, instance)
    first = raw.succeed()

    (orders / "b.jsonl").write_text('{"order_id": "2", "amount": "20.0"}\n')
    (orders / "c.jsonl").write_text('{"order_id": "3", "amount": "30.0"}\n{"order_id": "4",\n')
    error = raw.fail()

    assert f"{orders / 'c.jsonl'}: line 2: not valid JSON" in error
    assert raw.committed() == [Path(path) for path in first["landed_files"]]
    assert raw.recorded_state() == first["extraction_state"]
    assert not (Path(landing.root) / "_quarantine").exists()

    (orders / "c.jsonl").write_text(
        '{"order_id": "3", "amount": "30.0"}\n{"order_id": "4", "amount": "40.0"}\n'
    )
    fixed = raw.succeed()
    assert fixed["files_landed_names"] == ["orders/b.jsonl", "orders/c.jsonl"]
    assert landed_orders(raw.committed()) == [
        ("orders/a.jsonl", "1", "10.0"),
        ("orders/b.jsonl", "2", "20.0"),
        ("orders/c.jsonl", "3", "30.0"),
        ("orders/c.jsonl", "4", "40.0"),
    ]


def test_files_read_by_a_failed_run_land_next_time_only_as_they_are_then(
    tmp_path: Path, landing: LandingZone, instance: dg.DagsterInstance
) -> None:
    """The failed run read a.jsonl and b.jsonl before failing on c.jsonl; then a is rewritten, b withdrawn
    and c fixed: the next run lands a's new version and c, nothing the failed run had read."""
    orders = tmp_path / "sources" / "orders"
    orders.mkdir(parents=True)
    (orders / "a.jsonl").write_text('{"order_id": "1", "amount": "10.0"}\n')
    (orders / "b.jsonl").write_text('{"order_id": "2", "amount": "20.0"}\n')
    (orders / "c.jsonl").write_text('{"order_id": "3",\n')
    raw = RawAsset(orders_entity(str(tmp_path / "sources"), fmt="jsonl"), landing, instance)
    raw.fail()

    (orders / "a.jsonl").write_text('{"order_id": "1", "amount": "11.0"}\n')
    (orders / "b.jsonl").unlink()
    (orders / "c.jsonl").write_text('{"order_id": "3", "amount": "30.0"}\n')
    fixed = raw.succeed()

    assert fixed["files_landed_names"] == ["orders/a.jsonl", "orders/c.jsonl"]
    assert landed_orders(raw.committed()) == [
        ("orders/a.jsonl", "1", "11.0"),
        ("orders/c.jsonl", "3", "30.0"),
    ]
    assert sorted(raw.ledger()) == ["orders/a.jsonl", "orders/c.jsonl"]


def test_a_failed_run_under_skip_leaves_no_quarantine_and_the_next_run_quarantines_each_record_once(
    tmp_path: Path, landing: LandingZone, instance: dg.DagsterInstance
) -> None:
    """Enough malformed lines that the quarantine has started writing when another file stops the run."""
    malformed = QuarantineFile.FLUSH_ROWS + 1
    orders = tmp_path / "sources" / "orders"
    orders.mkdir(parents=True)
    (orders / "a.jsonl").write_text(
        '{"order_id": "1",\n' * malformed + '{"order_id": "2", "amount": "20.0"}\n'
    )
    (orders / "b.jsonl").write_text(
        '{"order_id": "3", "_file": "x"}\n'
    )  # a lineage column's name: unreadable
    raw = RawAsset(
        orders_entity(str(tmp_path / "sources"), on_malformed="skip", fmt="jsonl"), landing, instance
    )
    quarantine_dir = landing.quarantine_dir("shop", "orders")

    assert "a name the platform keeps for lineage" in raw.fail()
    assert list(quarantine_dir.glob("*")) == []
    assert raw.committed() == []

    (orders / "b.jsonl").write_text('{"order_id": "3", "amount": "30.0"}\n')
    metadata = raw.succeed()
    assert metadata["malformed_records"] == malformed
    (quarantine,) = quarantine_dir.glob("*.parquet")
    assert pq.read_metadata(quarantine).num_rows == malformed
    assert landed_orders(raw.committed()) == [
        ("orders/a.jsonl", "2", "20.0"),
        ("orders/b.jsonl", "3", "30.0"),
    ]


# ------------------------------------------------------------------------------------------------- REST

RECORDS = items(23)
"""Five pages of five records, the last one short."""
NEWEST_FIRST = RECORDS[::-1]
"""As many APIs serve them: the greatest `updated_at` is on the first page."""
FAILING_PAGE = 3
INCREMENTAL = {"param": "since", "cursor_field": "updated_at"}


def rest_entity(base_url: str, **endpoint: Any) -> CatalogEntity:
    return catalog_entity(
        {
            "source": "shop_api",
            "connection": {"kind": "rest", "base_url": base_url},
            "entities": {
                "items": {
                    "endpoint": {
                        "path": "/items",
                        "record_path": "data",
                        "pagination": {
                            "kind": "cursor",
                            "cursor_path": "meta.next_cursor",
                            "cursor_param": "after",
                        },
                        **endpoint,
                    },
                    "primary_key": ["id"],
                    "columns": {
                        "id": {"type": "integer", "nullable": False},
                        "name": {"type": "string"},
                        "updated_at": {"type": "timestamp"},
                    },
                }
            },
        }
    )


def page_of(request: Recorded) -> int:
    return requested_start(request, "cursor") // PAGE_SIZE + 1


class FailsOnceAtPage:
    """Serves the records (newest first by default) by cursor, except that the first request for `page`
    gets `status` (a 400 is not retried; a 503 is, by the client)."""

    def __init__(self, page: int, records: list[dict[str, Any]] = NEWEST_FIRST, status: int = 400) -> None:
        self.serve = paged_items(records, "cursor")
        self.page = page
        self.status = status
        self.failed = False

    def __call__(self, request: Recorded) -> Reply:
        if page_of(request) == self.page and not self.failed:
            self.failed = True
            headers = {"Retry-After": "0"} if self.status == 503 else {}
            return json_reply({"error": "failing once"}, self.status, headers)
        return self.serve(request)


def test_a_failed_rest_extraction_resumes_after_its_last_landed_page(
    landing: LandingZone, instance: dg.DagsterInstance
) -> None:
    """One page per landed part (`batch_rows` = page size), so each page is checkpointed as it lands."""
    with ScriptedServer(FailsOnceAtPage(FAILING_PAGE)) as server:
        raw = RawAsset(rest_entity(server.base_url, incremental=INCREMENTAL), landing, instance)

        error = raw.fail(batch_rows=PAGE_SIZE)
        assert "400" in error
        checkpoint = json.loads((raw.inflight_dir() / CHECKPOINT_FILE).read_text())
        assert checkpoint["pages"] == FAILING_PAGE - 1
        assert len(list(raw.inflight_dir().glob("*.parquet"))) == FAILING_PAGE - 1
        assert raw.committed() == []
        first_attempt = len(server.requests)

        resumed = raw.succeed(batch_rows=PAGE_SIZE)

    assert [page_of(request) for request in server.requests[:first_attempt]] == [1, 2, 3]
    assert [page_of(request) for request in server.requests[first_attempt:]] == [3, 4, 5]
    assert all("since" not in request.query for request in server.requests)
    assert resumed["pages"] == 5
    assert resumed["dagster/row_count"] == len(RECORDS)
    # The greatest cursor was on page 1, landed by the failed attempt: carried over by the checkpoint.
    assert resumed["watermark_after"] == "2026-01-01 00:00:23"
    assert not (raw.inflight_dir() / CHECKPOINT_FILE).exists()
    landed = read_rows(raw.committed())
    assert sorted(int(row["id"]) for row in landed) == [record["id"] for record in RECORDS]
    assert sorted((row["_page"], row["_record"]) for row in landed) == [
        (page, record) for page in range(1, 6) for record in range(1, 6 if page < 5 else 4)
    ]


LONG_EXTRACTION_PAGES = 3_500
FAILED_AFTER_PAGES = 590


def test_a_rest_extraction_that_fails_after_590_of_3500_pages_resumes_at_page_591_whatever_batch_rows(
    landing: LandingZone, instance: dg.DagsterInstance
) -> None:
    """`batch_rows` (100,000) is far above the 2,950 records of the 590 pages fetched before the failure:
    the checkpoint must not wait for a full part. The pages are landed on the way out of the failed
    attempt, and the next one resumes at page 591."""
    records = items(LONG_EXTRACTION_PAGES * PAGE_SIZE)
    with ScriptedServer(FailsOnceAtPage(FAILED_AFTER_PAGES + 1, records)) as server:
        raw = RawAsset(rest_entity(server.base_url), landing, instance)
        assert "400" in raw.fail(batch_rows=100_000)
        checkpoint = json.loads((raw.inflight_dir() / CHECKPOINT_FILE).read_text())
        first_attempt = len(server.requests)
        resumed = raw.succeed(batch_rows=100_000)
    resumed_pages = [page_of(request) for request in server.requests[first_attempt:]]
    print(
        f"REST resume: failed at page {FAILED_AFTER_PAGES + 1} of {LONG_EXTRACTION_PAGES} with batch_rows "
        f"100000; checkpoint after page {checkpoint['pages']}; the next attempt fetched pages "
        f"{resumed_pages[0]}-{resumed_pages[-1]} ({len(resumed_pages)} requests)"
    )
    assert checkpoint["pages"] == FAILED_AFTER_PAGES
    assert resumed_pages == list(range(FAILED_AFTER_PAGES + 1, LONG_EXTRACTION_PAGES + 1))
    assert resumed["pages"] == LONG_EXTRACTION_PAGES
    assert resumed["dagster/row_count"] == len(records), "every record landed once"


def test_a_checkpoint_is_due_after_checkpoint_seconds_however_few_records(
    landing: LandingZone, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What bounds the loss of a killed extraction (no handler runs): with `CHECKPOINT_SECONDS` passed,
    every page is checkpointed as it lands, although `batch_rows` would hold them all in one part."""
    monkeypatch.setattr(rest_ingestion, "CHECKPOINT_SECONDS", 0.0)
    with ScriptedServer(FailsOnceAtPage(FAILING_PAGE)) as server:
        raw = RawAsset(rest_entity(server.base_url), landing, instance)
        raw.fail(batch_rows=100_000)
    parts = sorted(path.name.split("-pages-")[1] for path in raw.inflight_dir().glob("*.parquet"))
    assert parts == ["000001-000001.parquet", "000002-000002.parquet"], "one part per page"


def test_the_rest_clients_retries_are_in_the_run_log(
    landing: LandingZone, instance: dg.DagsterInstance
) -> None:
    """Not only on stderr: the run that waited through a 503 says so where it is watched."""
    with ScriptedServer(FailsOnceAtPage(2, status=503)) as server:
        raw = RawAsset(rest_entity(server.base_url), landing, instance)
        result = raw.materialize()
    assert result.success
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    (retry,) = [message for message in messages if "retrying in" in message]
    assert f"GET {server.base_url}/items" in retry and "HTTP 503" in retry and "(attempt 2 of 5)" in retry


class UpdatedSince:
    """Serves the records updated after `since` (all of them without it), by cursor."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def __call__(self, request: Recorded) -> Reply:
        since = request.query.get("since")
        wanted = [record for record in self.records if since is None or record["updated_at"] > since]
        return paged_items(wanted, "cursor")(request)


def test_an_incremental_endpoint_is_sent_the_previous_watermark_on_the_next_run(
    landing: LandingZone, instance: dg.DagsterInstance
) -> None:
    handler = UpdatedSince(items(12))
    with ScriptedServer(handler) as server:
        raw = RawAsset(rest_entity(server.base_url, incremental=INCREMENTAL), landing, instance)
        first = raw.succeed()
        first_requests = len(server.requests)
        handler.records = items(14)
        second = raw.succeed()

    assert all("since" not in request.query for request in server.requests[:first_requests])
    assert {request.query.get("since") for request in server.requests[first_requests:]} == {
        "2026-01-01 00:00:12"
    }
    assert first["watermark_after"] == second["watermark_before"] == "2026-01-01 00:00:12"
    assert second["watermark_after"] == "2026-01-01 00:00:14"
    assert sorted(int(row["id"]) for row in read_rows(second["landed_files"])) == [13, 14]
    assert first["load_kind"] == second["load_kind"] == "append"


class UpdatedBetween:
    """Serves the records updated after `since` and up to `before` (each optional), by cursor; the first
    request for page `fail_page` (when set) fails with a 400."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.fail_page: int | None = None

    def __call__(self, request: Recorded) -> Reply:
        if page_of(request) == self.fail_page:
            self.fail_page = None
            return json_reply({"error": "failing once"}, 400)
        since, before = request.query.get("since"), request.query.get("before")
        wanted = [
            record
            for record in self.records
            if (since is None or record["updated_at"] > since)
            and (before is None or record["updated_at"] <= before)
        ]
        return paged_items(wanted, "cursor")(request)


def test_a_rest_backfill_reads_its_range_keeps_the_watermark_and_no_other_run_resumes_its_checkpoint(
    landing: LandingZone, instance: dg.DagsterInstance
) -> None:
    handler = UpdatedBetween(items(23))
    bounds = {"backfill_since": "2026-01-01 00:00:05", "backfill_until": "2026-01-01 00:00:15"}
    with ScriptedServer(handler) as server:
        raw = RawAsset(
            rest_entity(server.base_url, incremental={**INCREMENTAL, "until_param": "before"}),
            landing,
            instance,
        )
        assert raw.succeed()["watermark_after"] == "2026-01-01 00:00:23"
        handler.fail_page = 2
        assert "400" in raw.fail(batch_rows=PAGE_SIZE, **bounds)
        assert (
            json.loads((raw.inflight_dir() / CHECKPOINT_FILE).read_text())["until"]
            == bounds["backfill_until"]
        )
        regular_from = len(server.requests)
        regular = raw.succeed(batch_rows=PAGE_SIZE)
        backfill_from = len(server.requests)
        backfill = raw.succeed(batch_rows=PAGE_SIZE, **bounds)

    regular_sent = {
        (r.query.get("since"), r.query.get("before")) for r in server.requests[regular_from:backfill_from]
    }
    assert regular_sent == {("2026-01-01 00:00:23", None)}, "the backfill's checkpoint is not resumed"
    assert regular.get("dagster/row_count") == 0
    backfill_sent = {(r.query.get("since"), r.query.get("before")) for r in server.requests[backfill_from:]}
    assert backfill_sent == {("2026-01-01 00:00:05", "2026-01-01 00:00:15")}
    assert sorted(int(row["id"]) for row in read_rows(backfill["landed_files"])) == list(range(6, 16))
    assert backfill["watermark_before"] == backfill["watermark_after"] == "2026-01-01 00:00:23"
    assert (backfill["backfill/since"], backfill["backfill/until"]) == (
        "2026-01-01 00:00:05",
        "2026-01-01 00:00:15",
    )
    assert raw.recorded_state() == {"watermark": "2026-01-01 00:00:23"}
