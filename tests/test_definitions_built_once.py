"""The code location is built once per process for the same environment and catalog files: Dagster loads it
several times in one run worker (each load rebuilt every asset from the catalog), and a change to either
input builds it anew. Loaded through Dagster's own reconstruction, as a run worker does."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository

import platform_assets.definitions as code_location
from platform_assets.catalog.loader import CATALOG_DIR

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def builds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dbt_manifest: Path
) -> Iterator[list[dg.Definitions]]:
    """Every real build of the code location in this process, in order; the environment points at a
    temporary data directory and a copy of the shipped catalog."""
    built: list[dg.Definitions] = []
    real = code_location.build_definitions

    def counted(settings: code_location.PlatformSettings) -> dg.Definitions:
        built.append(real(settings))
        return built[-1]

    shutil.copytree(CATALOG_DIR, tmp_path / "catalog")
    monkeypatch.setenv("PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PLATFORM_CATALOG_DIR", str(tmp_path / "catalog"))
    monkeypatch.setattr(code_location, "build_definitions", counted)
    code_location._definitions_for.cache_clear()
    yield built
    code_location._definitions_for.cache_clear()


def load() -> dg.RepositoryDefinition:
    """What each of a run worker's loads does: reconstruct the repository from its code pointer."""
    pointer = ReconstructableRepository.for_module(
        "platform_assets.definitions", "defs", working_directory=str(REPO_ROOT)
    )
    return pointer.get_definition()


def test_loading_the_code_location_again_in_one_process_does_not_rebuild_it(
    builds: list[dg.Definitions],
) -> None:
    first, second, third = load(), load(), load()
    assert len(builds) == 1
    assert first.asset_graph.get_all_asset_keys() == third.asset_graph.get_all_asset_keys()
    assert second.get_sensor_def("healing") is third.get_sensor_def("healing"), "the very same definitions"


def test_a_changed_variable_or_catalog_file_builds_it_anew(
    builds: list[dg.Definitions], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    load()
    monkeypatch.setenv("PLATFORM_DELIVERY_POLL_SECONDS", "7")
    assert load().get_sensor_def("shop_deliveries").minimum_interval_seconds == 7
    shop = tmp_path / "catalog" / "shop.yaml"
    shop.write_text(shop.read_text().replace("  web_events:", "  clicks:"))
    assert dg.AssetKey(["raw", "shop", "clicks"]) in load().asset_graph.get_all_asset_keys()
    assert len(builds) == 3
    load()
    assert len(builds) == 3, "and is kept for the loads after"
