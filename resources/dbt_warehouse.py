"""dbt, pointed at the environment's warehouse.

The dbt profile reads the DuckDB path from a dbt var, so the platform passes it on each invocation
instead of changing the process environment; SQL authors running dbt by hand get the profile's default.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliInvocation, DbtCliResource
from pydantic import Field


def dbt_beside_python() -> str:
    """The dbt installed with this interpreter, so that a virtualenv works without being activated."""
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else (shutil.which("dbt") or "dbt")


class DbtWarehouse(DbtCliResource):
    """A `DbtCliResource` that always passes this environment's dbt vars."""

    dbt_vars: dict[str, str] = Field(default_factory=dict)

    def build(self, context: dg.AssetExecutionContext) -> DbtCliInvocation:
        """`dbt build` of the models (and their tests) selected in this Dagster step."""
        return self.cli(["build", "--vars", json.dumps(self.dbt_vars)], context=context)
