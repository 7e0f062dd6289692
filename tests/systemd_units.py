"""Reading the systemd units in `deploy/systemd/` as the tests check and start them."""

from __future__ import annotations

from pathlib import Path


def unit_entries(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> values of a unit file (a key may repeat, as Environment= does)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            entries.setdefault(f"{section}.{key}", []).append(value)
    return entries


def service_entries(path: Path) -> dict[str, list[str]]:
    """`Key` -> values of the unit's [Service] section."""
    prefix = "Service."
    return {
        key[len(prefix) :]: values for key, values in unit_entries(path).items() if key.startswith(prefix)
    }
