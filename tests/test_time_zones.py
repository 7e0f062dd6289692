"""Time zones of delivered timestamps: a naive value (text without an offset, a Parquet timestamp without a
zone) is local time in the column's declared `timezone` (UTC when none) and staged as naive UTC, DST
included; a value that carries its offset or zone is staged as its exact instant whatever the declaration
and whatever the DuckDB session's TimeZone; a column whose zone changes between deliveries (Parquet
`timestamp[tz=...]`) gets a new schema version with the change in its diff, and an entity whose
timestamps never carry a zone keeps its fingerprint.

The casts are tested on DuckDB directly; one end-to-end test materializes real CSV and Parquet deliveries
(raw and staged assets) through Dagster on DuckDB."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from platform_assets.catalog.loader import CatalogEntity, CatalogError, load_catalog
from platform_assets.catalog.model import ColumnType, Entity, Source, TextFormat
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from platform_assets.factories.raw_assets import build_raw_asset
from platform_assets.factories.schema_registry_asset import registry_rows
from platform_assets.factories.staged_assets import build_staged_asset
from platform_assets.keys import STAGED_SCHEMA, staged_key, staged_table
from platform_assets.staging.schema_registry import (
    delivered_time_zones,
    diff,
    fingerprint,
    merged_time_zones,
    next_version,
    schema_metadata,
    strict_cast,
    version_from_metadata,
)
from platform_assets.staging.sql import staging_select
from resources.environment import PlatformSettings, build_resources
from resources.landing.zone import Lineage, write_parquet

BERLIN = TextFormat(timezone="Europe/Berlin")
SESSION_ZONES = ["UTC", "America/New_York", "Asia/Kolkata"]
"""DuckDB sessions whose TimeZone must not shift a staged value (Kolkata: a half-hour offset)."""


def _cast(text: str, read: TextFormat, session: str = "UTC") -> object:
    """What staging makes of one text-landed timestamp value on a session set to `session`."""
    with duckdb.connect(":memory:") as con:
        con.execute(f"SET TimeZone = '{session}'")
        cast = strict_cast("landed", ColumnType.TIMESTAMP, read)
        row = con.execute(f"SELECT {cast} FROM (SELECT ?::VARCHAR AS landed)", [text]).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("session", SESSION_ZONES)
@pytest.mark.parametrize(
    ("text", "read", "expected"),
    [
        ("2025-06-01 10:00:00", BERLIN, datetime(2025, 6, 1, 8, 0)),  # summer: CEST, UTC+2
        ("2025-01-15 10:00:00", BERLIN, datetime(2025, 1, 15, 9, 0)),  # winter: CET, UTC+1
        ("2025-06-01T10:00", BERLIN, datetime(2025, 6, 1, 8, 0)),
        ("2025-06-01 10:00:00", TextFormat(), datetime(2025, 6, 1, 10, 0)),  # undeclared: UTC
        ("2025-06-01T10:00:00+02:00", TextFormat(), datetime(2025, 6, 1, 8, 0)),  # DuckDB's cast said 10:00
        ("2025-06-01T10:00:00+02:00", BERLIN, datetime(2025, 6, 1, 8, 0)),
        ("2025-06-01T10:00:00Z", BERLIN, datetime(2025, 6, 1, 10, 0)),  # an offset beats the declaration
        ("2025-01-15 10:00:00-0500", BERLIN, datetime(2025, 1, 15, 15, 0)),
        ("2025-06-01 10:00:00 Europe/Paris", TextFormat(), datetime(2025, 6, 1, 8, 0)),
        ("2025-06-01 10:00:00.250 UTC", BERLIN, datetime(2025, 6, 1, 10, 0, 0, 250000)),
        (
            "01.06.2025 10:00",
            TextFormat(timestamp_format="%d.%m.%Y %H:%M", timezone="Europe/Berlin"),
            datetime(2025, 6, 1, 8, 0),
        ),
        (
            "01.06.2025 10:00 +0300",
            TextFormat(timestamp_format="%d.%m.%Y %H:%M %z", timezone="Europe/Berlin"),
            datetime(2025, 6, 1, 7, 0),
        ),
        ("2025-06-01 10:00 Mars/Olympus", BERLIN, None),  # no zone DuckDB knows: a cast error
        ("not a time", BERLIN, None),
    ],
)
def test_text_timestamps_stage_as_utc_naive_in_the_declared_zone_aware_exactly(
    text: str, read: TextFormat, expected: datetime | None, session: str
) -> None:
    assert _cast(text, read, session) == expected


def _landed(path: Path, columns: dict[str, pa.Array], extracted_at: datetime) -> Path:
    """A landed Parquet part (a database's or an API's extraction) with `columns` and the lineage."""
    lineage = Lineage(source="meters.readings", extracted_at=extracted_at, run_id="r")
    landed = write_parquet(path, [pa.record_batch(columns)], lineage)
    assert landed is not None
    return landed.path


def _staged(entity: Entity, files: list[Path], session: str) -> list[tuple[object, ...]]:
    landed_columns = {"id", "read_at", "_source", "_extracted_at", "_run_id"}
    select = staging_select(entity, files, landed_columns, "run")
    with duckdb.connect(":memory:") as con:
        con.execute(f"SET TimeZone = '{session}'")
        return con.execute(f"SELECT id, read_at, _cast_errors FROM ({select}) ORDER BY id").fetchall()


READINGS = Entity.model_validate(
    {
        "primary_key": ["id"],
        "timezone": "Europe/Berlin",
        "columns": {"id": {"type": "integer"}, "read_at": {"type": "timestamp"}},
    }
)

SUMMER_UTC = datetime(2025, 6, 1, 10, 0)
WINTER_UTC = datetime(2025, 1, 15, 10, 0)
EXTRACTED_AT = datetime(2026, 1, 1, tzinfo=UTC)


def _zoned(utc: list[datetime], zone: str) -> pa.Array:
    """The naive UTC instants `utc` as an Arrow `timestamp[ms, tz=zone]` (its values are UTC whatever the
    zone). Built from naive values: pyarrow took an aware `datetime`'s wall time as UTC in a long session
    (10:00+01:00 came out as 10:00 UTC after tests/test_source_deletes.py ran), though not in a fresh one."""
    return pa.array(utc, pa.timestamp("ms")).cast(pa.timestamp("ms", tz=zone))


@pytest.mark.parametrize("session", SESSION_ZONES)
def test_parquet_timestamps_stage_exactly_whatever_the_session_time_zone(
    tmp_path: Path, session: str
) -> None:
    """A naive Parquet timestamp is Berlin local time; a zoned one (UTC, Europe/Paris) its exact instant.
    Before, a TIMESTAMPTZ cast to TIMESTAMP was its wall time in the session's zone (06:00 in New York)."""
    ids = pa.array([1, 2])
    naive = _landed(
        tmp_path / "naive.parquet",
        {
            "id": ids,
            "read_at": pa.array([datetime(2025, 6, 1, 10), datetime(2025, 1, 15, 10)], pa.timestamp("ms")),
        },
        EXTRACTED_AT,
    )
    utc = _landed(
        tmp_path / "utc.parquet",
        {"id": pa.array([3, 4]), "read_at": _zoned([SUMMER_UTC, WINTER_UTC], "UTC")},
        EXTRACTED_AT,
    )
    paris = _landed(
        tmp_path / "paris.parquet",
        {"id": pa.array([5]), "read_at": _zoned([SUMMER_UTC], "Europe/Paris")},
        EXTRACTED_AT,
    )
    expected_naive = [(1, datetime(2025, 6, 1, 8), None), (2, datetime(2025, 1, 15, 9), None)]
    expected_zoned = [(3, datetime(2025, 6, 1, 10), None), (4, datetime(2025, 1, 15, 10), None)]
    expected_paris = [(5, datetime(2025, 6, 1, 10), None)]
    assert _staged(READINGS, [naive], session) == expected_naive
    assert _staged(READINGS, [utc], session) == expected_zoned
    # Read together, DuckDB unifies the column as TIMESTAMPTZ and would take the naive file's values as
    # the session's local time: staging reads them as text, in their declared zone.
    assert _staged(READINGS, [naive, utc, paris], session) == expected_naive + expected_zoned + expected_paris


