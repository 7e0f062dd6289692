"""An index of an entity's landed files, in landing order, kept in SQLite beside the file ledger.

Staging asks which landed files were extracted after the newest extraction it staged; answered from the
files themselves, that question read every landed file's sidecar or Parquet footer on every run (after
30,000 landed files, 4 s of a run that staged 10). Here each file's extraction time and delivered file are
read once, when it is committed, and the question is an indexed query. Retention (`retire`) removes a
landed file but keeps its row, marked `removed_at`: the file ledger still names that copy, and a delivered
file whose copy retention removed has been processed, not lost (it must not land again).

The index follows the landing zone, not the other way round: `reconcile` (run at the start of every
extraction, under its lock) adds committed files it lacks (landed before the index existed, or by a run
killed between its commit and its index write) and forgets files gone from disk that retention did not
remove (a cleaned-up landing zone), reading directory names only, and only when a directory's mtime says
something changed since the index last saw it. Paths are kept relative to the entity's
directory, so the landing root can move.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from resources.landing.delivered import SIDECAR_SUFFIX, constant_value

INDEX_FILE = "landed.sqlite"
LOAD_DATE_PREFIX = "load_date="
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS landed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    file TEXT NOT NULL UNIQUE,
    extracted_at TEXT,
    delivered TEXT,
    bytes INTEGER NOT NULL,
    removed_at TEXT
);
CREATE TABLE IF NOT EXISTS directories (name TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS landed_by_time ON landed (extracted_at);
CREATE INDEX IF NOT EXISTS landed_by_delivered ON landed (delivered);
"""


@dataclass(frozen=True)
class IndexedFile:
    path: Path
    extracted_at: datetime | None
    bytes: int


