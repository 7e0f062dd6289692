"""Deliveries with no data, and deliveries not finished yet, through real files and real Dagster runs.

"No data today" is normal: a 0-byte file or a CSV holding only its header lands nothing (or a copy with no
rows), and the staged asset passes, creating the table empty with its declared columns or leaving it as it
was. A file still being written (growing, or without its ready marker) is not landed until it is ready,
neither by the raw asset nor by a run the delivery sensor launches; it then lands whole, exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from fault_files import ENTITY, HEADER, SOURCE, csv_rows, file_slice
from healing_harness import HealingSlice

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Source
from platform_assets.keys import STAGED_SCHEMA, staged_table
from platform_assets.policies.triggers import INGESTION_JOB, build_delivery_sensors
from resources.environment import PlatformSettings
from resources.files.readiness import Readiness, is_marker, sort_by_readiness
from resources.files.store import FileStore

RAW_STEP = f"raw__{SOURCE}__{ENTITY}"
STAGED_STEP = f"staged__{SOURCE}__{ENTITY}"
STABLE_SECONDS = 1.0


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def metadata_of(result: dg.ExecuteInProcessResult, step: str) -> dict[str, Any]:
    (event,) = result.asset_materializations_for_node(step)
    return {name: value.value for name, value in event.metadata.items()}


def logged(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, step: str) -> str:
    """What the step logged (its `context.log` lines), as the run's event log holds them."""
    return "\n".join(
        entry.user_message for entry in instance.all_logs(result.run_id) if entry.step_key == step
    )