def test_time_zones_are_part_of_the_fingerprint_only_when_a_column_carries_one() -> None:
    columns = {"id": ColumnType.INTEGER, "read_at": ColumnType.TIMESTAMP}
    legacy = hashlib.sha256(b"id:integer\nread_at:timestamp").hexdigest()
    assert fingerprint(columns) == fingerprint(columns, {}) == legacy  # naive entities keep their versions
    assert fingerprint(columns, {"read_at": "UTC"}) != legacy
    assert fingerprint(columns, {"read_at": "UTC"}) != fingerprint(columns, {"read_at": "Europe/Paris"})

    naive = next_version(None, columns)
    assert next_version(naive, columns, {}) is naive
    zoned = next_version(naive, columns, {"read_at": "UTC"})
    assert (zoned.version, zoned.timezones) == (2, {"read_at": "UTC"})
    changes = diff(naive, columns, {"read_at": "UTC"})
    assert changes.to_json()["timezone_changed"] == {"read_at": [None, "UTC"]}
    assert "timezone_changed" not in diff(naive, columns).to_json()  # recorded as before when none changed
    assert diff(zoned, columns, {"read_at": "Europe/Paris"}).timezone_changed == {
        "read_at": ("UTC", "Europe/Paris")
    }

    recorded = schema_metadata(zoned, changes)
    assert recorded["schema/timezones"].value == {"read_at": "UTC"}
    assert version_from_metadata(recorded) == zoned
    assert "schema/timezones" not in schema_metadata(naive, diff(None, columns))


