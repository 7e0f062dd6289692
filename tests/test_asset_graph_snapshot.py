"""A snapshot of the asset graph (keys, dependencies, groups, kinds, checks), so that every change to
the graph shows up in review as a diff of `tests/snapshots/asset_graph.json`.

After an intended change: `UPDATE_SNAPSHOTS=1 pytest tests/test_asset_graph_snapshot.py` and commit the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from platform_assets.definitions import build_definitions
from resources.environment import PlatformSettings

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def asset_graph_shape(settings: PlatformSettings) -> dict[str, dict]:
    graph = build_definitions(settings).resolve_asset_graph()
    shape = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        shape[key.to_user_string()] = {
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "checks": {
                check.name: {"blocking": graph.get_check_spec(check).blocking}
                for check in sorted(node.check_keys, key=lambda c: c.name)
            },
        }
    return shape


def test_asset_graph_matches_snapshot(tmp_path: Path, dbt_manifest: Path) -> None:
    shape = asset_graph_shape(PlatformSettings.local(tmp_path))
    rendered = json.dumps(shape, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(rendered)
    assert SNAPSHOT.exists(), f"No snapshot yet: run with UPDATE_SNAPSHOTS=1 to create {SNAPSHOT}"
    assert rendered == SNAPSHOT.read_text(), (
        "The asset graph changed. If intended, run "
        "`UPDATE_SNAPSHOTS=1 pytest tests/test_asset_graph_snapshot.py` and commit the snapshot."
    )
