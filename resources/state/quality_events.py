"""Quality events (failed asset checks, assets going stale), where they are kept: a JSON Lines file on the
embedded default (`QualityEventStore`), a table of the platform's state database in a deployment
(`QualityEventTable`, `resources/state/database.py`). `sensors/healing/quality_events.py` writes them, the
healing layer and the alert channels read them; both stores are read by position, so a reader reads only
what was appended since its last read, whatever the store's age.
"""

import contextlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from resources.state.database import StateDatabase, StateLocation

Kind = Literal["freshness", "check"]
Severity = Literal["error", "warn"]


@dataclass(frozen=True)
class QualityEvent:
    """One quality failure, as the healing layer and alert channels consume it (one JSON object a line)."""

    event_id: str
    """Deterministic: the same failure always has the same id."""
    kind: Kind
    asset_key: str
    """`staged/shop/orders`: the asset's user string."""
    check_name: str | None
    """The failed check (`kind: check`), else None."""
    severity: Severity
    observed_at: str
    """ISO-8601 UTC: when the check was evaluated, or when the sensor saw the asset go stale."""
    details: dict[str, Any] = field(default_factory=dict)
    """Check: `description`, `metadata`, `run_id`, `blocking`, `partition`; freshness: `state`,
    `previous_state`, `last_materialized_at`, `stale_since`, `lag_minutes`, `policy`."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, line: str) -> "QualityEvent":
        return cls(**json.loads(line))


@dataclass(frozen=True)
class EventsPosition:
    """How far a reader got in the events file: an offset in one file, named by its identity (device and
    inode), so a rotated file is told from the new one at the same path."""

    file_id: str
    offset: int

    def to_json(self) -> dict[str, Any]:
        return {"file_id": self.file_id, "offset": self.offset}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> "EventsPosition | None":
        return cls(str(value["file_id"]), int(value["offset"])) if value else None


APPEND_DEDUP_BYTES = 1 << 20
"""The tail of the file `append` reads for event ids already stored: a duplicate can only come from the
tick before (its events written, its cursor not saved), never from months ago, and reading the whole file
on every tick grew with its age."""
ROTATED_SUFFIX = ".1"
"""Where logrotate (and most rotators) move the file: `quality_events.jsonl.1`."""


class QualityEventStore:
    """Append-only JSON Lines file of quality events; an event whose id was just stored is skipped.

    Readers follow it by byte offset (`read_new`), so a tick reads only what was appended since the last
    one, whatever the file's age; rotation is safe: a file renamed away (to `<name>.1`) is read to its end
    before the new one from its start, and a file truncated in place is read from its start."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def location(self) -> str:
        return str(self.path)

    def read(self) -> list[QualityEvent]:
        """Every event of the current file (for tests and inspection)."""
        return self.read_new(None)[0]

    def read_new(self, position: EventsPosition | None) -> tuple[list[QualityEvent], EventsPosition | None]:
        """The events appended since `position` (all of the current file when None), and the position
        after the last whole line read: a line still being written is read next time."""
        current = _file_id(self.path)
        if current is None:
            return [], position
        events: list[QualityEvent] = []
        start = 0
        if position is not None and position.file_id == current:
            start = position.offset if position.offset <= self.path.stat().st_size else 0  # truncated: anew
        elif position is not None:
            rotated = self.path.with_name(self.path.name + ROTATED_SUFFIX)
            if _file_id(rotated) == position.file_id:
                events, _ = _read_lines(rotated, position.offset)
        more, end = _read_lines(self.path, start)
        return events + more, EventsPosition(current, end)

    def position_after(self, lines: int) -> EventsPosition | None:
        """The position after the first `lines` lines: where a reader that counted lines (the healing
        cursor before it kept offsets) goes on."""
        current = _file_id(self.path)
        if current is None:
            return None
        offset = 0
        with self.path.open("rb") as file:
            for _ in range(lines):
                line = file.readline()
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
        return EventsPosition(current, offset)

    def append(self, events: Sequence[QualityEvent]) -> list[QualityEvent]:
        """Appends the events not stored yet (among the file's last `APPEND_DEDUP_BYTES`); returns those
        appended."""
        if not events:
            return []
        known = {event.event_id for event in self._tail()}
        new = []
        for event in events:
            if event.event_id not in known:
                known.add(event.event_id)
                new.append(event)
        if not new:
            return []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as file:
            file.seek(0, os.SEEK_END)
            if file.tell() > 0:
                file.seek(-1, os.SEEK_END)
                if file.read(1) != b"\n":
                    file.write(b"\n")  # end a line a crash left unfinished
            file.write("".join(event.to_json() + "\n" for event in new).encode("utf-8"))
            file.flush()
            os.fsync(file.fileno())
        return new

    def rotate_if_older_than(self, days: float, now: datetime) -> bool:
        """Move the file to `<name>.1` (replacing the one before) when its first event was observed more
        than `days` ago; whether it did. Readers finish the moved file first (`read_new`), and have a
        whole retention period to do so before it is replaced."""
        if not self.path.exists():
            return False
        with self.path.open("rb") as file:
            first = _parsed([file.readline().decode("utf-8", errors="replace")])
        if not first or datetime.fromisoformat(first[0].observed_at) > now - timedelta(days=days):
            return False
        os.replace(self.path, self.path.with_name(self.path.name + ROTATED_SUFFIX))
        return True

    def _tail(self) -> list[QualityEvent]:
        if not self.path.exists():
            return []
        size = self.path.stat().st_size
        start = max(0, size - APPEND_DEDUP_BYTES)
        with self.path.open("rb") as file:
            file.seek(start)
            if start:
                file.readline()  # the first line read may start mid-line
            return _parsed(file.read().decode("utf-8", errors="replace").splitlines())


