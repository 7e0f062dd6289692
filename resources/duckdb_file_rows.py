"""Rows selected from a DuckDB database file, handed to a warehouse load.

Staging builds its rows in a scratch DuckDB file. Streaming them out as Arrow batches only for the
embedded DuckDB warehouse to read them back costs more than building them (a Python-driven scan of a
single stream, measured 2.0 s of 1 million rows against 0.8 s natively). So a DuckDB warehouse attaches
the file and copies the rows with one parallel `INSERT ... SELECT`; any other warehouse iterates them as
Arrow batches. Either way the file is deleted once the rows are consumed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBFileRows:
    """`SELECT * EXCLUDE (exclude) FROM relation WHERE where` in the database file `path` (which nothing
    else has open), in batches of `batch_rows` when iterated. Owns the file: `close` deletes it."""

    def __init__(
        self, path: Path, relation: str, *, where: str, exclude: Sequence[str], batch_rows: int
    ) -> None:
        self.path = path
        self.relation = relation
        self.where = where
        self.exclude = list(exclude)
        self.batch_rows = batch_rows

    def select(self, catalog: str) -> str:
        """The SELECT, with the file attached under the name `catalog`."""
        excluded = f" EXCLUDE ({', '.join(_quote(name) for name in self.exclude)})" if self.exclude else ""
        return f"SELECT *{excluded} FROM {_quote(catalog)}.{_quote(self.relation)} WHERE {self.where}"

    def attach_sql(self, catalog: str) -> str:
        return f"ATTACH '{str(self.path).replace(chr(39), chr(39) * 2)}' AS {_quote(catalog)} (READ_ONLY)"

    def size_bytes(self) -> int:
        """The file's size on disk (compressed, rejected rows included): what a native copy reports as
        loaded bytes, where an Arrow stream reports its batches' size."""
        return self.path.stat().st_size if self.path.exists() else 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        con = duckdb.connect(":memory:")
        try:
            con.execute(self.attach_sql("source"))
            yield from con.sql(self.select("source")).to_arrow_reader(self.batch_rows)
        finally:
            con.close()
            self.close()

    def close(self) -> None:
        for leftover in (self.path, self.path.with_name(self.path.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