def test_a_columns_zone_is_its_latest_deliverys(tmp_path: Path) -> None:
    """Files in landing order need not be in delivery order: the latest extraction says what the column is
    now. An incremental run merges its new files' zones into the last version's."""
    later = _landed(
        tmp_path / "a.parquet",
        {"id": pa.array([1]), "read_at": _zoned([SUMMER_UTC], "UTC")},
        EXTRACTED_AT + timedelta(days=1),
    )
    earlier = _landed(
        tmp_path / "b.parquet",
        {"id": pa.array([2]), "read_at": pa.array([datetime(2025, 6, 1)], pa.timestamp("ms"))},
        EXTRACTED_AT,
    )
    assert delivered_time_zones([later, earlier]) == {"read_at": "UTC"}
    assert delivered_time_zones([earlier]) == {"read_at": None}
    assert merged_time_zones({"read_at": "UTC", "other": "UTC"}, {"read_at": None}) == {"other": "UTC"}


CATALOG = """\
source: meters
connection: {{kind: files, root: /data}}
entities:
  readings:
    file: {{path: "readings/*.csv", format: csv}}
    primary_key: [id]
{entity}    columns:
      id: {{type: integer}}
{columns}
"""


@pytest.mark.parametrize(
    ("entity", "columns", "line", "where", "message"),
    [
        (
            "",
            "      day: {type: date, timezone: Europe/Berlin}\n",
            9,
            "entities.readings.columns.day",
            "timezone do(es) not apply to a date column",
        ),
        (
            "",
            "      read_at: {type: timestamp, timezone: Berlin}\n",
            9,
            "entities.readings.columns.read_at.timezone",
            "'Berlin' is not an IANA time zone name (e.g. UTC, Europe/Berlin)",
        ),
        (
            "    timezone: localtime\n",
            "",
            7,
            "entities.readings.timezone",
            "'localtime' is not an IANA time zone name",
        ),
    ],
)
def test_a_time_zone_on_anything_but_a_timestamp_or_not_iana_is_a_catalog_error(
    tmp_path: Path, entity: str, columns: str, line: int, where: str, message: str
) -> None:
    (tmp_path / "meters.yaml").write_text(CATALOG.format(entity=entity, columns=columns))
    with pytest.raises(CatalogError) as raised:
        load_catalog(tmp_path, {}, {})
    assert f"meters.yaml:{line}: {where}: " in str(raised.value)
    assert message in str(raised.value)


