"""The processed-file ledger of one file entity, kept in a SQLite file beside the landing zone.

The ledger says, per delivered file, what was made of it (size, version, content hash, its landed copy, or
that it was empty or set aside): the files extractor reads it to land each file once per content. It used
to be written whole into every raw materialization's metadata: at 100,000 delivered files that is
megabytes per event, read back and rewritten by every run, and kept forever in the event log. Here each
run reads only the fields it compares (`fields`, one indexed scan in SQLite, no JSON parsed in Python),
fetches whole entries only for the files it decides about (`get`), and writes only what changed (`apply`,
one transaction, after its landing committed). The materialization records the ledger's size, a digest of
it and the run's delta.

The digest is the sum, modulo 2^256, of the sha256 of each entry (path and JSON): it says which ledger a
run left, whatever the order, and each run updates it by its delta (subtracting the entries it replaces,
adding their new values) instead of hashing a million entries again. It is kept in the ledger's `meta`
table.

One file per entity (`<landing>/_state/<source>/<entity>/ledger.sqlite`); entries are JSON documents keyed
by the delivered file's path, so the extractor owns their fields.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEDGER_FILE = "ledger.sqlite"
_MODULUS = 1 << 256
_DIGEST_KEY = "digest"
_BATCH = 500
"""Paths per `IN (...)` lookup: below SQLite's default limit of bound parameters."""


@dataclass(frozen=True)
class LedgerDelta:
    """What one run changed: entries written (new or changed) and entries dropped (files gone)."""

    written: dict[str, dict[str, Any]]
    dropped: list[str]


class FileLedger:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path)) as connection, connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS entries (path TEXT PRIMARY KEY, entry TEXT NOT NULL)"
            )
            connection.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            yield connection

    def exists(self) -> bool:
        return self.path.exists()

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every entry, by delivered path (empty when the ledger does not exist yet): for tests and tools;
        an extraction reads `fields` and `get`."""
        if not self.path.exists():
            return {}
        with self._connection() as connection:
            rows = connection.execute("SELECT path, entry FROM entries").fetchall()
        return {path: json.loads(entry) for path, entry in rows}

    def fields(self, names: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """path -> the values of `names` in its entry (None where absent), for every entry."""
        if not self.path.exists():
            return {}
        selected = ", ".join(f"json_extract(entry, '$.{name}')" for name in names)
        with self._connection() as connection:
            rows = connection.execute(f"SELECT path, {selected} FROM entries").fetchall()
        return {row[0]: row[1:] for row in rows}

    def get(self, paths: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The entries of `paths` that exist."""
        wanted = sorted(set(paths))
        if not wanted or not self.path.exists():
            return {}
        found: dict[str, dict[str, Any]] = {}
        with self._connection() as connection:
            for start in range(0, len(wanted), _BATCH):
                batch = wanted[start : start + _BATCH]
                rows = connection.execute(
                    f"SELECT path, entry FROM entries WHERE path IN ({', '.join('?' * len(batch))})", batch
                )
                found.update((path, json.loads(entry)) for path, entry in rows)
        return found

    def apply(self, written: Mapping[str, Mapping[str, Any]], dropped: Iterable[str]) -> LedgerDelta:
        """Write `written` (new or changed entries) and drop `dropped`, with the digest, in one transaction;
        entries written unchanged are not counted as written."""
        removed = sorted(set(dropped))
        before = self.get([*written, *removed])
        changed = {path: dict(entry) for path, entry in written.items() if before.get(path) != entry}
        with self._connection() as connection:
            digest = self._digest(connection)
            for path in [*changed, *removed]:
                if path in before:
                    digest -= _entry_hash(path, before[path])
            digest += sum(_entry_hash(path, entry) for path, entry in changed.items())
            connection.executemany(
                "INSERT INTO entries VALUES (?, ?) ON CONFLICT (path) DO UPDATE SET entry = excluded.entry",
                ((path, json.dumps(entry, sort_keys=True)) for path, entry in changed.items()),
            )
            connection.executemany("DELETE FROM entries WHERE path = ?", ((path,) for path in removed))
            connection.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (_DIGEST_KEY, format(digest % _MODULUS, "064x")),
            )
        return LedgerDelta(changed, [path for path in removed if path in before])

    def summary(self) -> tuple[int, str]:
        """How many entries, and the digest of them all."""
        with self._connection() as connection:
            (count,) = connection.execute("SELECT count(*) FROM entries").fetchone()
            digest = self._digest(connection)
        return count, f"sha256-sum:{digest % _MODULUS:064x}"

    @staticmethod
    def _digest(connection: sqlite3.Connection) -> int:
        """The recorded digest; computed from every entry once, for a ledger written before it had one."""
        row = connection.execute("SELECT value FROM meta WHERE key = ?", (_DIGEST_KEY,)).fetchone()
        if row is not None:
            return int(row[0], 16)
        rows = connection.execute("SELECT path, entry FROM entries")
        return sum(_entry_hash(path, json.loads(entry)) for path, entry in rows) % _MODULUS


def _entry_hash(path: str, entry: Mapping[str, Any]) -> int:
    line = f"{path}\t{json.dumps(entry, sort_keys=True)}\n".encode()
    return int.from_bytes(hashlib.sha256(line).digest())
