"""Declarative automation: which assets carry which condition, the sensors that evaluate them, and the
conditions' behaviour, evaluated by Dagster over a real instance with real materializations.

The behaviour tests use a three-asset chain shaped like the platform's (raw -> staged with a blocking
check -> mart) carrying the platform's own conditions, so that each evaluation takes milliseconds."""

from pathlib import Path

import dagster as dg
import pytest

from platform_assets.definitions import build_definitions
from resources.environment import PlatformSettings
from sensors.automation.conditions import (
    DBT_AUTOMATION_SENSOR,
    INGESTION_AUTOMATION_SENSOR,
    OPS_AUTOMATION_SENSOR,
    TRIGGER_TAG,
    on_upstream_update,
)

RAW = dg.AssetKey(["raw", "toy", "items"])
STAGED = dg.AssetKey(["staged", "toy", "items"])
MART = dg.AssetKey("fct_items")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path) -> dg.Definitions:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHOP_API_KEY", "test")
        return build_definitions(PlatformSettings.local(tmp_path_factory.mktemp("automation")))


def test_conditions_on_the_right_assets(platform: dg.Definitions) -> None:
    graph = platform.resolve_asset_graph()
    labels = {
        key.to_user_string(): (node.automation_condition.get_label() if node.automation_condition else None)
        for key in graph.get_all_asset_keys()
        for node in [graph.get(key)]
    }
    raw = {key: label for key, label in labels.items() if key.startswith("raw/")}
    assert raw and set(raw.values()) == {None}, "raw assets are started by schedules and sensors only"
    staged = [label for key, label in labels.items() if key.startswith("staged/")]
    assert staged and set(staged) == {"on_upstream_update"}
    dbt = [
        labels[key.to_user_string()] for key in graph.get_all_asset_keys() if "dbt" in graph.get(key).kinds
    ]
    assert dbt and set(dbt) == {"on_upstream_update"}
    assert labels["ops/healing_incidents"].startswith("on_cron(")
    assert labels["ops/schema_registry"].startswith("on_cron("), "not a dependent of every staged asset"


def test_raw_assets_share_their_source_pool(platform: dg.Definitions) -> None:
    graph = platform.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        if key.path[0] == "raw":
            assert graph.get(key).pools == {f"source_{key.path[1]}"}


def test_automation_sensors_split_by_kind_and_running(platform: dg.Definitions) -> None:
    repository = platform.get_repository_def()
    sensors = {
        sensor.name: sensor
        for sensor in repository.sensor_defs
        if isinstance(sensor, dg.AutomationConditionSensorDefinition)
    }
    assert set(sensors) == {INGESTION_AUTOMATION_SENSOR, DBT_AUTOMATION_SENSOR, OPS_AUTOMATION_SENSOR}
    graph = repository.asset_graph
    targets = {name: sensor.asset_selection.resolve(graph) for name, sensor in sensors.items()}
    for sensor in sensors.values():
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert sensor.run_tags[TRIGGER_TAG] == "automation"
    assert dg.AssetKey(["staged", "shop", "orders"]) in targets[INGESTION_AUTOMATION_SENSOR]
    assert dg.AssetKey("fct_orders") in targets[DBT_AUTOMATION_SENSOR]
    assert dg.AssetKey(["ops", "healing_incidents"]) in targets[OPS_AUTOMATION_SENSOR]
    # Every asset is covered by exactly one sensor: no condition is left to an implicit default sensor.
    covered = [key for keys in targets.values() for key in keys]
    assert sorted(covered) == sorted(set(covered)) == sorted(graph.get_all_asset_keys())


class Toggles:
    """What the toy assets do on their next execution."""

    def __init__(self) -> None:
        self.staged_fails = False
        self.check_passes = True


@pytest.fixture
def toggles() -> Toggles:
    return Toggles()


@pytest.fixture
def chain(toggles: Toggles) -> list[dg.AssetsDefinition]:
    @dg.asset(key=RAW)
    def raw() -> None:
        """No condition, as on the platform."""

    @dg.asset(key=STAGED, deps=[RAW], automation_condition=on_upstream_update())
    def staged() -> None:
        if toggles.staged_fails:
            raise RuntimeError("staging failed")

    @dg.asset_check(asset=STAGED, name="schema_contract", blocking=True)
    def contract() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=toggles.check_passes)

    @dg.asset(key=MART, deps=[STAGED], automation_condition=on_upstream_update())
    def mart() -> None: ...

    return [raw, staged, contract, mart]


