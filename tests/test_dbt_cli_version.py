"""The dbt version dagster-dbt asks for before every dbt step comes from the package metadata, not from a
`dbt --version` subprocess (a dbt import plus PyPI requests: seconds per step; bench/README.md)."""

from importlib.metadata import version

import dagster_dbt.core.resource
import pytest
from packaging.version import Version

from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from resources.warehouses.dbt_warehouse import DbtWarehouse, dbt_beside_python


def test_the_dbt_beside_python_is_versioned_without_running_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_subprocess(*_: object, **__: object) -> bytes:
        raise AssertionError("dbt --version must not run")

    monkeypatch.setattr(dagster_dbt.core.resource, "check_output", no_subprocess)
    dbt = DbtWarehouse(project_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_beside_python())
    assert dbt._cli_version == Version(version("dbt-core"))
