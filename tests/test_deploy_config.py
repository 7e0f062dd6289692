"""The deployment files are checked against the real things they configure: deploy/dagster.yaml opens as a
Dagster instance on a real PostgreSQL (which also creates and migrates the storage) and records a run; the
systemd units start commands that exist and keep the UI on loopback; the environment template names every
variable the platform and the alert routes read; install.sh parses; the Grafana dashboard asks only for
metrics the collector exports."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy import make_url
from systemd_units import unit_entries

from sensors.observability.metrics import metric_names

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
VM_PATHS = {"/opt/dataplatform/app": REPO, "/opt/dataplatform/venv": REPO / ".venv"}
"""Where install.sh puts things on the VM, and where the same things are in this checkout."""


def _on_checkout(vm_path: str) -> Path:
    for prefix, local in VM_PATHS.items():
        if vm_path == prefix:
            return local
        if vm_path.startswith(prefix + "/"):
            return local / vm_path.removeprefix(prefix + "/")
    raise AssertionError(f"{vm_path} is outside the install layout {sorted(VM_PATHS)}")


def _dagster_env(url: str) -> dict[str, str]:
    parsed = make_url(url)
    return {
        "DAGSTER_PG_HOST": str(parsed.host),
        "DAGSTER_PG_PORT": str(parsed.port),
        "DAGSTER_PG_USER": str(parsed.username),
        "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
        "DAGSTER_PG_DB": str(parsed.database),
    }


def test_instance_config_opens_on_postgres_and_records_a_run(
    postgres_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _dagster_env(postgres_database).items():
        monkeypatch.setenv(name, value)
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")

    @dg.asset
    def probe() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"dagster/row_count": 3})

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert instance.run_storage.postgres_url.startswith("postgresql+psycopg2://")
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
        assert (
            not instance.get_concurrency_config().run_queue_config.should_block_op_concurrency_limited_runs
        ), "a queued run waits for its run slot, its steps for pool slots inside the run (no starvation)"
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.run_monitoring_enabled
        assert instance.telemetry_enabled is False
        assert dg.materialize([probe], instance=instance).success
        record = instance.get_asset_records([probe.key])[0]
        assert record.asset_entry.last_materialization_record is not None
        limits = _readme_limits()
        assert len(limits) == len(LIMIT_SETTINGS), "every Limits row is checked, and only those"
        for setting, promised in limits.items():
            assert setting in LIMIT_SETTINGS, f"deploy/README.md promises {setting}: add how to read it"
            assert LIMIT_SETTINGS[setting](instance) == promised, f"deploy/README.md Limits: {setting}"


def _tag_limit(key: str, value: object) -> Callable[[dg.DagsterInstance], int | None]:
    def read(instance: dg.DagsterInstance) -> int | None:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        found = [rule["limit"] for rule in limits if rule["key"] == key and rule.get("value") == value]
        return found[0] if len(found) == 1 else None

    return read


LIMIT_SETTINGS: dict[str, Callable[[dg.DagsterInstance], int | None]] = {
    "concurrency.runs.max_concurrent_runs": lambda i: (
        i.get_concurrency_config().run_queue_config.max_concurrent_runs
    ),
    "concurrency.runs.tag_concurrency_limits[platform/source]": _tag_limit(
        "platform/source", {"applyLimitPerUniqueValue": True}
    ),
    "concurrency.runs.tag_concurrency_limits[healing/action]": _tag_limit("healing/action", None),
    "concurrency.runs.tag_concurrency_limits[platform/trigger=automation]": _tag_limit(
        "platform/trigger", "automation"
    ),
    "concurrency.pools.default_limit": lambda i: i.get_concurrency_config().pool_config.default_pool_limit,
    "run_monitoring.max_runtime_seconds": lambda i: i.run_monitoring_max_runtime_seconds,
    "run_monitoring.start_timeout_seconds": lambda i: i.run_monitoring_start_timeout_seconds,
    "run_monitoring.free_slots_after_run_end_seconds": lambda i: i.run_monitoring_settings.get(
        "free_slots_after_run_end_seconds"
    ),
    "run_monitoring.poll_interval_seconds": lambda i: i.run_monitoring_poll_interval_seconds,
    "run_retries.max_retries": lambda i: i.run_retries_max_retries,
}
"""How each setting deploy/README.md's Limits table names is read from the opened instance (what the daemon
enforces, not the YAML text)."""


def _readme_limits() -> dict[str, int]:
    """The Limits table of deploy/README.md: setting -> promised value."""
    section = (DEPLOY / "README.md").read_text().split("\n## Limits\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|[^|]+\| (\d+) \| `([^`]+)` \|$", section, flags=re.MULTILINE)
    assert rows, "no Limits table in deploy/README.md"
    return {setting: int(value) for value, setting in rows}


def test_units_start_existing_commands_and_bind_the_ui_to_loopback() -> None:
    assert {unit.name for unit in UNITS} == {
        "dataplatform-code-server.service", "dataplatform-webserver.service", "dataplatform-daemon.service",
        "dataplatform-metrics.service", "dataplatform-celery-worker.service",
    }  # fmt: skip
    install = (DEPLOY / "install.sh").read_text()
    for unit in UNITS:
        entries = unit_entries(unit)
        command = entries["Service.ExecStart"][0].split()
        assert _on_checkout(command[0]).exists(), f"{unit.name}: {command[0]}"
        assert _on_checkout(entries["Service.WorkingDirectory"][0]).is_dir()
        assert entries["Service.User"] == ["dataplatform"] and "APP_USER:-dataplatform" in install
        assert entries["Service.EnvironmentFile"] == ["/etc/dataplatform/platform.env"]
        assert entries["Install.WantedBy"] == ["multi-user.target"]
        assert unit.name in install
        for argument in command[1:]:
            if argument.startswith("/opt/"):
                assert _on_checkout(argument).exists(), f"{unit.name}: {argument}"
        if "-m" in command:
            assert importlib.util.find_spec(command[command.index("-m") + 1]) is not None
        assert "0.0.0.0" not in " ".join(command)

    webserver = unit_entries(DEPLOY / "systemd" / "dataplatform-webserver.service")["Service.ExecStart"][
        0
    ].split()
    assert webserver[0].endswith("/dagster-webserver")
    assert webserver[webserver.index("--host") + 1] == "127.0.0.1"


def test_workspace_reaches_the_code_server_unit_on_loopback() -> None:
    """The webserver and the daemon load the code location from the code server's gRPC port, which is
    the one its unit serves, with the module it serves from the checkout."""
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    command = unit_entries(DEPLOY / "systemd" / "dataplatform-code-server.service")["Service.ExecStart"][
        0
    ].split()
    assert command[1:3] == ["code-server", "start"]
    assert (
        (command[command.index("-h") + 1], int(command[command.index("-p") + 1]))
        == (
            server["host"],
            server["port"],
        )
        == ("127.0.0.1", 4266)
    )
    module = command[command.index("-m") + 1]
    assert (REPO / (module.replace(".", "/") + ".py")).exists()


def test_environment_template_names_every_variable() -> None:
    template = (DEPLOY / "platform.env.example").read_text()
    named = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", template, flags=re.MULTILINE))
    platform = set(
        re.findall(r"\bPLATFORM_[A-Z0-9_]*[A-Z0-9]\b", (REPO / "resources" / "environment.py").read_text())
    )
    routes = (REPO / "sensors" / "alerting" / "routes.yaml").read_text()
    alerts = {name for name in re.findall(r"\$\{(\w+)\}", routes) if name.startswith("PLATFORM_")}
    instance = set(re.findall(r"env: (\w+)", (DEPLOY / "dagster.yaml").read_text()))
    set_by_units = {"PLATFORM_DATA_DIR"}
    assert platform - set_by_units - named == set()
    assert alerts - named == set()
    assert instance - named == set()
    # secrets are placeholders, never values
    for line in template.splitlines():
        if re.match(r"^[A-Z0-9_]*(PASSWORD|SECRET|TOKEN|KEY)=", line):
            assert line.split("=", 1)[1] in {"", "CHANGE_ME"}, line


def test_install_script_parses() -> None:
    completed = subprocess.run(["bash", "-n", str(DEPLOY / "install.sh")], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def test_grafana_panels_ask_for_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dataplatform-oncall.json").read_text())
    exported = metric_names()
    titles = []
    for panel in dashboard["panels"]:
        titles.append(panel["title"])
        expressions = [target["expr"] for target in panel["targets"]]
        assert expressions, panel["title"]
        for expression in expressions:
            used = set(re.findall(r"\bdataplatform_[a-z0-9_]+", expression))
            assert used and used <= exported, f"{panel['title']}: {used - exported}"
    for first_look in ("Open incidents", "Failures by healing category", "Freshness lag", "Quality score",
                       "Rows ingested", "Circuit breakers"):  # fmt: skip
        assert any(title.startswith(first_look) for title in titles), first_look


def test_readme_documents_every_metric() -> None:
    readme = (DEPLOY / "README.md").read_text()
    assert {name for name in metric_names() if f"`{name}`" not in readme} == set()