class Evaluator:
    """Successive ticks of an automation sensor over one instance: the cursor carries over."""

    def __init__(self, assets: list, instance: dg.DagsterInstance) -> None:
        self.definitions = dg.Definitions(assets=[a for a in assets if isinstance(a, dg.AssetsDefinition)])
        self.assets = assets
        self.instance = instance
        self.cursor = None

    def tick(self) -> set[dg.AssetKey]:
        result = dg.evaluate_automation_conditions(self.definitions, self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {key for key in (STAGED, MART) if result.get_num_requested(key)}

    def materialize(self, *keys: dg.AssetKey) -> bool:
        result = dg.materialize(
            self.assets, selection=list(keys), instance=self.instance, raise_on_error=False
        )
        return result.success


@pytest.fixture
def evaluator(chain: list) -> dg.DagsterInstance:
    with dg.instance_for_test() as instance:
        yield Evaluator(chain, instance)


def test_eager_after_raw_materializes_and_not_for_old_history(evaluator: Evaluator) -> None:
    evaluator.materialize(RAW, STAGED, MART)
    assert evaluator.tick() == set(), "history from before the first evaluation requests nothing"
    evaluator.materialize(RAW)
    assert evaluator.tick() == {STAGED, MART}, "staged, and what reads it joins the same run"
    assert evaluator.tick() == set(), "requested once per update"


def test_a_run_that_targeted_the_asset_does_not_trigger_it_again(evaluator: Evaluator) -> None:
    evaluator.materialize(RAW, STAGED, MART)
    evaluator.tick()
    evaluator.materialize(RAW, STAGED, MART)  # e.g. the schedule's run: raw and everything downstream
    assert evaluator.tick() == set()


def test_not_requested_again_after_its_failed_run(evaluator: Evaluator, toggles: Toggles) -> None:
    evaluator.materialize(RAW, STAGED, MART)
    evaluator.tick()
    toggles.staged_fails = True
    assert not evaluator.materialize(STAGED)
    evaluator.materialize(RAW)
    assert STAGED not in evaluator.tick(), "the healing layer owns the retry of a failed asset"
    toggles.staged_fails = False
    assert evaluator.materialize(STAGED)  # e.g. the healing sensor's retry succeeded
    evaluator.tick()
    evaluator.materialize(RAW)
    assert STAGED in evaluator.tick(), "a success clears it"


def test_not_requested_while_a_blocking_check_upstream_failed(evaluator: Evaluator, toggles: Toggles) -> None:
    evaluator.materialize(RAW, STAGED, MART)
    evaluator.tick()
    toggles.check_passes = False
    evaluator.materialize(STAGED)
    assert MART not in evaluator.tick()
    toggles.check_passes = True
    evaluator.materialize(STAGED)
    assert MART in evaluator.tick()


def test_schedules_and_sensors_share_jobs_instead_of_one_implicit_job_each(platform: dg.Definitions) -> None:
    """Every launching trigger runs a subset of the `ingestion` job; the healing sensor launches by asset
    selection into Dagster's own asset job. No trigger adds a job of its own to the code location (the two
    operator jobs, approving a healing action and resetting a watermark, are launched by people)."""
    repository = platform.get_repository_def()
    assert {job.name for job in repository.get_all_jobs()} == {
        "__ASSET_JOB",
        "ingestion",
        "apply_healing_action",
        "reset_extraction",
    }
    launching = [*repository.schedule_defs, *(s for s in repository.sensor_defs if s.targets)]
    assert launching and {trigger.job_name for trigger in launching} == {"ingestion"}
    healing = repository.get_sensor_def("healing")
    assert not healing.targets and healing.asset_selection is not None


def test_each_source_has_its_own_raw_and_staged_group(platform: dg.Definitions) -> None:
    """The UI labels a node with its entity's name: one group per source and layer keeps the labels in a
    group unique and says which source they belong to."""
    graph = platform.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        if key.path[0] in ("raw", "staged"):
            assert graph.get(key).group_name == f"{key.path[0]}_{key.path[1]}", key.to_user_string()
    labels = [(graph.get(key).group_name, key.path[-1]) for key in graph.get_all_asset_keys()]
    assert len(labels) == len(set(labels)), "no two nodes of a group share a label"
