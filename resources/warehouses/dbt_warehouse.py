"""dbt, pointed at the environment's warehouse.

The dbt profile reads the DuckDB path from a dbt var, so the platform passes it on each invocation
instead of changing the process environment; SQL authors running dbt by hand get the profile's default.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from functools import cached_property
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliInvocation, DbtCliResource
from packaging import version
from pydantic import Field


def dbt_beside_python() -> str:
    """The dbt installed with this interpreter, so that a virtualenv works without being activated."""
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else (shutil.which("dbt") or "dbt")


class DbtWarehouse(DbtCliResource):
    """A `DbtCliResource` that always passes this environment's dbt vars."""

    dbt_vars: dict[str, str] = Field(default_factory=dict)

    @cached_property
    def _cli_version(self) -> version.Version:
        """dagster-dbt learns the dbt version by running `dbt --version` in every step that runs dbt: a
        full dbt import plus a PyPI request for dbt-core and for each installed adapter (1 s timeout each),
        ~8 s on an offline machine (bench/README.md, scenario 4). The dbt beside this Python IS the
        installed dbt-core: its version comes from the package metadata instead."""
        if Path(self.dbt_executable).parent == Path(sys.executable).parent:
            with contextlib.suppress(PackageNotFoundError):
                return version.parse(installed_version("dbt-core"))
        return super()._cli_version

    def build(self, context: dg.AssetExecutionContext) -> DbtCliInvocation:
        """`dbt build` of the models (and their tests) selected in this Dagster step."""
        return self.cli(["build", "--vars", json.dumps(self.dbt_vars)], context=context)

    def parse(self, target_path: Path) -> DbtCliInvocation:
        """`dbt parse` into `target_path` with the same vars as `build`: dbt reuses a parse (its
        `partial_parse.msgpack`, which dagster-dbt copies into every invocation's target) only when the
        profile and vars are unchanged, and a full parse costs every dbt step seconds."""
        return self.cli(["parse", "--quiet", "--vars", json.dumps(self.dbt_vars)], target_path=target_path)
