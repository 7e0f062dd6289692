"""The walls of the house, checked by import-linter's contracts in `pyproject.toml`: `resources` imports
nothing of ours, `sensors` never imports `platform_assets`, nothing of the platform imports `demo_shop`,
no import cycles between the subpackages of a room, and each room's subpackages in their layers. The
contracts hold on the tree as it is, and break, naming the import, on a copy given one wrong import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("platform_assets", "sensors", "resources", "demo_shop")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300
    )


def test_the_walls_hold() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and "6 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "broken"),
    [
        ("resources/secrets.py", "import platform_assets.keys", "resources.secrets -> platform_assets.keys"),
        (
            "sensors/healing/engine.py",
            "import platform_assets.catalog.loader",
            "sensors.healing.engine -> platform_assets.catalog.loader",
        ),
        (
            "platform_assets/run_summary.py",
            "import demo_shop.world",
            "platform_assets.run_summary -> demo_shop.world",
        ),
        (
            "platform_assets/staging/plan.py",
            "import platform_assets.quality.profile",
            "platform_assets.staging.plan -> platform_assets.quality.profile",
        ),
        (
            "resources/databases/errors.py",
            "import resources.rest.client",
            "resources.databases.errors -> resources.rest.client",
        ),
    ],
    ids=["resources-imports-assets", "sensors-import-assets", "platform-imports-demo", "cycle", "sideways"],
)
def test_a_wrong_import_breaks_a_contract_naming_it(
    tmp_path: Path, module: str, wrong_import: str, broken: str
) -> None:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{wrong_import}  # noqa: E402\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert broken in " ".join(result.stdout.split()), result.stdout
