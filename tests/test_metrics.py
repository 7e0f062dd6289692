"""The metrics endpoint against real parts: a Dagster instance on disk with real materializations carrying
the platform's metadata, a real healing ledger with incidents, outcomes and breakers, the HTTP server on a
loopback port, and Prometheus' own text parser on what it serves. The entry point is also started as the
process systemd runs, with DAGSTER_HOME and PLATFORM_DATA_DIR only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
    TickData,
    TickStatus,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon.types import DaemonHeartbeat
from dagster._utils.error import SerializableErrorInfo
from fixtures.server_process import free_port
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resources.state.healing_store import Breaker, HealingStore, Incident
from sensors.observability.health import (
    CodeServer,
    HealthProbe,
    HealthThresholds,
    code_location_loaded,
    code_servers,
)
from sensors.observability.metrics import metric_names
from sensors.observability.metrics_server import build_registry, serve

REPO = Path(__file__).resolve().parents[1]
RAW_ROWS = 120
STAGED_ROWS = 118
QUALITY = {"quality/score": 92.5, "quality/completeness": 99.0, "quality/validity": 88.0}


@dg.asset(key=["raw", "shop", "orders"])
def raw_orders() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"dagster/row_count": RAW_ROWS, "bytes": 4096})


@dg.asset(key=["staged", "shop", "orders"], deps=[raw_orders])
def staged_orders() -> dg.MaterializeResult:
    time.sleep(0.05)  # a measurable step duration
    return dg.MaterializeResult(
        metadata={"rows_written": STAGED_ROWS, "dagster/row_count": STAGED_ROWS + 1000, **QUALITY}
    )


def _incident(
    dedup: str, category: str, status: str, kind: str = "step_failure", **extra: object
) -> Incident:
    now = time.time()
    return Incident(
        incident_id=HealingStore.new_incident_id(), dedup_key=dedup, opened_at=now - 600, updated_at=now,
        kind=kind, asset_key="raw/shop_api/products", source="shop_api", run_id=None, category=category,
        confidence=0.9, rule_id="r", explanation="e", evidence_json="{}", status=status, **extra,
    )  # fmt: skip


@dataclass
class World:
    home: Path
    data_dir: Path
    instance: dg.DagsterInstance
    materialized_at: float


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("metrics")
    home, data_dir = root / "dagster_home", root / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    store = HealingStore(data_dir / "ops" / "healing.sqlite")
    store.add_incident(_incident("a", "rate_limited", "resolved", time_to_recover_s=30.0))
    store.add_incident(_incident("b", "rate_limited", "healing"))
    store.add_incident(_incident("c", "schema_drift", "proposed", kind="check_failure"))
    store.record_outcome("x", "rate_limited", "slow_down", True, time.time())
    store.record_outcome("y", "rate_limited", "slow_down", False, time.time())
    store.save_breaker(Breaker("shop_api", "open", 3, time.time()))
    store.save_breaker(Breaker("shop_db", "closed", 0, time.time()))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        before = time.time()
        assert dg.materialize([raw_orders, staged_orders], instance=instance).success
        yield World(home, data_dir, instance, before)


def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matches = [value for found, value in samples.get(name, []) if found == labels]
    assert len(matches) == 1, f"{name}{labels}: {samples.get(name)}"
    return matches[0]


def test_scrape_over_http_reports_instance_and_ledger(world: World) -> None:
    server, thread = serve(
        build_registry(world.instance, world.data_dir / "ops" / "healing.sqlite", world.data_dir),
        "127.0.0.1",
        0,
    )
    try:
        samples = _scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        thread.join(timeout=10)

    assert _value(samples, "dataplatform_metrics_source_up", source="instance") == 1
    assert _value(samples, "dataplatform_metrics_source_up", source="ledger") == 1
    # rows: rows_written wins over the table's row count; raw assets report their dagster/row_count
    assert _value(samples, "dataplatform_rows_ingested", asset="raw/shop/orders", layer="raw") == RAW_ROWS
    assert (
        _value(samples, "dataplatform_rows_ingested", asset="staged/shop/orders", layer="staged")
        == STAGED_ROWS
    )
    assert _value(samples, "dataplatform_quality_score", asset="staged/shop/orders") == 92.5
    assert _value(samples, "dataplatform_quality_dimension_score", asset="staged/shop/orders",
                  dimension="validity") == 88.0  # fmt: skip
    assert "raw/shop/orders" not in {labels["asset"] for labels, _ in samples["dataplatform_quality_score"]}
    lag = _value(samples, "dataplatform_asset_freshness_lag_seconds", asset="raw/shop/orders", layer="raw")
    assert 0 <= lag <= time.time() - world.materialized_at + 1
    stamp = _value(samples, "dataplatform_asset_last_materialization_timestamp_seconds",
                   asset="staged/shop/orders", layer="staged")  # fmt: skip
    assert world.materialized_at - 1 <= stamp <= time.time()
    assert _value(samples, "dataplatform_runs", status="SUCCESS") == 1
    assert _value(samples, "dataplatform_runs", status="FAILURE") == 0
    durations = {labels["step"]: value for labels, value in samples["dataplatform_step_duration_seconds"]}
    assert set(durations) == {"raw__shop__orders", "staged__shop__orders"}
    assert durations["staged__shop__orders"] >= 0.05
    jobs = {labels["job"] for labels, _ in samples["dataplatform_step_duration_seconds"]}
    assert jobs == {run.job_name for run in world.instance.get_runs()}
    # the ledger
    assert (
        _value(samples, "dataplatform_healing_incidents_total", category="rate_limited", kind="step_failure")
        == 2
    )
    assert (
        _value(samples, "dataplatform_healing_incidents_total", category="schema_drift", kind="check_failure")
        == 1
    )
    assert _value(samples, "dataplatform_open_incidents") == 2
    assert (
        _value(samples, "dataplatform_healing_open_incidents", category="rate_limited", status="healing") == 1
    )
    assert (
        _value(samples, "dataplatform_healing_open_incidents", category="schema_drift", status="proposed")
        == 1
    )
    assert _value(samples, "dataplatform_healing_mean_time_to_recover_seconds", category="rate_limited") == 30
    assert _value(samples, "dataplatform_healing_action_outcomes_total", category="rate_limited",
                  action="slow_down", result="failure") == 1  # fmt: skip
    assert _value(samples, "dataplatform_circuit_breaker_state", source="shop_api", state="open") == 1
    assert _value(samples, "dataplatform_circuit_breaker_state", source="shop_api", state="closed") == 0
    assert _value(samples, "dataplatform_circuit_breaker_state", source="shop_db", state="closed") == 1
    assert _value(samples, "dataplatform_circuit_breaker_consecutive_failures", source="shop_api") == 3
    # every declared family is served, and nothing undeclared
    served = {name for name in samples if not name.endswith("_created")}
    assert served <= metric_names()


def test_missing_ledger_is_reported_not_fatal(world: World, tmp_path: Path) -> None:
    server, thread = serve(
        build_registry(world.instance, tmp_path / "absent" / "healing.sqlite", tmp_path), "127.0.0.1", 0
    )
    try:
        samples = _scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        thread.join(timeout=10)
    assert _value(samples, "dataplatform_open_incidents") == 0
    assert _value(samples, "dataplatform_rows_ingested", asset="raw/shop/orders", layer="raw") == RAW_ROWS
    assert not (tmp_path / "absent").exists()  # a reader creates nothing


def test_entry_point_opens_dagster_home_and_data_dir(world: World, tmp_path: Path) -> None:
    """The command systemd starts: instance from DAGSTER_HOME, ledger from PLATFORM_DATA_DIR."""
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(world.home), "PLATFORM_DATA_DIR": str(world.data_dir)}
    # deploy/workspace.yaml's code server port, 4266, may be another test's code server: a closed one here
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        (REPO / "deploy" / "workspace.yaml").read_text().replace("port: 4266", f"port: {free_port()}")
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "sensors.observability.metrics_server", "--host", "127.0.0.1", "--port",
        str(port), "--workspace", str(workspace)], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                samples = _scrape(f"http://127.0.0.1:{port}/metrics")
                break
            except OSError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "metrics server did not answer within 60 s"
                time.sleep(0.3)
        assert _value(samples, "dataplatform_open_incidents") == 2
        assert _value(samples, "dataplatform_quality_score", asset="staged/shop/orders") == 92.5
        status, report = _get(f"http://127.0.0.1:{port}/health")
        assert status == 503 and report["checks"]["code_location"]["value"] == {
            "self_healing_platform": False
        }
    finally:
        process.terminate()
        try:
            output = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()  # not left running after the test, as it was after a CI run on a loaded machine
            output = process.communicate()[0]
            message = f"the metrics server did not stop within 30 s of SIGTERM:\n{output}"
            raise AssertionError(message) from None
    assert process.returncode == 0, output


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_health_fails_on_a_dead_daemon_and_a_down_code_server_then_passes(
    world: World, tmp_path: Path
) -> None:
    """What the probe reports from outside the daemon: nothing heartbeats and no code server listens (503,
    each failed check says why, with its threshold), then heartbeats of every required daemon arrive (that
    check passes), an escalated incident fails the incidents check, and the host gauges are exported."""
    down = CodeServer("self_healing_platform", "127.0.0.1", free_port())
    ledger = tmp_path / "data" / "ops" / "healing.sqlite"
    probe = HealthProbe(world.instance, ledger, tmp_path / "data", [down], thresholds=HealthThresholds())
    server, thread = serve(
        build_registry(world.instance, ledger, tmp_path / "data", servers=[down]), "127.0.0.1", 0, probe
    )
    try:
        status, report = _get(f"http://127.0.0.1:{server.server_port}/health")
        assert status == 503 and report["healthy"] is False
        checks = report["checks"]
        assert checks["code_location"]["ok"] is False and "unreachable" in checks["code_location"]["detail"]
        assert checks["code_location"]["value"] == {"self_healing_platform": False}
        assert checks["daemon_heartbeats"]["ok"] is False
        assert set(checks["daemon_heartbeats"]["value"]) >= {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR"}
        assert checks["daemon_heartbeats"]["threshold"] == {"max_age_s": 120.0}
        assert checks["incidents"] == {"ok": True, "value": {"open": 0, "escalated": 0},
                                       "threshold": {"max_escalated": 0}, "detail": ""}  # fmt: skip
        assert checks["disk"]["ok"] is True and checks["disk"]["value"]["total_bytes"] > 0
        assert checks["sensor_ticks"] == {"ok": True, "value": {}, "threshold": {"max_age_s": 900.0,
                                          "status_not": "FAILURE"}, "detail": ""}  # fmt: skip

        samples = _scrape(f"http://127.0.0.1:{server.server_port}/metrics")
        assert _value(samples, "dataplatform_code_location_up", location="self_healing_platform") == 0
        assert _value(samples, "dataplatform_daemon_heartbeat_age_seconds", daemon="SENSOR") == float("inf")
        assert _value(samples, "dataplatform_host_memory_total_bytes") > 0
        assert _value(samples, "dataplatform_host_cpu_seconds_total", mode="idle") > 0
        assert _value(samples, "dataplatform_host_disk_free_bytes", path=str(tmp_path / "data")) > 0
        for source in ("instance", "ledger", "daemon", "host", "code_server"):
            assert _value(samples, "dataplatform_metrics_source_up", source=source) == 1, source

        now = time.time()
        for daemon in world.instance.get_required_daemon_types():
            world.instance.add_daemon_heartbeat(DaemonHeartbeat(now, daemon, "test", None))
        HealingStore(ledger).add_incident(_incident("esc", "code_defect", "escalated"))
        status, report = _get(f"http://127.0.0.1:{server.server_port}/health")
        assert status == 503
        assert report["checks"]["daemon_heartbeats"]["ok"] is True
        assert report["checks"]["incidents"]["value"] == {"open": 1, "escalated": 1}
        assert report["checks"]["incidents"]["ok"] is False
        samples = _scrape(f"http://127.0.0.1:{server.server_port}/metrics")
        assert _value(samples, "dataplatform_daemon_heartbeat_age_seconds", daemon="SENSOR") < 60
    finally:
        server.shutdown()
        thread.join(timeout=10)


SENSOR_TICKS: list[tuple[str, TickStatus | None, float | None]] = [
    ("healing", TickStatus.SUCCESS, 10.0), ("stuck", TickStatus.SUCCESS, 2000.0),
    ("broken", TickStatus.FAILURE, 5.0), ("never", None, None),
]  # fmt: skip
"""Sensor name, status and age of its last tick (None: it never ticked)."""


def test_sensors_that_stopped_ticking_fail_or_never_ticked_fail_health(tmp_path: Path) -> None:
    """Sensor states and ticks written to a real instance's storage as the daemon writes them: a sensor
    that ticked recently passes; one whose last tick is too old, failed, or that never ticked does not."""
    location = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="platform_assets.definitions"), location_name="self_healing_platform"
    )
    now = time.time()
    with dg.instance_for_test() as instance:
        for name, status, age in SENSOR_TICKS:
            origin = RemoteInstigatorOrigin(RemoteRepositoryOrigin(location, "__repository__"), name)
            state = InstigatorState(
                origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING, SensorInstigatorData(min_interval=30)
            )
            instance.add_instigator_state(state)
            if status is not None and age is not None:
                error = (
                    SerializableErrorInfo("boom", [], "RuntimeError")
                    if status == TickStatus.FAILURE
                    else None
                )
                instance.create_tick(
                    TickData(
                        instigator_origin_id=origin.get_id(),
                        instigator_name=name,
                        status=status,
                        instigator_type=InstigatorType.SENSOR,
                        timestamp=now - age,
                        selector_id=state.selector_id,
                        run_ids=[],
                        run_keys=[],
                        error=error,
                    )
                )
        probe = HealthProbe(instance, tmp_path / "healing.sqlite", tmp_path, [], clock=lambda: now)
        (check,) = [c for c in probe.checks() if c.name == "sensor_ticks"]
        samples = _scrape_registry(build_registry(instance, tmp_path / "healing.sqlite", tmp_path))
    assert check.ok is False
    assert check.detail == "stale, never ticked or failing: broken, never, stuck"
    assert check.value["healing"] == {"age_s": 10.0, "status": "SUCCESS"}
    assert check.value["never"] == {"age_s": None, "status": None}
    assert _value(samples, "dataplatform_sensor_last_tick_age_seconds", sensor="never") == float("inf")
    assert 1990 < _value(samples, "dataplatform_sensor_last_tick_age_seconds", sensor="stuck") < 2100


def _scrape_registry(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_a_hung_code_server_counts_as_not_loaded_within_the_timeout() -> None:
    """A port that accepts connections and never answers (a wedged code server): the probe gives up after
    its own timeout instead of the gRPC client's minute, and does not pile up callers while it hangs."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        port = hung.getsockname()[1]
        started = time.monotonic()
        loaded, why = code_location_loaded(CodeServer("loc", "127.0.0.1", port), timeout_s=1)
        again = code_location_loaded(CodeServer("loc", "127.0.0.1", port), timeout_s=1)
    assert (loaded, why) == (False, f"127.0.0.1:{port} did not answer within 1 s")
    assert again == (False, f"127.0.0.1:{port} has not answered an earlier probe yet")
    assert time.monotonic() - started < 5


def test_workspace_servers_are_read_and_in_process_locations_refused() -> None:
    assert code_servers(REPO / "deploy" / "workspace.yaml") == [
        CodeServer("self_healing_platform", "127.0.0.1", 4266)
    ]
    with pytest.raises(ValueError, match="only grpc_server"):
        code_servers(REPO / "workspace.yaml")
