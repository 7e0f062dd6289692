"""What starts runs, derived from the catalog: the arguments `sensors/` factories take, built here so that
`sensors/` never reads the catalog.

- **conditions** (`condition_for`): raw assets none (started by the triggers below), the operations tables
  (the healing ledger, the schema registry) on an hourly cron, every other asset `on_upstream_update`
  (`sensors/automation/conditions.py`).
- **schedules**: one per distinct `schedule` among a source's entities (the source's, or an entity's own),
  running those raw assets and what is downstream of them (operations tables excepted: their own
  conditions follow).
- every schedule, delivery and change sensor launches a subset of one job, `ingestion` (`INGESTION_JOB`),
  rather than an implicit job of its own (`sensors/automation/targets.py`).
- **delivery sensors**: one per file source; **change sensors**: one per database source with incremental
  tables.

Launching triggers (schedules, delivery and change sensors) read the sources; their default is
`launch_status`: STOPPED in the embedded `local` environment (a laptop's `dagster dev` should not start
pulling sources and competing with the runs its user starts; turn them on in the UI), RUNNING in the
deployed environments (`postgres`, `bigquery`), where a trigger nobody switched on is an outage nobody
notices. The automation condition sensors are RUNNING everywhere (see `sensors/automation/conditions.py`).
"""

from collections import defaultdict
from collections.abc import Iterable

import dagster as dg

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import FilesConnection, Schedule
from platform_assets.keys import (
    INCIDENTS_KEY,
    OPS_GROUP,
    RAW_ASSETS,
    RAW_LAYER,
    SCHEMA_REGISTRY_KEY,
    STAGED_ASSETS,
    raw_key,
)
from resources.environment import DEFAULT_DELIVERY_POLL_SECONDS, PlatformEnvironment, PlatformSettings
from resources.state.database import StateLocation
from sensors.automation.conditions import OPS_CRON, on_cron, on_upstream_update
from sensors.automation.db_change_sensor import ProbedTable, build_db_change_sensor
from sensors.automation.delivery_sensor import WatchedEntity, build_delivery_sensor
from sensors.automation.schedules import build_source_schedule

INGESTION_SELECTION = RAW_ASSETS | STAGED_ASSETS
DBT_SELECTION = dg.AssetSelection.kind("dbt")
INGESTION_JOB = dg.define_asset_job(
    "ingestion",
    selection=RAW_ASSETS.downstream() - dg.AssetSelection.groups(OPS_GROUP),
    description="Raw assets and what reads them: every schedule, delivery and change sensor runs the part "
    "of it that its source or entity feeds.",
)


def condition_for(spec: dg.AssetSpec) -> dg.AutomationCondition | None:
    if spec.key.path[0] == RAW_LAYER:
        return None
    if spec.key in (INCIDENTS_KEY, SCHEMA_REGISTRY_KEY):
        return on_cron(OPS_CRON)
    return on_upstream_update()


def launch_status(settings: PlatformSettings) -> tuple[dg.DefaultScheduleStatus, dg.DefaultSensorStatus]:
    if settings.environment is PlatformEnvironment.LOCAL:
        return dg.DefaultScheduleStatus.STOPPED, dg.DefaultSensorStatus.STOPPED
    return dg.DefaultScheduleStatus.RUNNING, dg.DefaultSensorStatus.RUNNING


def entity_target(items: Iterable[CatalogEntity]) -> dg.AssetSelection:
    """The raw assets of `items` and everything downstream of them, operations tables excepted."""
    raws = dg.AssetSelection.assets(*(raw_key(item.source_name, item.name) for item in items))
    return raws.downstream() - dg.AssetSelection.groups(OPS_GROUP)


def effective_schedule(item: CatalogEntity) -> Schedule | None:
    return item.entity.schedule or item.source.schedule


def build_schedules(
    catalog: Iterable[CatalogEntity], healing_store: StateLocation, status: dg.DefaultScheduleStatus
) -> list[dg.ScheduleDefinition]:
    """`<source>_schedule` for the source's own schedule, `<source>_<entity>_schedule` for an entity's own."""
    groups: dict[tuple[str, Schedule], list[CatalogEntity]] = defaultdict(list)
    for item in catalog:
        schedule = effective_schedule(item)
        if schedule is not None:
            groups[(item.source_name, schedule)].append(item)
    schedules = []
    for (source, schedule), items in groups.items():
        own = schedule == items[0].source.schedule
        name = f"{source}_schedule" if own else f"{source}_{'_'.join(i.name for i in items)}_schedule"
        schedules.append(
            build_source_schedule(
                name,
                source=source,
                cron=schedule.cron,
                timezone=schedule.timezone,
                job=INGESTION_JOB,
                target=entity_target(items),
                healing_store=healing_store,
                default_status=status,
            )
        )
    return schedules


def build_delivery_sensors(
    catalog: Iterable[CatalogEntity],
    healing_store: StateLocation,
    status: dg.DefaultSensorStatus,
    poll_seconds: int = DEFAULT_DELIVERY_POLL_SECONDS,
) -> list[dg.SensorDefinition]:
    by_source: dict[str, list[CatalogEntity]] = defaultdict(list)
    for item in catalog:
        if isinstance(item.source.connection, FilesConnection) and item.entity.file is not None:
            by_source[item.source_name].append(item)
    return [
        build_delivery_sensor(
            f"{source}_deliveries",
            source=source,
            root=items[0].source.connection.root,  # type: ignore[union-attr]
            entities=[
                WatchedEntity(
                    item.name,
                    item.entity.file.path,  # type: ignore[union-attr]
                    entity_target([item]),
                    readiness=item.entity.file.readiness(),  # type: ignore[union-attr]
                    raw_key=raw_key(item.source_name, item.name),
                )
                for item in items
            ],
            job=INGESTION_JOB,
            healing_store=healing_store,
            default_status=status,
            minimum_interval_seconds=poll_seconds,
        )
        for source, items in by_source.items()
    ]


def build_change_sensors(
    catalog: Iterable[CatalogEntity], healing_store: StateLocation, status: dg.DefaultSensorStatus
) -> list[dg.SensorDefinition]:
    by_source: dict[str, list[tuple[CatalogEntity, ProbedTable]]] = defaultdict(list)
    for item in catalog:
        table = item.entity.table
        if table is None or table.incremental is None or table.table is None:
            continue
        probed = ProbedTable(
            item.name, table.table, table.incremental.cursor_column, entity_target([item]), table.schema_name
        )
        by_source[item.source_name].append((item, probed))
    return [
        build_db_change_sensor(
            f"{source}_changes",
            source=source,
            connection=pairs[0][0].source.connection,  # type: ignore[arg-type]
            tables=[probed for _, probed in pairs],
            job=INGESTION_JOB,
            healing_store=healing_store,
            default_status=status,
        )
        for source, pairs in by_source.items()
    ]