def _file_id(path: Path) -> str | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return f"{stat.st_dev}:{stat.st_ino}"


def _read_lines(path: Path, offset: int) -> tuple[list[QualityEvent], int]:
    """The events of the whole lines of `path` from `offset`, and the offset after the last of them."""
    with path.open("rb") as file:
        file.seek(offset)
        data = file.read()
    whole = data[: data.rfind(b"\n") + 1]
    return _parsed(whole.decode("utf-8", errors="replace").splitlines()), offset + len(whole)


def _parsed(lines: Iterable[str]) -> list[QualityEvent]:
    events = []
    for line in lines:
        try:
            events.append(QualityEvent.from_json(line))
        except (ValueError, TypeError):
            continue  # a line cut short by a crash mid-append: skipped, never fatal
    return events


TABLE_ID = "table:quality_events"
"""`EventsPosition.file_id` of a position in the table: its offset is the last `seq` read."""
LATE_COMMIT_ROWS = 100
"""Rows below a reader's position read again: on PostgreSQL a sequence value is taken when a row is
inserted, not when its transaction commits, so a row with a smaller `seq` can appear after a larger one was
read. Reading the last rows again costs little: the healing layer records each event once (its incident's
`dedup_key`)."""

_TABLES = sa.MetaData()
_EVENTS = sa.Table(
    "quality_events",
    _TABLES,
    sa.Column(
        "seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("event_id", sa.Text, nullable=False, unique=True),
    sa.Column("observed_at", sa.Float, nullable=False, index=True),
    sa.Column("event", sa.Text, nullable=False),
)


class QualityEventTable:
    """Quality events as rows of the platform's state database: an event id is stored once (the database
    refuses the second insert, whichever daemon makes it); readers follow the rows by `seq`."""

    def __init__(self, location: StateLocation) -> None:
        """Connects on first use (the table is created then), not here: the quality events sensor builds
        its store when the code location loads."""
        self.database = StateDatabase(location)

    def _begin(self) -> contextlib.AbstractContextManager[sa.Connection]:
        self.database.create(_TABLES)
        return self.database.begin()

    @property
    def location(self) -> str:
        return f"{self.database.location} (table quality_events)"

    def read(self) -> list[QualityEvent]:
        return self.read_new(None)[0]

    def read_new(self, position: EventsPosition | None) -> tuple[list[QualityEvent], EventsPosition | None]:
        """The events after `position` (every one when None, or a position in a file), with the last
        `LATE_COMMIT_ROWS` before it again, and the position after the last one read."""
        after = position.offset - LATE_COMMIT_ROWS if position and position.file_id == TABLE_ID else 0
        query = sa.select(_EVENTS.c.seq, _EVENTS.c.event).where(_EVENTS.c.seq > after).order_by(_EVENTS.c.seq)
        with self._begin() as connection:
            rows = connection.execute(query).all()
        last = max([row.seq for row in rows], default=position.offset if position else 0)
        return _parsed(row.event for row in rows), EventsPosition(TABLE_ID, max(last, after))

    def position_after(self, lines: int) -> EventsPosition | None:
        """The position after the first `lines` events (a reader that counted them goes on there)."""
        query = sa.select(_EVENTS.c.seq).order_by(_EVENTS.c.seq).offset(max(lines - 1, 0)).limit(1)
        with self._begin() as connection:
            seq = connection.execute(query).scalar() if lines else 0
        return EventsPosition(TABLE_ID, int(seq or 0))

    def append(self, events: Sequence[QualityEvent]) -> list[QualityEvent]:
        """Stores the events not stored yet; returns those stored."""
        stored = []
        with self._begin() as connection:
            for event in events:
                row = {
                    "event_id": event.event_id,
                    "observed_at": datetime.fromisoformat(event.observed_at).timestamp(),
                    "event": event.to_json(),
                }
                if self.database.insert_new(connection, _EVENTS, row) == 1:
                    stored.append(event)
        return stored

    def rotate_if_older_than(self, days: float, now: datetime) -> bool:
        """Delete the events observed more than `days` ago; whether any was."""
        oldest = (now - timedelta(days=days)).timestamp()
        with self._begin() as connection:
            return connection.execute(sa.delete(_EVENTS).where(_EVENTS.c.observed_at < oldest)).rowcount > 0


QualityEventLog = QualityEventStore | QualityEventTable


def quality_event_store(location: StateLocation) -> QualityEventLog:
    """The file store for a path, the table store for a database URL."""
    if isinstance(location, str) and "://" in location:
        return QualityEventTable(location)
    return QualityEventStore(Path(location))
