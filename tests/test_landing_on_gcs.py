"""The landing zone on GCS (`PLATFORM_LANDING_URI=gs://bucket/prefix`), through the GCS emulator and real
Dagster materializations: a landing killed between uploading its files and publishing its state leaves the
published state as it was, the retry lands every row once, and a second machine (another data directory,
sharing only the bucket and the Dagster instance) stages what the first landed and lands only what is new.

Run as a script, this module is the process that gets killed: it lands the raw assets on machine A and
SIGKILLs itself right after the uploads, before the state object is written.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from google.cloud import storage

import resources.landing.published as published
from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Source
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from platform_assets.factories.raw_assets import build_raw_asset
from platform_assets.factories.staged_assets import build_staged_asset
from platform_assets.keys import STAGED_SCHEMA, raw_key, staged_key, staged_table
from resources.environment import PlatformSettings, build_resources
from resources.landing.published import LandingConflictError, LandingStoreError
from resources.landing.zone import LandingBusyError, LandingZone, Lineage

ENTITIES = (("acme", "orders"), ("acme_db", "customers"), ("acme_db", "regions"))


def entities(sources: Path) -> list[CatalogEntity]:
    """A file entity (JSON lines, malformed lines set aside) and two record entities: an incremental table
    whose deleted rows are found by scanning its keys, and a table re-read whole (each landing a snapshot,
    which staging finds by the paths its raw materialization recorded)."""
    files = Source.model_validate(
        {
            "source": "acme",
            "connection": {"kind": "files", "root": str(sources / "files")},
            "entities": {
                "orders": {
                    "file": {"path": "orders/*.jsonl", "format": "jsonl"},
                    "on_malformed": "skip",
                    "primary_key": ["order_id"],
                    "columns": {"order_id": {"type": "integer"}, "amount": {"type": "double"}},
                }
            },
        }
    )
    table = Source.model_validate(
        {
            "source": "acme_db",
            "connection": {"kind": "database", "url": f"sqlite:///{sources / 'shop.sqlite'}"},
            "entities": {
                "customers": {
                    "table": {
                        "table": "customers",
                        "incremental": {
                            "mode": "timestamp",
                            "cursor_column": "updated_at",
                            "lookback_seconds": 0,
                        },
                    },
                    "deletes": {"mode": "reconcile", "every_minutes": 0},
                    "max_delete_fraction": 0.5,
                    "primary_key": ["customer_id"],
                    "columns": {
                        "customer_id": {"type": "integer", "nullable": False},
                        "name": {"type": "string"},
                        "updated_at": {"type": "timestamp", "nullable": False},
                    },
                },
                "regions": {
                    "table": {"table": "regions"},
                    "primary_key": ["region"],
                    "columns": {"region": {"type": "string"}},
                },
            },
        }
    )
    return [
        CatalogEntity(source, name, source.entities[name])
        for source in (files, table)
        for name in source.entities
    ]


class Machine:
    """One machine of a deployment: its own data directory (landing cache, DuckDB warehouse)."""

    def __init__(self, data_dir: Path, landing_uri: str, sources: Path) -> None:
        self.settings = PlatformSettings.from_env(
            {"PLATFORM_DATA_DIR": str(data_dir), "PLATFORM_LANDING_URI": landing_uri}
        )
        self.resources = build_resources(self.settings, DBT_PROJECT_DIR)
        warehouse = self.resources["warehouse"]
        items = entities(sources)
        self.assets = [build_raw_asset(item) for item in items] + [
            build_staged_asset(item, warehouse.kind) for item in items
        ]

    def materialize(
        self, keys: list[dg.AssetKey], instance: dg.DagsterInstance | None
    ) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            self.assets, selection=keys, resources=self.resources, instance=instance, raise_on_error=False
        )

    def staged(self, source: str, entity: str, columns: str) -> list[tuple[Any, ...]]:
        warehouse = self.resources["warehouse"]
        table = warehouse.table_ref(STAGED_SCHEMA, staged_table(source, entity))
        return sorted(warehouse.query(f"SELECT {columns} FROM {table}"))


RAW = [raw_key(source, entity) for source, entity in ENTITIES]
STAGED = [staged_key(source, entity) for source, entity in ENTITIES]


def deliver(
    sources: Path,
    name: str,
    lines: list[str],
    customers: list[tuple[int, str, str]],
    region: str,
    deleted: tuple[int, ...] = (),
) -> None:
    orders = sources / "files" / "orders"
    orders.mkdir(parents=True, exist_ok=True)
    (orders / name).write_text("".join(f"{line}\n" for line in lines))
    with sqlite3.connect(sources / "shop.sqlite") as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS customers "
            "(customer_id INTEGER PRIMARY KEY, name TEXT, updated_at TEXT)"
        )
        connection.execute("CREATE TABLE IF NOT EXISTS regions (region TEXT PRIMARY KEY)")
        connection.executemany("INSERT INTO customers VALUES (?, ?, ?)", customers)
        connection.execute("INSERT INTO regions VALUES (?)", (region,))
        connection.executemany("DELETE FROM customers WHERE customer_id = ?", [(key,) for key in deleted])


def objects(client: storage.Client, bucket: str) -> list[str]:
    return sorted(blob.name for blob in client.list_blobs(bucket))


def test_landing_killed_before_publishing_keeps_the_old_state_and_a_second_machine_stages_it(
    gcs_client: storage.Client, gcs_bucket: str, tmp_path: Path
) -> None:
    uri = f"gs://{gcs_bucket}/landing"
    sources = tmp_path / "sources"
    deliver(
        sources,
        "day1.jsonl",
        ['{"order_id": 1, "amount": 10.0}', '{"order_id": 2,', '{"order_id": 3, "amount": 30.0}'],
        [(1, "ada", "2026-01-01T10:00:00"), (2, "bob", "2026-01-01T11:00:00")],
        "north",
    )

    # Machine A is killed after its first extraction uploaded its files, before it published its state.
    killed = subprocess.run(
        [sys.executable, __file__, str(tmp_path / "a"), uri, str(sources)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    left = objects(gcs_client, gcs_bucket)
    assert [name for name in left if "/load_date=" in name], left  # uploaded...
    assert not [name for name in left if name.endswith(published.STATE_OBJECT)], left  # ...never published
    assert [name for name in left if "/_leases/" in name], left  # the dead holder's lease is still there

    with dg.instance_for_test() as instance:
        a = Machine(tmp_path / "a", uri, sources)
        retried = a.materialize(RAW, instance)
        assert retried.success
        stored = objects(gcs_client, gcs_bucket)
        assert not [name for name in stored if "/_leases/" in name]  # taken over from the dead pid, released
        assert [name for name in stored if name.startswith("landing/_quarantine/acme/orders/")]

        # Machine A's disk is lost. Machine B has never seen the landing: it stages from the bucket what A
        # landed, each row once.
        shutil.rmtree(tmp_path / "a")
        b = Machine(tmp_path / "b", uri, sources)
        assert b.materialize(STAGED, instance).success
        assert b.staged("acme", "orders", "order_id, amount") == [(1, 10.0), (3, 30.0)]
        assert b.staged("acme_db", "customers", "customer_id, name") == [(1, "ada"), (2, "bob")]
        assert b.staged("acme_db", "regions", "region") == [("north",)]

        # B lands the next delivery (customer 1 deleted at the source): the ledger and watermark A published
        # say what is new.
        deliver(
            sources,
            "day2.jsonl",
            ['{"order_id": 4, "amount": 40.0}'],
            [(3, "cy", "2026-01-02T09:00:00")],
            "south",
            deleted=(1,),
        )
        landed = b.materialize(RAW, instance)
        assert landed.success
        orders_event = landed.asset_materializations_for_node(build_raw_asset(entities(sources)[0]).op.name)
        assert orders_event[0].metadata["files_landed_names"].value == ["orders/day2.jsonl"]

        # A stages, fetching what B landed and the key scan that says customer 1 is gone.
        assert a.materialize(STAGED, instance).success
        assert a.staged("acme", "orders", "order_id, amount") == [(1, 10.0), (3, 30.0), (4, 40.0)]
        assert a.staged("acme_db", "customers", "customer_id, name") == [(2, "bob"), (3, "cy")]
        assert a.staged("acme_db", "regions", "region") == [("north",), ("south",)]

    # Each delivered file is in the bucket once; the killed attempt's upload was overwritten by the retry.
    landed = [name for name in objects(gcs_client, gcs_bucket) if name.startswith("landing/acme/orders/")]
    assert [name.rsplit("/", 1)[-1].split(".jsonl-")[0] for name in landed] == ["orders_day1", "orders_day2"]


def test_an_entity_landed_on_one_machine_is_busy_on_another_until_the_first_is_done(
    gcs_bucket: str, tmp_path: Path
) -> None:
    """Two landing caches (two machines) share nothing but the bucket: the lease object keeps them apart,
    for longer than its duration while its holder renews it."""
    uri = f"gs://{gcs_bucket}/landing"
    a = LandingZone(root=str(tmp_path / "a"), durable_uri=uri, lease_seconds=1)
    b = LandingZone(root=str(tmp_path / "b"), durable_uri=uri)
    with a.extraction("acme", "orders"):
        time.sleep(1.5)
        with (
            pytest.raises(
                LandingBusyError, match=f"lease gs://{gcs_bucket}/landing/_leases/acme/orders held by pid"
            ),
            b.extraction("acme", "orders"),
        ):
            pass
        with b.extraction("acme", "customers"):
            pass
    with b.extraction("acme", "orders"):
        pass


def test_an_extraction_whose_lease_expired_cannot_publish_over_the_one_that_took_it_over(
    gcs_bucket: str, tmp_path: Path
) -> None:
    """The state's generation precondition fences a slow holder: its files stay unpublished."""
    uri = f"gs://{gcs_bucket}/landing"
    slow = LandingZone(root=str(tmp_path / "a"), durable_uri=uri, lease_seconds=0)
    fast = LandingZone(root=str(tmp_path / "b"), durable_uri=uri)
    lineage = Lineage("acme.events", datetime.now(UTC), "run-1")
    with (
        pytest.raises(LandingConflictError, match="changed while this extraction ran"),
        slow.extraction("acme", "events") as late,
    ):
        with fast.extraction("acme", "events") as inflight:
            inflight.write("fast.parquet", [pa.record_batch({"id": [1]})], lineage)
            inflight.commit("2026-01-01")
        late.write("slow.parquet", [pa.record_batch({"id": [2]})], lineage)
        late.commit("2026-01-01")
    with fast.extraction("acme", "events"):
        assert [path.name for path in fast.committed_files("acme", "events")] == ["fast.parquet"]