def test_a_columns_time_zone_overrides_the_entitys(tmp_path: Path) -> None:
    (tmp_path / "meters.yaml").write_text(
        CATALOG.format(
            entity="    timezone: Europe/Berlin\n",
            columns="      a: {type: timestamp}\n      b: {type: timestamp, timezone: America/New_York}\n",
        )
    )
    (item,) = load_catalog(tmp_path, {}, {})
    assert item.entity.text_format("a").timezone == "Europe/Berlin"
    assert item.entity.text_format("b").typed() == TextFormat(timezone="America/New_York")


def test_a_timestamp_format_with_an_offset_is_accepted_on_a_machine_outside_utc() -> None:
    """The catalog's read-back check of a `%z` format compared a TIMESTAMPTZ with the sample taken in the
    machine's zone: on a Berlin machine (DuckDB's TimeZone follows `TZ`) every such format was refused."""
    check = (
        "from platform_assets.catalog.model import Column; "
        "print(Column(type='timestamp', timestamp_format='%d.%m.%Y %H:%M %z').timestamp_format)"
    )
    environment = {**os.environ, "TZ": "Europe/Berlin"}
    done = subprocess.run([sys.executable, "-c", check], env=environment, capture_output=True, text=True)
    assert done.stdout.strip() == "%d.%m.%Y %H:%M %z", done.stderr


# End to end: real CSV and Parquet deliveries through real Dagster materializations on DuckDB.


@dataclass
class MetersPlatform:
    root: Path
    settings: PlatformSettings
    instance: dg.DagsterInstance

    def deliver(self, path: str, content: str | pa.Table) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            target.write_text(content)
        else:
            pq.write_table(content, target)

    def materialize(self) -> dg.ExecuteInProcessResult:
        columns = {"id": {"type": "integer"}, "read_at": {"type": "timestamp"}}
        source = Source.model_validate(
            {
                "source": "meters",
                "connection": {"kind": "files", "root": str(self.root)},
                "entities": {
                    "csv_readings": {
                        "file": {"format": "csv", "path": "csv/*.csv"},
                        "primary_key": ["id"],
                        "columns": {**columns, "read_at": {"type": "timestamp", "timezone": "Europe/Berlin"}},
                    },
                    "parquet_readings": {
                        "file": {"format": "parquet", "path": "parquet/*.parquet"},
                        "timezone": "Europe/Berlin",
                        "primary_key": ["id"],
                        "columns": columns,
                    },
                },
            }
        )
        items = [CatalogEntity(source, name, entity) for name, entity in source.entities.items()]
        definitions = dg.Definitions(
            assets=[
                asset for item in items for asset in (build_raw_asset(item), build_staged_asset(item, "test"))
            ],
            resources=build_resources(self.settings, DBT_PROJECT_DIR),
        )
        job = definitions.resolve_implicit_global_asset_job_def()
        return job.execute_in_process(instance=self.instance, raise_on_error=False)

    def staged(self, entity: str) -> list[tuple[object, ...]]:
        warehouse = build_resources(self.settings, DBT_PROJECT_DIR)["warehouse"]
        table = warehouse.table_ref(STAGED_SCHEMA, staged_table("meters", entity))
        return [tuple(row) for row in warehouse.query(f"SELECT id, read_at FROM {table} ORDER BY id")]

    def staged_metadata(self, result: dg.ExecuteInProcessResult, entity: str) -> dict[str, object]:
        (event,) = result.asset_materializations_for_node(f"staged__meters__{entity}")
        return {name: value.value for name, value in event.metadata.items()}

    def warnings(self, result: dg.ExecuteInProcessResult) -> list[str]:
        return [
            entry.user_message
            for entry in self.instance.all_logs(result.run_id)
            if entry.level == logging.WARNING
        ]


@pytest.fixture
def meters(tmp_path: Path) -> Iterator[MetersPlatform]:
    with dg.instance_for_test() as instance:
        yield MetersPlatform(tmp_path / "deliveries", PlatformSettings.local(tmp_path / "data"), instance)


