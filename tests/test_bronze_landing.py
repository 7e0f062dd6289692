"""The PostgreSQL bronze layer (seed 002) against a real server: a landing killed mid-insert (SIGKILL of the
process that is inserting) keeps the old state and its retry lands once; staging reads the committed rows
back with their original Arrow types; and the demo's database and REST sources run raw to staged through
Dagster with `PLATFORM_LANDING=bronze`, no landed Parquet file on disk; a REST extraction that failed on
one machine resumes on another from the pages and checkpoint it left in bronze; a PostgreSQL source's
deleted rows leave staged on a second machine by the key scan committed in bronze, and retention deletes
committed parts (a snapshot entity's bronze table no longer grows), counted for the rebuild rule.

Run as a script (`python test_bronze_landing.py URL ROOT`), this module is the process that is killed: it
lands one part whole, then hangs inside the insert of a second one.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
TARGET_ARGS = ("shop_db", "orders", ("order_id",), "updated_at")
OLD_AT = datetime(2026, 12, 6, 23, 0, tzinfo=UTC)
KILLED_AT = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
KILLED_PARTS = ("killed-part-1", "killed-part-2")


def orders(first: int, rows: int) -> pa.RecordBatch:
    """Rows of types JSON does not have (decimal, timestamp, date) and one it cannot hold (NaN)."""
    ids = range(first, first + rows)
    return pa.record_batch(
        {
            "order_id": pa.array(ids, pa.int64()),
            "amount": pa.array([Decimal(f"{i}.25") for i in ids], pa.decimal128(12, 2)),
            "updated_at": pa.array([OLD_AT + timedelta(minutes=i) for i in ids], pa.timestamp("us")),
            "ordered_on": pa.array([(OLD_AT + timedelta(days=i % 3)).date() for i in ids], pa.date32()),
            "weight": pa.array([float("nan") if i % 10 == 0 else i / 4 for i in ids], pa.float64()),
            "note": pa.array([None if i % 7 == 0 else f'it\'s "#{i}"\\n' for i in ids], pa.string()),
        }
    )


def _land_then_hang(url: str, root: str) -> None:
    """The killed process: one part landed whole (pending), the second hung after two of its batches."""
    from resources.landing.bronze import BronzeTarget
    from resources.landing.bronze_zone import BronzeLandingZone
    from resources.landing.zone import Lineage

    zone = BronzeLandingZone(root=root, bronze_url=url)
    lineage = Lineage("shop_db.orders", KILLED_AT, "run-killed")

    def hanging() -> object:
        yield orders(100, 50)
        yield orders(150, 50)
        print("inserting", flush=True)
        time.sleep(600)

    with zone.bronze_extraction(BronzeTarget(*TARGET_ARGS)) as inflight:
        inflight.write(KILLED_PARTS[0], [orders(100, 100)], lineage)
        inflight.save_checkpoint({"pages": 1})
        inflight.write(KILLED_PARTS[1], hanging(), lineage)  # type: ignore[arg-type]


if __name__ == "__main__":
    _land_then_hang(*sys.argv[1:3])
    raise SystemExit("not killed")

# Imported below the script entry point: the killed process needs none of the test machinery.
import dagster as dg  # noqa: E402
import pytest  # noqa: E402
from conftest import TEST_SCALE  # noqa: E402
from fixtures.postgres_server import PostgresCluster, platform_pg_options  # noqa: E402
from rest_test_server import PAGE_SIZE, ScriptedServer  # noqa: E402
from test_raw_asset_sources import (  # noqa: E402
    FAILING_PAGE,
    INCREMENTAL,
    RECORDS,
    FailsOnceAtPage,
    RawAsset,
    page_of,
    rest_entity,
)
from test_source_deletes import START, run_sql  # noqa: E402

from demo_shop import generate_demo_world  # noqa: E402
from demo_shop.api_server import serve_products_api  # noqa: E402
from demo_shop.commands import DEMO_API_KEY, DEMO_API_URL_VAR  # noqa: E402
from demo_shop.world import PRODUCTS_API  # noqa: E402
from platform_assets.catalog.loader import CatalogEntity  # noqa: E402
from platform_assets.catalog.model import Source  # noqa: E402
from platform_assets.definitions import build_definitions  # noqa: E402
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR  # noqa: E402
from platform_assets.factories.raw_assets import LANDED_FILES_METADATA, build_raw_asset  # noqa: E402
from platform_assets.factories.staged_assets import build_staged_asset  # noqa: E402
from platform_assets.keys import STAGED_SCHEMA, raw_key, staged_key, staged_table  # noqa: E402
from platform_assets.staging.deletes import DELETED_ROWS_METADATA  # noqa: E402
from platform_assets.staging.plan import MODE_METADATA  # noqa: E402
from platform_assets.staging.retention import REMOVED_FILES_METADATA  # noqa: E402
from resources.environment import PlatformSettings, build_resources, build_warehouse  # noqa: E402
from resources.landing.bronze import BronzeError, BronzeLayer, BronzeTarget  # noqa: E402
from resources.landing.bronze_zone import BronzeLandingZone  # noqa: E402
from resources.landing.zone import (  # noqa: E402
    EXTRACTED_AT_COLUMN,
    RUN_ID_COLUMN,
    SOURCE_COLUMN,
    LandingBusyError,
    Lineage,
)


def _query(postgres_server: PostgresCluster, url: str, statement: str) -> list[tuple]:
    connection = psycopg2.connect(postgres_server.dsn(url.rsplit("/", 1)[1]))
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall()
    finally:
        connection.close()


def test_a_bronze_landing_killed_mid_insert_keeps_the_old_state_and_its_retry_lands_once(
    postgres_server: PostgresCluster, postgres_database: str, tmp_path: Path
) -> None:
    zone = BronzeLandingZone(root=str(tmp_path / "landing"), bronze_url=postgres_database)
    target = BronzeTarget(*TARGET_ARGS)
    with zone.bronze_extraction(target) as inflight:
        inflight.write("old-part", [orders(0, 100)], Lineage("shop_db.orders", OLD_AT, "run-old"))
        inflight.commit(OLD_AT.date().isoformat())

    killed = subprocess.Popen(
        [sys.executable, __file__, postgres_database, zone.root],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    another_machine = BronzeLandingZone(root=str(tmp_path / "elsewhere"), bronze_url=postgres_database)
    try:
        assert killed.stdout is not None and killed.stdout.readline() == b"inserting\n"
        busy = pytest.raises(LandingBusyError, match=r"Another run is landing shop_db\.orders")
        with busy, another_machine.bronze_extraction(target):
            pass
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    with another_machine.bronze_extraction(target) as inflight:  # the lock died with the killed process
        assert inflight.checkpoint() == {"pages": 1}, "where to resume, on any machine"

    layer = zone.layer()
    assert [part.extraction for part in layer.committed(target)] == ["old-part"], "old state kept"
    assert [part.extraction for part in layer.pending(target)] == [KILLED_PARTS[0]], (
        "the hung insert rolled back"
    )
    staging_sees = zone.bronze_landed(target, "staging-run").summary()
    assert staging_sees == (1, False, OLD_AT), "the old state only"

    retry = Lineage("shop_db.orders", KILLED_AT + timedelta(minutes=5), "run-retry")
    with zone.bronze_extraction(target) as inflight:
        assert len(inflight.parts()) == 1, "the killed attempt's landed part is in flight, not committed"
        inflight.discard()  # an attempt that does not resume (a database's) starts over
        assert inflight.checkpoint() is None
        inflight.write("retry-part-1", [orders(100, 100), orders(200, 100)], retry)
        inflight.write("retry-part-2", [orders(300, 100)], retry)
        assert [landed.rows for landed in inflight.commit(retry.extracted_at.date().isoformat())] == [
            200,
            100,
        ]
        assert inflight.write("retry-part-1", [orders(100, 100)], retry) is None, "committed: never twice"
        assert inflight.commit(retry.extracted_at.date().isoformat()) == []

    table = "bronze.shop_db__orders"
    visible = _query(
        postgres_server,
        postgres_database,
        f"SELECT count(*), count(DISTINCT raw_id), min(validation_status), max(landed.run_id) FROM {table} "
        "AS landed JOIN bronze._commits AS committed ON committed.table_name = 'shop_db__orders' "
        "AND committed.extraction = landed.extraction",
    )
    assert visible == [(400, 400, "valid", "run-retry")], "every order once"
    assert _query(postgres_server, postgres_database, f"SELECT count(*) FROM {table}") == [(400,)]
    stamped = _query(
        postgres_server,
        postgres_database,
        f"SELECT source_timestamp, raw_id, record->>'amount' FROM {table} WHERE raw_id = '101'",
    )
    assert stamped == [(OLD_AT + timedelta(minutes=101), "101", "101.25")]
    partitions = _query(
        postgres_server,
        postgres_database,
        f"SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = '{table}'::regclass ORDER BY 1",
    )
    assert partitions == [("bronze.shop_db__orders_20261206",), ("bronze.shop_db__orders_20261207",)]
    indexes = _query(
        postgres_server,
        postgres_database,
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'bronze' AND tablename = 'shop_db__orders'",
    )
    assert any("USING gin (record)" in index for (index,) in indexes)
    assert sum("source_timestamp" in i or "validation_status" in i or "run_id" in i for (i,) in indexes) == 3

    exported = zone.bronze_landed(target, "staging-run").extracted_after(OLD_AT)
    read_back = pq.read_table(exported)
    original = pa.Table.from_batches([orders(100, 300)])
    records = read_back.drop_columns([SOURCE_COLUMN, EXTRACTED_AT_COLUMN, RUN_ID_COLUMN])
    assert records.schema == original.schema, "the original Arrow types, not JSON's"
    for name in original.column_names:  # str(): NaN == NaN as text, not as a float
        assert list(map(str, records.column(name).to_pylist())) == list(
            map(str, original.column(name).to_pylist())
        )
    assert set(read_back.column(RUN_ID_COLUMN).to_pylist()) == {"run-retry"}

    # Retention keeping the newest part keeps both of the newest extraction's; the old part goes, with its
    # rows and its day's partition, and is counted as removed.
    removed = layer.remove_parts(target, staged_through=retry.extracted_at, keep_newest=1, older_than=None)
    assert [part.extraction for part in removed] == ["old-part"]
    assert [part.extraction for part in layer.committed(target)] == ["retry-part-1", "retry-part-2"]
    assert layer.removed_count(target) == 1
    assert _query(postgres_server, postgres_database, f"SELECT count(*) FROM {table}") == [(300,)]
    partitions = _query(
        postgres_server,
        postgres_database,
        f"SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = '{table}'::regclass",
    )
    assert partitions == [("bronze.shop_db__orders_20261207",)]


@pytest.fixture
def bronze_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_database: str
) -> PlatformSettings:
    monkeypatch.setenv("PLATFORM_ENV", "postgres")
    monkeypatch.setenv("PLATFORM_LANDING", "bronze")
    monkeypatch.setenv("PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PLATFORM_PG_PASSWORD", "")
    for name, value in platform_pg_options(postgres_database).items():
        monkeypatch.setenv(name, value)
    return PlatformSettings.from_env()


def test_database_and_rest_sources_stage_from_bronze_with_their_types_and_no_landed_file(
    bronze_environment: PlatformSettings,
    postgres_server: PostgresCluster,
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = bronze_environment
    generate_demo_world(settings.sources_dir, seed=7, scale=TEST_SCALE)
    entities = [("shop_db", "customers"), ("shop_api", "products")]
    selection = [
        key for source, entity in entities for key in (raw_key(source, entity), staged_key(source, entity))
    ]
    with (
        serve_products_api(settings.sources_dir / PRODUCTS_API, DEMO_API_KEY) as api_url,
        dg.instance_for_test() as instance,
    ):
        monkeypatch.setenv(DEMO_API_URL_VAR, api_url)
        job = build_definitions(settings).resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(instance=instance, asset_selection=selection, raise_on_error=False)
        assert result.success

        with sqlite3.connect(settings.sources_dir / "shop.sqlite") as db:
            customers = db.execute(
                "SELECT customer_id, created_at FROM customers ORDER BY customer_id"
            ).fetchall()
        landed = _query(
            postgres_server,
            postgres_database,
            "SELECT count(*), count(DISTINCT raw_id), count(source_timestamp), min(run_id), "
            "count(api_endpoint) FROM bronze.shop_db__customers",
        )
        assert landed == [(len(customers), len(customers), len(customers), result.run_id, 0)]
        (endpoints,) = _query(
            postgres_server, postgres_database, "SELECT DISTINCT api_endpoint FROM bronze.shop_api__products"
        )
        assert endpoints[0].startswith(api_url) and endpoints[0].endswith("/products")

        warehouse = build_warehouse(settings)
        staged = warehouse.table_ref(STAGED_SCHEMA, staged_table("shop_db", "customers"))
        rows = warehouse.query(f"SELECT customer_id, created_at FROM {staged} ORDER BY customer_id")
        assert [(key, at.isoformat(sep=" ")) for key, at in rows] == [(key, at) for key, at in customers]
        products = warehouse.table_ref(STAGED_SCHEMA, staged_table("shop_api", "products"))
        assert warehouse.query(f"SELECT count(*) FROM {products}")[0][0] > 0

        # A new customer: the next run lands one more bronze part and stages only it (incremental).
        with sqlite3.connect(settings.sources_dir / "shop.sqlite") as db:
            db.execute(
                "INSERT INTO customers VALUES (999999, 'new@example.com', 'New', 'Customer', 'DE', "
                "'2099-01-01 00:00:00', '2099-01-01 00:00:00')"
            )
        customers_only = [raw_key("shop_db", "customers"), staged_key("shop_db", "customers")]
        again = job.execute_in_process(
            instance=instance, asset_selection=customers_only, raise_on_error=False
        )
        assert again.success
        (staging,) = [
            event.materialization.metadata
            for event in again.get_asset_materialization_events()
            if event.asset_key == staged_key("shop_db", "customers")
        ]
        assert staging["staging/mode"].value == "incremental", staging["staging/reason"].value
        assert warehouse.query(f"SELECT count(*) FROM {staged}") == [(len(customers) + 1,)]
    exports = settings.landing_dir / "_spill" / "bronze" / "shop_db__customers"
    assert [run.name for run in exports.iterdir()] == [again.run_id], "the first run's exports are removed"
    assert not list((settings.landing_dir).glob("*/*/load_date=*/*")), "record sources left no landed file"


def test_an_unreachable_bronze_layer_names_where_and_what_to_check_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRONZE_TEST_PASSWORD", "s3cret-value")
    layer = BronzeLayer("postgresql+psycopg2://etl:${BRONZE_TEST_PASSWORD}@127.0.0.1:1/warehouse")
    with pytest.raises(BronzeError) as raised:
        layer.committed(BronzeTarget(*TARGET_ARGS))
    message = str(raised.value)
    assert "s3cret-value" not in message
    assert "etl:***@127.0.0.1:1/warehouse" in message and "from ${BRONZE_TEST_PASSWORD}" in message


def test_a_failed_rest_extraction_into_bronze_resumes_on_another_machine_after_its_last_landed_page(
    postgres_server: PostgresCluster, postgres_database: str, tmp_path: Path
) -> None:
    """The pages landed before the failure and the checkpoint are in bronze: a machine that has none of the
    failed attempt's disk resumes at the failed page, and every record is committed once."""
    with ScriptedServer(FailsOnceAtPage(FAILING_PAGE)) as server, dg.instance_for_test() as instance:
        item = rest_entity(server.base_url, incremental=INCREMENTAL)
        machines = [
            BronzeLandingZone(root=str(tmp_path / name), bronze_url=postgres_database) for name in ("a", "b")
        ]
        assert "400" in RawAsset(item, machines[0], instance).fail(batch_rows=PAGE_SIZE)
        first_attempt = len(server.requests)
        resumed = RawAsset(item, machines[1], instance).succeed(batch_rows=PAGE_SIZE)
    assert [page_of(request) for request in server.requests[first_attempt:]] == [FAILING_PAGE, 4, 5]
    assert resumed["dagster/row_count"] == len(RECORDS)
    landed = _query(
        postgres_server,
        postgres_database,
        "SELECT count(*), count(DISTINCT raw_id), (SELECT count(*) FROM bronze._checkpoints) "
        "FROM bronze.shop_api__items",
    )
    assert landed == [(len(RECORDS), len(RECORDS), 0)]


