"""Declarative automation: which conditions the platform's assets carry, and the sensors that evaluate them.

One mechanism per asset, so nothing is triggered twice:

- **raw assets** carry no condition. They are started by the source's cron schedule
  (`sensors/automation/schedules.py`), by its delivery sensor (`sensors/automation/delivery_sensor.py`) or its
  change probe (`sensors/automation/db_change_sensor.py`). `AutomationCondition.on_cron` was the alternative
  for cron-scheduled sources and was left out on purpose: a condition is evaluated by the daemon and cannot
  consult the source's circuit breaker (the healing ledger), a schedule can, and both together would
double-trigger. - **everything downstream** (staged tables, dbt models, the schema registry) carries
  `on_upstream_update`: Dagster's `eager` (requested once after a dependency updated in a run that did not
  also target it; never while a dependency or the asset is in progress or missing), and additionally
  - not while a blocking check of a dependency has failed (`schema_contract` of a staged table): the bad
    delivery stays out of the marts until it is fixed and re-staged;
  - not when the asset's own latest execution failed: the healing sensor owns retries (it classifies the
    failure, backs off, opens breakers); automation re-requesting a failed asset on every upstream update
    would retry behind its back. A successful (healing or manual) run clears it.
- **the operations tables** carry `on_cron(OPS_CRON)`: the healing ledger table (`ops.healing_incidents`,
  read from SQLite, no upstream asset) and the schema registry (`ops.schema_registry`, read from the staged
  assets' materialization history). The registry has no dependencies: as the dependent of every staged
  asset it made `ops_automation` evaluate every staged asset on every tick (4-9 s a tick at 500 entities),
  and an hourly copy of the versions is what it is for.

Flood guards (what happens when a sensor is switched on after a pause, or for the first time):
`eager` fires on *new* updates only (`since_last_handled`, reset by the first evaluation, a request or a
materialization): an asset already missing or updated before the sensor first ran is not requested, and
after a pause each asset is requested at most once however many upstream updates it missed. `on_cron`
likewise fires once for the latest cron tick, never once per missed tick. The sensor groups a tick's
requests into as few runs as possible, every run carries `platform/trigger=automation`, which
`dagster.yaml` limits to `AUTOMATION_RUN_LIMIT` concurrent runs, and queued runs wait in the run queue.

The conditions are built-in ones, so the sensors evaluate them in the daemon (`use_user_code_server`
stays False: no code-server round trip per tick). The sensors are split by kind, as
dagster-open-platform splits its own: ingestion (raw and staged), dbt, and operations (everything else),
so that one can be paused (from the UI: Automation -> the sensor -> toggle) without stopping the others.
They are RUNNING by default in every environment: they launch nothing until something upstream is
materialized, and an automation that must be switched on by hand is one that silently does nothing.
"""

from collections.abc import Callable, Sequence

import dagster as dg

TRIGGER_TAG = "platform/trigger"
"""Run tag naming what launched a run: `automation`, `schedule`, `delivery`, `change`."""
SOURCE_TAG = "platform/source"
"""Run tag naming the source a run ingests (schedules, delivery and change sensors): `dagster.yaml`
limits each source to one run at a time."""
ENTITY_TAG = "platform/entity"
"""Run tag naming the entity of the source a delivery or change sensor's run ingests."""
AUTOMATION_TRIGGER = "automation"
AUTOMATION_RUN_LIMIT = 2
"""Concurrent runs launched by automation sensors (the limit itself is in `dagster.yaml`)."""
OPS_CRON = "0 * * * *"
"""The operations tables (the healing ledger, the schema registry) are refreshed in the warehouse hourly."""
AUTOMATION_INTERVAL_SECONDS = 60
"""Between two evaluations of an automation sensor. A tick evaluates every asset of its selection: at 500
entities an `ingestion_automation` tick takes ~5 s of the daemon's CPU, which every 30 s was a sixth of a
core spent while nothing happens; staging a minute after its landing is soon enough for batch data."""
INGESTION_AUTOMATION_SENSOR = "ingestion_automation"
DBT_AUTOMATION_SENSOR = "dbt_automation"
OPS_AUTOMATION_SENSOR = "ops_automation"

AssetLike = dg.AssetsDefinition | dg.AssetSpec


def on_upstream_update() -> dg.AutomationCondition:
    """`eager`, but never past a failed blocking check upstream, nor after the asset's own failed run."""
    return (
        dg.AutomationCondition.eager()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
        & ~dg.AutomationCondition.execution_failed()
    ).with_label("on_upstream_update")


def on_cron(cron: str, timezone: str = "UTC") -> dg.AutomationCondition:
    """Dagster's `on_cron`, minus re-requests after the asset's own failed run (the healing layer's)."""
    return (
        dg.AutomationCondition.on_cron(cron, timezone) & ~dg.AutomationCondition.execution_failed()
    ).with_label(f"on_cron({cron}, {timezone})")


def apply_automation_conditions(
    assets: Sequence[AssetLike], condition_for: Callable[[dg.AssetSpec], dg.AutomationCondition | None]
) -> list[AssetLike]:
    """`assets` with the condition `condition_for` picks for each spec (None: no condition). An asset that
    declares its own condition keeps it. Applied once, at the root (`platform_assets/definitions.py`)."""

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        condition = condition_for(spec)
        if condition is None or spec.automation_condition is not None:
            return spec
        return spec.replace_attributes(automation_condition=condition)

    return list(dg.map_asset_specs(attach, assets))


def build_automation_sensors(
    ingestion: dg.AssetSelection,
    dbt: dg.AssetSelection,
    *,
    minimum_interval_seconds: int = AUTOMATION_INTERVAL_SECONDS,
) -> list[dg.AutomationConditionSensorDefinition]:
    """Three sensors: `ingestion` (raw and staged assets), `dbt` (the dbt models), and operations (every
    other asset, so that no condition is left to Dagster's implicit, stopped default sensor)."""
    run_tags = {TRIGGER_TAG: AUTOMATION_TRIGGER}
    targets = {
        INGESTION_AUTOMATION_SENSOR: (ingestion, "Staged tables after their raw asset landed new data."),
        DBT_AUTOMATION_SENSOR: (dbt, "dbt models after the staged tables (or models) they read changed."),
        OPS_AUTOMATION_SENSOR: (
            dg.AssetSelection.all() - ingestion - dbt,
            "Operations tables: the schema registry and the healing ledger, hourly.",
        ),
    }
    return [
        dg.AutomationConditionSensorDefinition(
            name,
            target=target,
            run_tags=run_tags,
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=minimum_interval_seconds,
            description=description,
        )
        for name, (target, description) in targets.items()
    ]