def test_empty_and_header_only_first_deliveries_stage_an_empty_table_then_real_deliveries_stage(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    platform = file_slice(tmp_path, instance)
    folder = platform.deliveries / "orders"
    folder.mkdir(parents=True)
    (folder / "0-empty.csv").write_bytes(b"")

    first = platform.materialize()

    assert first.success
    assert metadata_of(first, RAW_STEP)["files_empty"] == 1
    staged = metadata_of(first, STAGED_STEP)
    assert staged["rows_delivered"] == 0
    assert "the delivery had no rows" in logged(instance, first, STAGED_STEP)
    assert platform.staged_rows(ENTITY) == []
    columns = platform.warehouse.columns(STAGED_SCHEMA, staged_table(SOURCE, ENTITY))
    assert dict(columns)["order_id"] == "BIGINT" and dict(columns)["note"] == "VARCHAR", columns

    (folder / "1-header-only.csv").write_text(HEADER + "\n")
    header_only = platform.materialize()
    assert header_only.success, "a header-only delivery after an empty one stages too"
    assert metadata_of(header_only, STAGED_STEP)["rows_delivered"] == 0
    assert platform.staged_rows(ENTITY) == []

    platform.deliver("2-real.csv", csv_rows(range(1, 4)))
    real = platform.materialize()
    assert real.success
    assert platform.staged_keys() == [1, 2, 3]

    (folder / "3-empty-again.csv").write_bytes(b"")
    again = platform.materialize()
    assert again.success
    assert metadata_of(again, RAW_STEP)["files_empty"] == 1
    assert "is left as it was" in logged(instance, again, STAGED_STEP)
    assert platform.staged_keys() == [1, 2, 3]


def waiting_source(root: Path) -> dict[str, Any]:
    """Two CSV entities: `orders` lands a file once it is unchanged for `STABLE_SECONDS`; `refunds` once
    its `{name}.done` marker exists (its glob matches the markers too: they must not land)."""
    columns = {"order_id": {"type": "integer"}, "amount": {"type": "integer"}, "note": {"type": "string"}}
    entity = {"primary_key": ["order_id"], "columns": columns}
    return {
        "source": SOURCE,
        "connection": {"kind": "files", "root": str(root)},
        "entities": {
            ENTITY: {
                **entity,
                "file": {"format": "csv", "path": "orders/*.csv", "stable_after_seconds": STABLE_SECONDS},
            },
            "refunds": {
                **entity,
                "file": {"format": "csv", "path": "refunds/*", "ready_marker": "{name}.done"},
            },
        },
    }


def keys(platform: HealingSlice, entity: str) -> list[int]:
    return [row[0] for row in platform.staged_rows(entity, "order_id")]


class Sensor:
    """The platform's real delivery sensor of the source, evaluated tick by tick against the instance."""

    def __init__(self, platform: HealingSlice, healing_store: Path) -> None:
        source = Source.model_validate(platform.source)
        items = [CatalogEntity(source, name, entity) for name, entity in source.entities.items()]
        (self.sensor,) = build_delivery_sensors(items, healing_store, dg.DefaultSensorStatus.RUNNING)
        self.definitions = dg.Definitions.merge(
            platform.definitions, dg.Definitions(sensors=[self.sensor], jobs=[INGESTION_JOB])
        )
        self.instance = platform.instance
        self.cursor: str | None = None

    def launch(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """The request run as the daemon would: its subset of the `ingestion` job, with its run config."""
        job = self.definitions.resolve_job_def(INGESTION_JOB.name)
        return job.execute_in_process(
            instance=self.instance,
            asset_selection=list(request.asset_selection or ()),
            run_config=request.run_config,
            tags=request.tags,
        )

    def tick(self) -> list[dg.RunRequest]:
        context = dg.build_sensor_context(self.instance, cursor=self.cursor, definitions=self.definitions)
        result = self.sensor.evaluate_tick(context)
        self.cursor = result.cursor
        return list(result.run_requests or [])


def test_files_still_being_written_wait_until_stable_or_marked_then_land_whole_exactly_once(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    deliveries = tmp_path / "deliveries"
    data_dir = tmp_path / "data"
    platform = HealingSlice(waiting_source(deliveries), data_dir, instance, PlatformSettings.local(data_dir))
    sensor = Sensor(platform, tmp_path / "data" / "ops" / "healing.sqlite")
    (deliveries / "orders").mkdir(parents=True)
    (deliveries / "refunds").mkdir(parents=True)
    growing = deliveries / "orders" / "big.csv"
    whole = "\n".join([HEADER, *csv_rows(range(1, 2001))]) + "\n"
    half = whole[: len(whole) // 2]  # cut inside a record: a torn last line
    growing.write_text(half)
    refund = deliveries / "refunds" / "r.csv"
    refund.write_text("\n".join([HEADER, *csv_rows(range(1, 6))]))  # complete, but no final newline

    assert sensor.tick() == [], "neither file is ready: no run"
    first = platform.materialize()
    assert first.success
    raw = metadata_of(first, RAW_STEP)
    assert raw["files_landed"] == 0
    assert set(raw["files_waiting"]) == {"orders/big.csv"}
    refunds_raw = metadata_of(first, f"raw__{SOURCE}__refunds")
    assert refunds_raw["files_waiting"] == {"refunds/r.csv": "no ready marker refunds/r.csv.done"}
    assert "Not landed yet" in logged(instance, first, RAW_STEP)
    assert platform.staged_rows(ENTITY) == [] and platform.staged_rows("refunds") == []

    growing.write_text(whole)  # the writer finishes: a new size, a new mtime
    assert sensor.tick() == [], "the sensor has just seen it at this size"
    time.sleep(STABLE_SECONDS + 0.2)
    (request,) = sensor.tick()
    assert request.tags["platform/entity"] == ENTITY
    assert sensor.tick() == [], "a file the sensor launched a run for is not launched again"

    # The run counts the sensor's listing as its first one (its own saw half the file): it lands at once.
    landed = sensor.launch(request)
    assert landed.success
    assert metadata_of(landed, RAW_STEP)["files_landed_names"] == ["orders/big.csv"]
    assert metadata_of(landed, RAW_STEP)["files_without_final_newline"] == []
    assert keys(platform, ENTITY) == list(range(1, 2001))

    (deliveries / "refunds" / "r.csv.done").write_text("")
    (marked,) = sensor.tick()
    assert marked.tags["platform/entity"] == "refunds"
    done = sensor.launch(marked)
    assert done.success
    refunds_raw = metadata_of(done, f"raw__{SOURCE}__refunds")
    assert refunds_raw["files_landed_names"] == ["refunds/r.csv"], "the marker itself is never landed"
    assert refunds_raw["files_without_final_newline"] == ["refunds/r.csv"]
    assert keys(platform, "refunds") == [1, 2, 3, 4, 5]

    again = platform.materialize()
    assert again.success
    assert metadata_of(again, RAW_STEP)["files_landed"] == 0
    assert metadata_of(again, f"raw__{SOURCE}__refunds")["files_landed"] == 0
    assert keys(platform, ENTITY) == list(range(1, 2001))
    assert sensor.tick() == []


def test_a_directory_marker_holds_back_every_file_beside_it_and_is_never_listed_for_landing(
    tmp_path: Path,
) -> None:
    store = FileStore(root=str(tmp_path))
    (tmp_path / "day1").mkdir()
    (tmp_path / "day1" / "a.csv").write_text(HEADER + "\n")
    (tmp_path / "day1" / "b.csv").write_text(HEADER + "\n")
    readiness = Readiness(ready_marker="_SUCCESS")
    listed = [file for file in store.list("day1/*") if not is_marker(file.path, readiness.ready_marker)]

    waiting = sort_by_readiness(store, listed, readiness, {}, now=time.time())
    assert waiting.ready == []
    assert waiting.waiting == {path: "no ready marker day1/_SUCCESS" for path in ("day1/a.csv", "day1/b.csv")}

    (tmp_path / "day1" / "_SUCCESS").write_text("")
    listed = [file for file in store.list("day1/*") if not is_marker(file.path, readiness.ready_marker)]
    ready = sort_by_readiness(store, listed, readiness, {}, now=time.time())
    assert [file.path for file in ready.ready] == ["day1/a.csv", "day1/b.csv"]


def test_a_file_stable_while_its_marker_is_missing_lands_as_soon_as_the_marker_appears(
    tmp_path: Path,
) -> None:
    """Both conditions at once: stability is remembered while the marker is missing (the clock is handed
    in, as the raw asset and the sensor hand in the wall clock), and a rewrite starts it again."""
    store = FileStore(root=str(tmp_path))
    delivered = tmp_path / "a.csv"
    delivered.write_text(HEADER + "\n1,10,n1\n")
    readiness = Readiness(stable_after_seconds=5, ready_marker="{stem}.ok")

    first = sort_by_readiness(store, store.list("*.csv"), readiness, {}, now=100.0)
    assert first.waiting == {"a.csv": "unchanged for 0.0 of 5 s (29 bytes); no ready marker a.ok"}
    later = sort_by_readiness(store, store.list("*.csv"), readiness, first.observed, now=106.0)
    assert later.waiting == {"a.csv": "no ready marker a.ok"}
    assert later.observed["a.csv"]["since"] == 100.0

    (tmp_path / "a.ok").write_text("")
    ready = sort_by_readiness(store, store.list("*.csv"), readiness, later.observed, now=106.5)
    assert [file.path for file in ready.ready] == ["a.csv"] and ready.observed == {}

    delivered.write_text(HEADER + "\n1,10,n1\n2,20,n2\n")  # rewritten: observed afresh
    rewritten = sort_by_readiness(store, store.list("*.csv"), readiness, later.observed, now=107.0)
    assert rewritten.ready == [] and rewritten.observed["a.csv"]["since"] == 107.0