def test_a_missing_bucket_names_the_landing_and_what_to_check(gcs_emulator: str, tmp_path: Path) -> None:
    landing = LandingZone(root=str(tmp_path / "a"), durable_uri="gs://no-such-landing-bucket/landing")
    with (
        pytest.raises(
            LandingStoreError, match="gs://no-such-landing-bucket/landing could not take the lease on"
        ),
        landing.extraction("acme", "orders"),
    ):
        pass


def test_a_checkpoint_saved_on_one_machine_is_resumed_on_another(gcs_bucket: str, tmp_path: Path) -> None:
    """Parts landed before a checkpoint resume anywhere; a part landed after it is not covered by it, and
    nothing of the area outlives the commit that published it."""
    uri = f"gs://{gcs_bucket}/landing"
    a = LandingZone(root=str(tmp_path / "a"), durable_uri=uri)
    b = LandingZone(root=str(tmp_path / "b"), durable_uri=uri)
    lineage = Lineage("acme.events", datetime.now(UTC), "run-1")
    page = pa.record_batch({"id": [1, 2]})
    with pytest.raises(RuntimeError, match="page 3"), a.extraction("acme", "events") as inflight:
        inflight.write("pages-1-2.parquet", [page], lineage)
        inflight.save_checkpoint({"pages": 2})
        inflight.write("pages-3-3.parquet", [page], lineage)
        raise RuntimeError("page 3 failed")
    with b.extraction("acme", "events") as inflight:
        assert inflight.checkpoint() == {"pages": 2}
        assert [part.name for part in inflight.parts()] == ["pages-1-2.parquet"]
        inflight.commit("2026-01-01")
    with a.extraction("acme", "events") as inflight:
        assert (inflight.checkpoint(), inflight.parts()) == (None, [])
        assert [path.name for path in a.committed_files("acme", "events")] == ["pages-1-2.parquet"]


def _land_and_die_before_publishing(data_dir: str, uri: str, sources: str) -> None:
    """Land the raw assets on machine A; SIGKILL this process once the first extraction uploaded its files."""

    def killed(state_dir: Path, key_scans: list[str]) -> bytes:
        os.kill(os.getpid(), signal.SIGKILL)
        return b""  # not reached

    published._packed = killed
    Machine(Path(data_dir), uri, Path(sources)).materialize(RAW, None)


if __name__ == "__main__":
    _land_and_die_before_publishing(*sys.argv[1:4])
