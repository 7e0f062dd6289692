"""The dbt project as assets: dbt sources map onto the staged assets, dbt tests become asset checks.

The manifest is built by `dbt parse`: by `dataplatform prepare` (`./dev prepare`), by the tests, or by
`dagster dev` when it loads the code location; a plain import never parses.
"""

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtProject, dbt_assets

from platform_assets.keys import WAREHOUSE_POOL, staged_key
from resources.warehouses.dbt_warehouse import DbtWarehouse, dbt_beside_python

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR)


class ManifestMissingError(FileNotFoundError):
    pass


def prepare_manifest(target: str | None = None, dbt_vars: Mapping[str, str] | None = None) -> Path:
    """`dbt parse` into the project's target directory, with the dbt installed beside this Python, for
    the dbt target and vars of the environment whose runs should reuse the parse
    (`PlatformSettings.dbt_target`, `.dbt_vars()`): dbt parses again in full when either differs."""
    dbt = DbtWarehouse(
        project_dir=DBT_PROJECT,
        target=target,
        dbt_executable=dbt_beside_python(),
        dbt_vars=dict(dbt_vars or {}),
    )
    dbt.parse(DBT_PROJECT.target_path).wait()
    return DBT_PROJECT.manifest_path


class PlatformDbtTranslator(DagsterDbtTranslator):
    """dbt source `shop.orders` is the platform's staged asset `staged/shop/orders`; models are grouped by
    their folder (`staging`, `marts`) and show the warehouse they live in."""

    def __init__(self, warehouse_kind: str) -> None:
        super().__init__()
        self._warehouse_kind = warehouse_kind

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if unique_id.startswith("source."):
            node = manifest["sources"][unique_id]
            return spec.replace_attributes(key=staged_key(node["source_name"], node["name"]))
        node = manifest["nodes"][unique_id]
        folder = node["fqn"][1] if len(node["fqn"]) > 2 else "models"
        return spec.replace_attributes(group_name=f"dbt_{folder}", kinds={"dbt", self._warehouse_kind})


@functools.cache
def _prepare_if_dev_once(target: str | None, dbt_vars: tuple[tuple[str, str], ...]) -> None:
    """Under `dagster dev`, re-parse the dbt project once per process so that SQL edits show up on reload
    (the code server builds the definitions more than once while loading, and each parse costs seconds),
    with the environment's dbt target and vars: the runs' dbt steps then reuse the parse instead of
    parsing again in full."""
    if DBT_PROJECT.preparer.using_dagster_dev():
        prepare_manifest(target, dict(dbt_vars))


def build_dbt_models(
    warehouse_kind: str, target: str | None = None, dbt_vars: Mapping[str, str] | None = None
) -> dg.AssetsDefinition:
    """The dbt models as assets; `target` and `dbt_vars` are the environment's (`PlatformSettings`)."""
    _prepare_if_dev_once(target, tuple(sorted((dbt_vars or {}).items())))
    if not DBT_PROJECT.manifest_path.exists():
        raise ManifestMissingError(
            f"dbt manifest not found at {DBT_PROJECT.manifest_path}. Build it with `dataplatform prepare` "
            f"(runs `dbt parse`), or start `dagster dev`, which builds it."
        )

    @dbt_assets(
        manifest=DBT_PROJECT.manifest_path,
        project=DBT_PROJECT,
        dagster_dbt_translator=PlatformDbtTranslator(warehouse_kind),
        pool=WAREHOUSE_POOL,
    )
    def dbt_models(context: dg.AssetExecutionContext, dbt: DbtWarehouse) -> Iterator[Any]:
        yield from dbt.build(context).stream()

    return dbt_models