def _readings(ids: list[int], read_at: pa.Array) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "read_at": read_at})


def test_berlin_local_csv_and_parquet_stage_as_utc_and_a_zone_change_is_a_new_schema_version(
    meters: MetersPlatform,
) -> None:
    """A meter vendor delivers Berlin local times: a CSV, and Parquet written first without a zone. The
    staged values are UTC (summer -2 h, winter -1 h); offsets in the CSV's text are exact. Then the vendor
    switches its Parquet writer to `timestamp[ms, tz=UTC]`, later to Europe/Paris: each switch is a new
    schema version whose diff names it, the step succeeds, and every value stays the exact instant."""
    meters.deliver(
        "csv/1.csv",
        "id,read_at\n"
        "1,2025-06-01 10:00:00\n"  # Berlin summer time
        "2,2025-01-15 10:00:00\n"  # Berlin winter time
        "3,2025-06-01T10:00:00+02:00\n"  # an offset: exact, whatever the declaration
        "4,2025-06-01T10:00:00Z\n",
    )
    meters.deliver(
        "parquet/1.parquet",
        _readings(
            [1, 2], pa.array([datetime(2025, 6, 1, 10), datetime(2025, 1, 15, 10)], pa.timestamp("ms"))
        ),
    )
    first = meters.materialize()
    assert first.success
    assert meters.staged("csv_readings") == [
        (1, datetime(2025, 6, 1, 8)),
        (2, datetime(2025, 1, 15, 9)),
        (3, datetime(2025, 6, 1, 8)),
        (4, datetime(2025, 6, 1, 10)),
    ]
    naive = [(1, datetime(2025, 6, 1, 8)), (2, datetime(2025, 1, 15, 9))]
    assert meters.staged("parquet_readings") == naive
    metadata = meters.staged_metadata(first, "parquet_readings")
    assert (metadata["schema/version"], metadata["schema/columns"]) == (
        1,
        {"id": "integer", "read_at": "timestamp"},
    )
    assert "schema/timezones" not in metadata

    meters.deliver("parquet/2.parquet", _readings([3], _zoned([SUMMER_UTC], "UTC")))
    second = meters.materialize()
    assert second.success
    metadata = meters.staged_metadata(second, "parquet_readings")
    assert metadata["schema/version"] == 2
    assert metadata["schema/timezones"] == {"read_at": "UTC"}
    assert metadata["schema/diff"]["timezone_changed"] == {"read_at": [None, "UTC"]}
    # The zone change rebuilds the table over both files: the naive file is still read in Berlin time.
    assert metadata["staging/mode"] == "full"
    assert meters.staged("parquet_readings") == [*naive, (3, datetime(2025, 6, 1, 10))]
    assert any(
        "read_at is delivered with time zone UTC, was without time zone" in w for w in meters.warnings(second)
    )

    # 10:00 in Paris (CET, UTC+1) is 09:00 UTC.
    meters.deliver("parquet/3.parquet", _readings([4], _zoned([datetime(2025, 1, 15, 9)], "Europe/Paris")))
    third = meters.materialize()
    assert third.success
    metadata = meters.staged_metadata(third, "parquet_readings")
    assert metadata["schema/version"] == 3
    assert metadata["schema/diff"]["timezone_changed"] == {"read_at": ["UTC", "Europe/Paris"]}
    assert meters.staged("parquet_readings") == [
        *naive,
        (3, datetime(2025, 6, 1, 10)),
        (4, datetime(2025, 1, 15, 9)),
    ]
    # The CSV entity, untouched, kept its version; the registry table carries each version's zones.
    assert meters.staged_metadata(third, "csv_readings")["schema/version"] == 1
    rows = registry_rows(meters.instance, [staged_key("meters", "parquet_readings")]).to_pylist()
    assert [(row["version"], row["timezones_json"]) for row in rows] == [
        (1, "{}"),
        (2, '{"read_at": "UTC"}'),
        (3, '{"read_at": "Europe/Paris"}'),
    ]
