"""The processed-file ledger of one file entity, kept in a SQLite file beside the landing zone.

The ledger says, per delivered file, what was made of it (size, version, content hash, its landed copy, or
that it was empty or set aside): the files extractor reads it to land each file once per content. It used
to be written whole into every raw materialization's metadata: at 100,000 delivered files that is
megabytes per event, read back and rewritten by every run, and kept forever in the event log. Here each
run writes only what changed (one transaction, after its landing committed), and the materialization
records the ledger's size, a digest of it and the run's delta.

One file per entity (`<landing>/_state/<source>/<entity>/ledger.sqlite`); entries are JSON documents keyed
by the delivered file's path, so the extractor owns their fields.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEDGER_FILE = "ledger.sqlite"


@dataclass(frozen=True)
class LedgerDelta:
    """What one run changed: entries written (new or changed) and entries dropped (files gone)."""

    written: dict[str, dict[str, Any]]
    dropped: list[str]


class FileLedger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every entry, by delivered path (empty when the ledger does not exist yet)."""
        if not self.path.exists():
            return {}
        with closing(sqlite3.connect(self.path)) as connection:
            rows = connection.execute("SELECT path, entry FROM entries").fetchall()
        return {path: json.loads(entry) for path, entry in rows}

    def write(
        self, before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
    ) -> LedgerDelta:
        """Make the ledger `after`, given that it is `before` (what `entries` returned): only the entries
        that differ are written, in one transaction."""
        written = {path: dict(entry) for path, entry in after.items() if before.get(path) != entry}
        dropped = sorted(path for path in before if path not in after)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path)) as connection, connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS entries (path TEXT PRIMARY KEY, entry TEXT NOT NULL)"
            )
            connection.executemany(
                "INSERT INTO entries VALUES (?, ?) ON CONFLICT (path) DO UPDATE SET entry = excluded.entry",
                ((path, json.dumps(entry, sort_keys=True)) for path, entry in written.items()),
            )
            connection.executemany("DELETE FROM entries WHERE path = ?", ((path,) for path in dropped))
        return LedgerDelta(written, dropped)


def ledger_digest(entries: Mapping[str, Mapping[str, Any]]) -> str:
    """sha256 of the entries in path order: recorded with each run, it says which ledger the run left."""
    digest = hashlib.sha256()
    for path in sorted(entries):
        digest.update(f"{path}\t{json.dumps(entries[path], sort_keys=True)}\n".encode())
    return f"sha256:{digest.hexdigest()}"
