"""Dagster's own CLI on this project: `dg list defs` and `dg launch --assets` find the code location through
`[tool.dg]` in pyproject.toml, and the `.env` file of the working directory is read by every command that
loads it (it used to be read by `dagster dev` alone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.keys import raw_key, staged_key
from resources.environment import load_env_file

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).with_name("dg")

TINY_CATALOG = """\
source: tiny
connection: {kind: files, root: "{{ env.TINY_ROOT }}"}
entities:
  items:
    file: {path: "*.csv", format: csv}
    primary_key: [id]
    columns: {id: {type: integer}, name: {type: string}}
"""


def test_the_env_file_is_read_without_overriding_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("PLATFORM_TEST_FROM_FILE=file\nPLATFORM_TEST_SET=file\n")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    monkeypatch.delenv("PLATFORM_TEST_FROM_FILE", raising=False)
    monkeypatch.setenv("PLATFORM_TEST_SET", "environment")
    assert load_env_file() == tmp_path / ".env", "found in a parent of the working directory"
    assert os.environ["PLATFORM_TEST_FROM_FILE"] == "file"
    assert os.environ["PLATFORM_TEST_SET"] == "environment", "a variable already set wins"


def test_dg_lists_and_launches_the_code_location_with_the_env_file(
    tmp_path: Path, dbt_manifest: Path
) -> None:
    """A catalog whose only source root comes from `.env` (`{{ env.TINY_ROOT }}`, unset in the
    environment): `dg list defs` lists its assets, `dg launch --assets` lands and stages it."""
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "tiny.yaml").write_text(TINY_CATALOG)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.csv").write_text("id,name\n1,a\n2,b\n")
    (tmp_path / ".env").write_text(f"TINY_ROOT={tmp_path / 'files'}\n")
    (tmp_path / "home").mkdir()
    env = {
        **{name: value for name, value in os.environ.items() if name != "TINY_ROOT"},
        "PLATFORM_CATALOG_DIR": str(tmp_path / "catalog"),
        "PLATFORM_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "VIRTUAL_ENV": str(Path(sys.executable).parents[1]),
    }

    def dg_command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DG), *args, "--target-path", str(PROJECT_ROOT)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    listed = dg_command("list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr
    keys = {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}
    assert {"raw/tiny/items", "staged/tiny/items"} <= keys

    launched = dg_command("launch", "--assets", "key:raw/tiny/items or key:staged/tiny/items")
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        staged = instance.get_latest_materialization_event(staged_key("tiny", "items"))
        assert instance.get_latest_materialization_event(raw_key("tiny", "items")) is not None
    assert staged is not None and staged.asset_materialization is not None
    assert staged.asset_materialization.metadata["rows_delivered"].value == 2