def time_key(moment: datetime) -> str:
    """A UTC time as the index stores it: fixed width, so text order is time order."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime(_TIME_FORMAT)


def _from_key(key: str | None) -> datetime | None:
    return None if key is None else datetime.strptime(key, _TIME_FORMAT).replace(tzinfo=UTC)


def is_landed_name(name: str) -> bool:
    """A committed part or copy: not a sidecar nor a temporary (dot) file."""
    return not name.startswith(".") and not name.endswith(SIDECAR_SUFFIX)


class LandedIndex:
    def __init__(self, path: Path, entity_dir: Path) -> None:
        self.path = path
        self.entity_dir = entity_dir

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The index, in one transaction; a new index is filled from the landing zone first, so that it
        never stands for less than what is landed."""
        fresh = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path)) as connection, connection:
            connection.executescript(_SCHEMA)
            if fresh:
                self._reconcile(connection)
            yield connection

    def add(self, files: Iterable[Path]) -> None:
        """Index newly committed files (already indexed ones are left as they are), and take the directories
        as they now are for reconciled: the caller holds the extraction lock, so its commit is the only
        change since the `reconcile` its extraction began with."""
        with self._connection() as connection:
            self._insert(connection, files)
            self._record_directories(connection, self._directories())

    def reconcile(self) -> None:
        """Make the index agree with the committed files on disk (see the module's docstring)."""
        with self._connection() as connection:
            self._reconcile(connection)

    def _reconcile(self, connection: sqlite3.Connection) -> None:
        """Directory names compared with the index; skipped while no load-date directory (nor the entity's
        directory) changed its mtime since the last reconcile or commit: adding or removing a file changes
        its directory's mtime, so the common run (nothing touched the landing zone but the platform's own
        commits) costs a stat per load date, not a listing of every landed file."""
        directories = self._directories()
        recorded = dict(connection.execute("SELECT name, mtime_ns FROM directories").fetchall())
        if directories == recorded:
            return
        on_disk = set(self._committed_names())
        indexed = {file for (file,) in connection.execute("SELECT file FROM landed WHERE removed_at IS NULL")}
        retired = {
            file for (file,) in connection.execute("SELECT file FROM landed WHERE removed_at IS NOT NULL")
        }
        gone = indexed - on_disk
        connection.executemany("DELETE FROM landed WHERE file = ?", ((file,) for file in gone))
        missing = sorted(on_disk - indexed - retired)
        self._insert(connection, (self.entity_dir / file for file in missing))
        self._record_directories(connection, directories)

    def _directories(self) -> dict[str, int]:
        """mtime (ns) of the entity's directory (`.`) and of each of its load-date directories."""
        if not self.entity_dir.is_dir():
            return {}
        stamps = {".": self.entity_dir.stat().st_mtime_ns}
        for day in os.scandir(self.entity_dir):
            if day.name.startswith(LOAD_DATE_PREFIX) and day.is_dir():
                stamps[day.name] = day.stat().st_mtime_ns
        return stamps

    @staticmethod
    def _record_directories(connection: sqlite3.Connection, directories: dict[str, int]) -> None:
        """Record the directories' mtimes. Assumed: nothing but the platform changes the landing zone
        within a clock tick of its own commit (a file system stamps mtimes with a coarse clock, so such a
        change could leave an mtime as recorded); a cleaned-up landing zone is also caught by staging's
        `spot_check`."""
        connection.execute("DELETE FROM directories")
        connection.executemany("INSERT INTO directories VALUES (?, ?)", directories.items())

    def _committed_names(self) -> Iterator[str]:
        """`load_date=<day>/<name>` of every committed file: names only, no file is opened or stat'ed."""
        if not self.entity_dir.is_dir():
            return
        for day in os.scandir(self.entity_dir):
            if day.name.startswith(LOAD_DATE_PREFIX) and day.is_dir():
                for entry in os.scandir(day.path):
                    if is_landed_name(entry.name):
                        yield f"{day.name}/{entry.name}"

    def _insert(self, connection: sqlite3.Connection, files: Iterable[Path]) -> None:
        rows = []
        for path in files:
            extracted = constant_value(path, "_extracted_at")
            delivered = constant_value(path, "_file")
            rows.append(
                (
                    self._relative(path),
                    time_key(extracted) if isinstance(extracted, datetime) else None,
                    delivered if isinstance(delivered, str) else None,
                    path.stat().st_size,
                )
            )
        connection.executemany(
            "INSERT INTO landed (file, extracted_at, delivered, bytes) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (file) DO NOTHING",
            rows,
        )

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.entity_dir).as_posix()

    def live(self) -> list[Path]:
        """Every landed file not removed, in landing order: what a full rebuild reads."""
        return self._files("removed_at IS NULL ORDER BY seq")

    def extracted_after(self, moment: datetime) -> list[Path]:
        """Landed files (not removed) extracted after `moment`, in landing order: an incremental run's."""
        return self._files("removed_at IS NULL AND extracted_at > ? ORDER BY seq", time_key(moment))

    def _files(self, where: str, *parameters: object) -> list[Path]:
        with self._connection() as connection:
            rows = connection.execute(f"SELECT file FROM landed WHERE {where}", parameters).fetchall()
        return [self.entity_dir / file for (file,) in rows]

    def summary(self) -> tuple[int, bool, datetime | None]:
        """Landed files not removed; whether one's extraction time is unknown; the newest extraction time."""
        with self._connection() as connection:
            count, unknown, newest = connection.execute(
                "SELECT count(*), count(*) - count(extracted_at), max(extracted_at) FROM landed "
                "WHERE removed_at IS NULL"
            ).fetchone()
        return count, bool(unknown), _from_key(newest)

    def newest_extraction(self) -> list[Path]:
        """The landed files of the newest extraction (a snapshot's delivery: its keys are the entity's)."""
        with self._connection() as connection:
            (newest,) = connection.execute(
                "SELECT max(extracted_at) FROM landed WHERE removed_at IS NULL"
            ).fetchone()
        return [] if newest is None else self._files("removed_at IS NULL AND extracted_at = ?", newest)

    def delivered_before(self, delivered: Iterable[str], excluding: Iterable[Path]) -> set[str]:
        """Of the `delivered` files, those with a landed copy (not removed) other than `excluding`."""
        names = sorted(set(delivered))
        if not names:
            return set()
        skipped = {self._relative(path) for path in excluding}
        found: set[str] = set()
        with self._connection() as connection:
            for name in names:
                rows = connection.execute(
                    "SELECT file FROM landed WHERE delivered = ? AND removed_at IS NULL", (name,)
                )
                if any(file not in skipped for (file,) in rows):
                    found.add(name)
        return found

    def spot_check(self) -> list[Path]:
        """Of the oldest and the newest landed file (not removed), those gone from disk."""
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT file FROM landed WHERE seq IN (SELECT min(seq) FROM landed WHERE removed_at IS NULL "
                "UNION SELECT max(seq) FROM landed WHERE removed_at IS NULL)"
            ).fetchall()
        return [self.entity_dir / file for (file,) in rows if not (self.entity_dir / file).exists()]

    def removed_count(self) -> int:
        with self._connection() as connection:
            (count,) = connection.execute(
                "SELECT count(*) FROM landed WHERE removed_at IS NOT NULL"
            ).fetchone()
        return count

    def known_names(self) -> set[str]:
        """Names of every file landed and not lost: on disk, or removed by retention."""
        with self._connection() as connection:
            rows = connection.execute("SELECT file FROM landed").fetchall()
        return {file.rsplit("/", 1)[-1] for (file,) in rows}

    def retention_candidates(
        self, *, staged_through: datetime, keep_newest: int | None, older_than: datetime | None
    ) -> list[IndexedFile]:
        """Landed files retention may remove: staged (extracted no later than `staged_through`), not of the
        newest extraction, and beyond the newest `keep_newest` files or extracted before `older_than`."""
        conditions = [
            "removed_at IS NULL",
            "extracted_at IS NOT NULL",
            "extracted_at <= ?",
            "extracted_at < (SELECT max(extracted_at) FROM landed WHERE removed_at IS NULL)",
        ]
        parameters: list[object] = [time_key(staged_through)]
        if keep_newest is not None:
            conditions.append(
                "seq < coalesce((SELECT min(seq) FROM (SELECT seq FROM landed WHERE removed_at IS NULL "
                "ORDER BY seq DESC LIMIT ?)), 0)"
            )
            parameters.append(keep_newest)
        if older_than is not None:
            conditions.append("extracted_at < ?")
            parameters.append(time_key(older_than))
        with self._connection() as connection:
            rows = connection.execute(
                f"SELECT file, extracted_at, bytes FROM landed WHERE {' AND '.join(conditions)} ORDER BY seq",
                parameters,
            ).fetchall()
        return [IndexedFile(self.entity_dir / file, _from_key(at), size) for file, at, size in rows]

    def retire(self, files: Iterable[Path], at: datetime) -> None:
        """Mark files retention removed (their rows are kept: see the module's docstring)."""
        with self._connection() as connection:
            connection.executemany(
                "UPDATE landed SET removed_at = ? WHERE file = ?",
                ((time_key(at), self._relative(path)) for path in files),
            )
