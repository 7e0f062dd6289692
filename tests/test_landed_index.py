"""The landed index and the file ledger's running digest (issue 21): the index follows the landing zone
(files it lacks are added, files gone are forgotten, files retention removed are kept as removed), and the
digest a run updates by its delta is the digest of the whole ledger."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from resources.landing.landed_index import LandedIndex
from resources.landing.ledger import FileLedger
from resources.landing.zone import Lineage, write_parquet


def _land(entity_dir: Path, name: str, day: int) -> Path:
    folder = entity_dir / "load_date=2026-01-01"
    folder.mkdir(parents=True, exist_ok=True)
    batch = pa.RecordBatch.from_pydict({"id": [1]})
    landed = write_parquet(folder / name, [batch], Lineage("s.e", datetime(2026, 1, day, tzinfo=UTC), "r"))
    assert landed is not None
    return landed.path


def _long_ago(*directories: Path) -> None:
    for directory in directories:
        os.utime(directory, ns=(10**18, 10**18))


def test_the_index_follows_the_landing_zone_and_keeps_what_retention_removed(tmp_path: Path) -> None:
    entity_dir = tmp_path / "s" / "e"
    first, second = _land(entity_dir, "a.parquet", 1), _land(entity_dir, "b.parquet", 2)
    _long_ago(entity_dir, first.parent)  # the changes below change the mtimes, whatever the clock's tick
    index = LandedIndex(tmp_path / "_state" / "landed.sqlite", entity_dir)
    # A new index starts from what is on disk (files landed before it existed).
    assert index.live() == [first, second]
    assert index.extracted_after(datetime(2026, 1, 1, tzinfo=UTC)) == [second]

    third = _land(entity_dir, "c.parquet", 3)  # committed by a run killed before its index write
    index.retire([first], datetime.now(UTC))
    first.unlink()
    second.unlink()  # a cleaned-up landing zone
    index.reconcile()
    assert index.live() == [third]
    assert index.removed_count() == 1
    assert index.known_names() == {"a.parquet", "c.parquet"}, "removed by retention: still known"
    assert index.summary() == (1, False, datetime(2026, 1, 3, tzinfo=UTC))


def test_the_running_digest_is_the_digest_of_the_whole_ledger(tmp_path: Path) -> None:
    ledger = FileLedger(tmp_path / "ledger.sqlite")
    ledger.apply({"a": {"size": 1}, "b": {"size": 2}}, [])
    delta = ledger.apply({"a": {"size": 1}, "b": {"size": 3}, "c": {"size": 4}}, ["a"])
    assert (sorted(delta.written), delta.dropped) == (["b", "c"], ["a"])
    entries, digest = ledger.summary()

    rebuilt = FileLedger(tmp_path / "rebuilt.sqlite")
    rebuilt.apply({"c": {"size": 4}, "b": {"size": 3}}, [])
    assert rebuilt.summary() == (entries, digest) == (2, digest)
    # A ledger written before the digest was kept computes it once from its entries.
    with sqlite3.connect(rebuilt.path) as connection:
        connection.execute("DELETE FROM meta")
    assert rebuilt.summary() == (2, digest)
    assert ledger.fields(["size"]) == {"b": (3,), "c": (4,)}
    assert ledger.get(["c", "zz"]) == {"c": json.loads('{"size": 4}')}


def test_reconcile_lists_the_landing_zone_only_when_a_directory_changed(tmp_path: Path) -> None:
    entity_dir = tmp_path / "s" / "e"
    first = _land(entity_dir, "a.parquet", 1)
    day = first.parent
    _long_ago(entity_dir, day)
    index = LandedIndex(tmp_path / "_state" / "landed.sqlite", entity_dir)
    assert index.live() == [first]

    # A file that appeared without changing any directory's mtime is not seen: the listing was skipped.
    unseen = _land(entity_dir, "b.parquet", 2)
    os.utime(day, ns=(10**18, 10**18))
    index.reconcile()
    assert index.live() == [first]
    # Any change of the directory's mtime (a file added or removed) makes the next reconcile list it.
    os.utime(day, ns=(10**18 + 1, 10**18 + 1))
    index.reconcile()
    assert index.live() == [first, unseen]
