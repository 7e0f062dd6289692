"""Which entities land in the PostgreSQL bronze layer, and what their bronze rows say about themselves.

When the landing resource is a `BronzeLandingZone` (`PLATFORM_LANDING=bronze`), database and REST entities
land in `bronze.<source>__<entity>`; delivered files keep landing as files, with their processed-file
ledger, so that a file is parsed once, by DuckDB, when it is staged (ARCHITECTURE: one parse per delivery).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import DatabaseSourceConnection, RestSourceConnection
from platform_assets.staging.plan import LandedSet
from platform_assets.staging.retention import LandedFiles, RetainedLanding
from resources.landing.bronze import BronzeTarget
from resources.landing.bronze_zone import BronzeLandedSet, BronzeLandingZone
from resources.landing.zone import InFlight, LandingZone

BRONZE_KINDS = ("database", "rest")


def bronze_target(item: CatalogEntity, landing: LandingZone) -> BronzeTarget | None:
    """The entity's bronze table, or None when it lands as files."""
    connection = item.source.connection
    if not isinstance(landing, BronzeLandingZone) or connection.kind not in BRONZE_KINDS:
        return None
    entity = item.entity
    source_timestamp = endpoint = None
    if isinstance(connection, DatabaseSourceConnection) and entity.table and entity.table.incremental:
        source_timestamp = entity.table.incremental.cursor_column
    if isinstance(connection, RestSourceConnection) and entity.endpoint is not None:
        endpoint = f"{connection.base_url.rstrip('/')}{entity.endpoint.path}"
        if entity.endpoint.incremental is not None:
            source_timestamp = entity.endpoint.incremental.cursor_field
    return BronzeTarget(item.source_name, item.name, tuple(entity.primary_key), source_timestamp, endpoint)


@contextlib.contextmanager
def open_extraction(landing: LandingZone, item: CatalogEntity) -> Iterator[InFlight]:
    """The entity's in-flight area: in bronze or among the landed files."""
    target = bronze_target(item, landing)
    if target is None:
        with landing.extraction(item.source_name, item.name) as inflight:
            yield inflight
    else:
        assert isinstance(landing, BronzeLandingZone)
        with landing.bronze_extraction(target) as inflight:
            yield inflight


def bronze_landed(
    landing: LandingZone, item: CatalogEntity, run_id: str, only: Iterable[str] | None = None
) -> BronzeLandedSet | None:
    """The entity's committed bronze parts (`only`: those named) as the staging run `run_id` reads them, or
    None when it lands as files."""
    target = bronze_target(item, landing)
    if target is None:
        return None
    assert isinstance(landing, BronzeLandingZone)
    return landing.bronze_landed(target, run_id, only)


def key_scans(
    landing: LandingZone, item: CatalogEntity, landed: LandedSet, after: datetime | None = None
) -> list[Path]:
    """The entity's key scans (`deletes: reconcile`) as Parquet files: its committed `keys` part exported
    (only one taken `after`: what an incremental run can apply), when `landed` is its committed bronze
    parts; else the files under its key scans directory (staging's `scan_is_new` tells which is new)."""
    if isinstance(landed, BronzeLandedSet):
        return landed.key_scans(after)
    return sorted(landing.key_scans_dir(item.source_name, item.name).glob("*.parquet"))


def retained_landing(landing: LandingZone, item: CatalogEntity, landed: LandedSet) -> RetainedLanding:
    """What retention removes the entity's landed data from: its committed bronze parts, or its landed
    files (by its landed index, also when `landed` is a snapshot's own files)."""
    if isinstance(landed, BronzeLandedSet):
        return landed
    return LandedFiles(landing.landed_index(item.source_name, item.name))