def test_deletes_at_a_postgres_source_leave_staged_on_another_machine_and_retention_prunes_bronze(
    bronze_environment: PlatformSettings,
    postgres_server: PostgresCluster,
    postgres_database: str,
    tmp_path: Path,
) -> None:
    """Raw steps run on machine A, staged steps on machine B (another data directory, no shared disk): the
    key scan B judges deletions by is the one A committed in bronze. `retention: {landed: {count: 1}}` then
    deletes each staged part but the newest, from the entity's table and `_commits`, and a full rebuild
    knows it cannot read them."""
    run_sql(
        postgres_database,
        "CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, updated_at timestamptz);"
        "INSERT INTO customers SELECT i, 'customer ' || i, %s FROM generate_series(1, 20) AS i;"
        "CREATE TABLE plans (id integer PRIMARY KEY, name text NOT NULL);"
        "INSERT INTO plans SELECT i, 'plan ' || i FROM generate_series(1, 5) AS i",
        [START],
    )
    columns = {"id": {"type": "integer"}, "name": {"type": "string"}}
    keep_one = {"landed": {"count": 1}}
    entities = {
        "customers": {
            "table": {
                "table": "customers",
                "incremental": {"mode": "timestamp", "cursor_column": "updated_at", "lookback_seconds": 0},
            },
            "deletes": {"mode": "reconcile", "every_minutes": 0},
            "retention": keep_one,
            "primary_key": ["id"],
            "columns": {**columns, "updated_at": {"type": "timestamp"}},
        },
        "plans": {
            "table": {"table": "plans"},
            "retention": keep_one,
            "primary_key": ["id"],
            "columns": columns,
        },
    }
    machine_b = PlatformSettings.from_env({**os.environ, "PLATFORM_DATA_DIR": str(tmp_path / "machine-b")})
    warehouse = build_warehouse(machine_b)

    def staged(entity: str) -> list[int]:
        table = warehouse.table_ref(STAGED_SCHEMA, staged_table("crm", entity))
        return [key for (key,) in warehouse.query(f"SELECT id FROM {table} ORDER BY id")]

    def bronze(statement: str) -> list[tuple]:
        return _query(postgres_server, postgres_database, statement)

    def run(
        instance: dg.DagsterInstance, declared: dict, names: tuple[str, ...], *, raw: bool = True
    ) -> dict[str, dict]:
        """Raw steps on machine A (unless not `raw`), then staged steps on machine B; each staged asset's
        metadata."""
        source = Source.model_validate(
            {
                "source": "crm",
                "connection": {"kind": "database", "url": postgres_database},
                "entities": declared,
            }
        )
        items = [CatalogEntity(source, name, source.entities[name]) for name in names]
        for assets, settings in (
            ([build_raw_asset(item) for item in items if raw], bronze_environment),
            ([build_staged_asset(item, warehouse.kind) for item in items], machine_b),
        ):
            if not assets:
                continue
            result = dg.materialize(
                assets,
                instance=instance,
                resources=build_resources(settings, DBT_PROJECT_DIR),
                raise_on_error=False,
            )
            if not result.success:
                (failure,) = result.get_step_failure_events()
                return {"failure": {"message": str(failure.step_failure_data.error)}}
        return {
            name: {
                key: value.value
                for key, value in instance.get_latest_materialization_event(
                    staged_key("crm", name)
                ).asset_materialization.metadata.items()  # type: ignore[union-attr]
            }
            for name in names
        }

    with dg.instance_for_test() as instance:
        run(instance, entities, ("customers", "plans"))
        assert staged("customers") == list(range(1, 21)) and staged("plans") == [1, 2, 3, 4, 5]

        run_sql(
            postgres_database,
            "DELETE FROM customers WHERE id IN (3, 7); DELETE FROM plans WHERE id = 2;"
            "UPDATE customers SET name = 'renamed', updated_at = %s WHERE id = 5",
            [START + timedelta(days=1)],
        )
        second = run(instance, entities, ("customers", "plans"))
        remaining = [i for i in range(1, 21) if i not in (3, 7)]
        assert staged("customers") == remaining and staged("plans") == [1, 3, 4, 5]
        customers = second["customers"]
        assert customers[DELETED_ROWS_METADATA] == 2 and customers[MODE_METADATA] == "incremental"
        assert customers[REMOVED_FILES_METADATA] == 1 and second["plans"][REMOVED_FILES_METADATA] == 1
        raw = instance.get_latest_materialization_event(raw_key("crm", "customers"))
        assert raw is not None and raw.asset_materialization is not None
        landed_parts = raw.asset_materialization.metadata[LANDED_FILES_METADATA].value
        assert landed_parts == [f"bronze.crm__customers/{raw.run_id}.parquet"], "not the key scan"
        # The scan is in bronze (the latest only), and neither machine has a landed file or key scan.
        assert bronze("SELECT count(*), count(DISTINCT extraction) FROM bronze._key_scans") == [(18, 1)]
        assert not list(tmp_path.glob("*/landing/crm/*/_keys/*"))
        assert not list(tmp_path.glob("*/landing/crm/*/load_date=*/*"))
        # Retention kept each entity's newest part: the update of customer 5, the second snapshot of plans.
        assert bronze("SELECT count(*) FROM bronze.crm__customers") == [(1,)]
        assert bronze("SELECT count(*) FROM bronze.crm__plans") == [(4,)]
        assert bronze(
            "SELECT table_name, kind, count(*) FROM bronze._commits GROUP BY 1, 2 ORDER BY 1, 2"
        ) == [("crm__customers", "keys", 1), ("crm__customers", "records", 1), ("crm__plans", "records", 1)]

        # Staged again with no new extraction: the scan applied before is not exported again.
        assert run(instance, entities, ("customers",), raw=False)["customers"][DELETED_ROWS_METADATA] == 0
        exports = tmp_path / "machine-b" / "landing" / "_spill" / "bronze" / "crm__customers"
        assert not list(exports.glob("*/_keys/*")) and staged("customers") == remaining

        # A full rebuild cannot read the removed part: refused, unless `rebuild: from_remaining`.
        warehouse.query(f"DROP TABLE {warehouse.table_ref(STAGED_SCHEMA, staged_table('crm', 'customers'))}")
        refused = run(instance, entities, ("customers",))
        assert "RebuildAfterRetentionError" in refused["failure"]["message"]
        assert "removed 1 landed file(s)" in refused["failure"]["message"]
        rebuilt_from_remaining = {
            **entities,
            "customers": {**entities["customers"], "retention": {**keep_one, "rebuild": "from_remaining"}},
        }
        rebuilt = run(instance, rebuilt_from_remaining, ("customers",))
        assert rebuilt["customers"]["retention/files_not_rebuilt"] == 1
        assert staged("customers") == [5], "rows only the removed part held left the table"
