"""Every file format landed and read back: text formats as text, typed formats with their types, lineage
on every row, malformed records failed or set aside with their file and line, one schema per file.

CSV and Parquet deliveries land as the bytes delivered (`land_file`: a copy and its sidecar) and are parsed
once, by staging's DuckDB scan (`parse_copies`, `landed_relation`, `rejected_records`,
`malformed_copy_message`): `Landed` lands a delivery exactly so and reads it back exactly so. JSON, JSON
Lines and Avro are read record by record as they land (`read_batches`): `Delivery` reads them so."""

from __future__ import annotations

import bz2
import datetime as dt
import decimal
import gzip
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from fault_files import ENTITY, SOURCE, csv_rows, file_slice

from platform_assets.ingestion.files import land_file
from resources.files.config import FileFormat, MalformedPolicy
from resources.files.formats.reader import (
    DEFAULT_BATCH_ROWS,
    MalformedFileError,
    MalformedRecord,
    read_batches,
)
from resources.files.store import FileStore
from resources.landing import delivered as delivered_module
from resources.landing.delivered import (
    landed_relation,
    malformed_copy_message,
    parse_copies,
    rejected_records,
)
from resources.landing.zone import (
    EXTRACTED_AT_COLUMN,
    RUN_ID_COLUMN,
    SOURCE_COLUMN,
    LandingZone,
    Lineage,
)

CSV = FileFormat(format="csv")
JSONL = FileFormat(format="jsonl")
JSON = FileFormat(format="json")
PARQUET = FileFormat(format="parquet")


def _zip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("member", data)
    return buffer.getvalue()


COMPRESS = {
    "": lambda data: data,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".zip": _zip,
    ".zst": zstandard.ZstdCompressor().compress,
}


class Delivery:
    """One delivered file under a temporary root, read record by record the way landing reads JSON, JSON
    Lines and Avro."""

    def __init__(self, root: Path, name: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        self.store = FileStore(root=str(root))
        [self.file] = self.store.list(name)
        self.quarantined: list[MalformedRecord] = []

    def batches(
        self, fmt: FileFormat, on_malformed: MalformedPolicy = "fail", **sizes: int
    ) -> list[pa.RecordBatch]:
        return list(
            read_batches(
                self.store,
                self.file,
                fmt,
                on_malformed=on_malformed,
                quarantine=self.quarantined.append,
                **sizes,
            )
        )

    def table(self, fmt: FileFormat, on_malformed: MalformedPolicy = "fail", **sizes: int) -> pa.Table:
        batches = self.batches(fmt, on_malformed, **sizes)
        assert len({batch.schema for batch in batches}) <= 1, "one schema per file"
        return pa.Table.from_batches(batches)


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.drop_columns(["_file"]).to_pylist()


LINEAGE = Lineage("shop.orders", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "run-1")
CONSTANT_LINEAGE = [SOURCE_COLUMN, EXTRACTED_AT_COLUMN, RUN_ID_COLUMN]
STAGED_STEP = f"staged__{SOURCE}__{ENTITY}"


class Landed:
    """One delivered file under a temporary root, landed as the files extractor lands it (`land_file`: CSV
    and Parquet as a copy of the delivered bytes beside its sidecar, committed to the landing zone), and
    read back as staging reads it: each copy parsed once by DuckDB into a table (`parse_copies`), its rows
    with their lineage (`landed_relation(..., parsed=True)`), the records the scan set aside under
    `on_malformed: skip` from the same connection (`rejected_records`). Landing raises what it refuses;
    the scan raises what DuckDB refuses under `on_malformed: fail`."""

    def __init__(
        self, root: Path, name: str, data: bytes, fmt: FileFormat, on_malformed: MalformedPolicy = "fail"
    ) -> None:
        deliveries = root / "deliveries"
        deliveries.mkdir(parents=True, exist_ok=True)
        (deliveries / name).write_bytes(data)
        store = FileStore(root=str(deliveries))
        [file] = store.list(name)
        self.name = name
        quarantined: list[MalformedRecord] = []
        landing = LandingZone(root=str(root / "landing"))
        with landing.extraction("shop", "orders") as inflight:
            land_file(
                store,
                file,
                fmt,
                on_malformed=on_malformed,
                inflight=inflight,
                lineage=LINEAGE,
                batch_rows=DEFAULT_BATCH_ROWS,
                quarantine=quarantined.append,
            )
            self.files = [landed.path for landed in inflight.commit(LINEAGE.extracted_at.date().isoformat())]
        assert quarantined == [], "a copy's malformed records are set aside by the scan, not by landing"
        self.rejected: list[tuple[str, int, str, str]] = []

    def scan(self) -> pa.Table:
        """Every landed row with all its lineage; the records set aside in `rejected` (file, line, error,
        text)."""
        with duckdb.connect(":memory:") as con:
            parse_copies(con, self.files)
            table = con.sql(f"SELECT * FROM {landed_relation(self.files, parsed=True)}").to_arrow_table()
            self.rejected = [
                (record["file"], record["line"], record["error"], record["text"])
                for record in rejected_records(con)
            ]
        return table

    def rows(self) -> list[dict[str, Any]]:
        """The landed rows with `_record`, without `_file` and the lineage every row shares."""
        return self.scan().drop_columns(["_file", *CONSTANT_LINEAGE]).to_pylist()

    def refusal(self) -> str | None:
        """What staging says when the scan refuses a copy under `on_malformed: fail`
        (`malformed_copy_message`, the `MalformedFileError` of the staged step)."""
        with pytest.raises(duckdb.InvalidInputException) as failure:
            self.scan()
        return malformed_copy_message(failure.value)

    def fix_and_deliver_again(self, line: int, what: str) -> str:
        """The message `refusal` should give for the only copy: its delivered file, the landed copy, the
        line and what to do."""
        (copy,) = self.files
        return (
            f"{self.name} (landed as {copy}): line {line}: {what}. Fix the file and deliver it again, or set "
            f"`on_malformed: skip` on the entity to set such records aside and stage the rest."
        )


# CSV


def test_csv_lands_every_column_as_text_with_file_and_record(tmp_path: Path) -> None:
    data = b'id,amount,note\n1,12.50,""\n2,,plain\n'
    landed = Landed(tmp_path, "orders.csv", data, CSV)
    table = landed.scan()
    assert table.schema.field("_extracted_at").type.tz is not None
    assert table.drop_columns([EXTRACTED_AT_COLUMN]).schema == pa.schema(
        [
            ("id", pa.string()),
            ("amount", pa.string()),
            ("note", pa.string()),
            ("_record", pa.int64()),
            ("_file", pa.string()),
            ("_source", pa.string()),
            ("_run_id", pa.string()),
        ]
    )
    lineage = {"_file": "orders.csv", "_source": "shop.orders", "_extracted_at": LINEAGE.extracted_at}
    assert table.to_pylist() == [
        {"id": "1", "amount": "12.50", "note": "", "_record": 2, **lineage, "_run_id": "run-1"},
        {"id": "2", "amount": None, "note": "plain", "_record": 3, **lineage, "_run_id": "run-1"},
    ]


def test_csv_records_count_the_header_not_lines_inside_values_nor_blank_lines(tmp_path: Path) -> None:
    """`_record` is the record's number, the header counted: DuckDB numbers records, so a value spanning
    lines is one record and a blank line is none. (The Arrow reader numbered physical lines: 2, 5, 8
    here.)"""
    data = b'id,note\n1,"two\nlines"\n\n2,"three\r\nlines\nhere"\n3,x\n'
    assert Landed(tmp_path, "notes.csv", data, CSV).rows() == [
        {"id": "1", "note": "two\nlines", "_record": 2},
        {"id": "2", "note": "three\r\nlines\nhere", "_record": 3},
        {"id": "3", "note": "x", "_record": 4},
    ]


def test_csv_delimiter_and_quote_char(tmp_path: Path) -> None:
    fmt = FileFormat(format="csv", delimiter=";", quote_char="'")
    landed = Landed(tmp_path, "a.csv", b"id;name\n1;'Doe; Jane'\n2;'it''s'\n", fmt)
    assert landed.rows() == [
        {"id": "1", "name": "Doe; Jane", "_record": 2},
        {"id": "2", "name": "it's", "_record": 3},
    ]


def test_csv_without_header_takes_the_declared_names_and_counts_from_line_one(tmp_path: Path) -> None:
    fmt = FileFormat(format="csv", header=False, column_names=["id", "name"])
    assert Landed(tmp_path, "a.csv", b"1,ann\n2,bob\n", fmt).rows() == [
        {"id": "1", "name": "ann", "_record": 1},
        {"id": "2", "name": "bob", "_record": 2},
    ]


def test_csv_header_renamed_by_declared_column_names(tmp_path: Path) -> None:
    fmt = FileFormat(format="csv", column_names=["order_id", "customer"])
    landed = Landed(tmp_path, "a.csv", b"ID,Kunde\n1,ann\n", fmt)
    assert landed.rows() == [{"order_id": "1", "customer": "ann", "_record": 2}]


def test_csv_header_and_declared_column_names_must_agree_in_number(tmp_path: Path) -> None:
    fmt = FileFormat(format="csv", column_names=["order_id"])
    with pytest.raises(MalformedFileError, match="has 2 fields in its header but the entity declares 1"):
        Landed(tmp_path, "a.csv", b"ID,Kunde\n1,ann\n", fmt)


def test_csv_without_header_needs_column_names(tmp_path: Path) -> None:
    with pytest.raises(MalformedFileError, match="no `column_names`"):
        Landed(tmp_path, "a.csv", b"1,2\n", FileFormat(format="csv", header=False))


def test_csv_in_latin_1(tmp_path: Path) -> None:
    fmt = FileFormat(format="csv", encoding="latin-1")
    landed = Landed(tmp_path, "a.csv", "name\nJosé\nMüller\n".encode("latin-1"), fmt)
    assert landed.scan().column("name").to_pylist() == ["José", "Müller"]


@pytest.mark.parametrize("on_malformed", ["fail", "skip"])
def test_csv_not_in_the_declared_encoding_is_refused_by_landing(
    tmp_path: Path, on_malformed: MalformedPolicy
) -> None:
    """Landing decodes the first block of the file as it reads the header: text in another encoding there
    is refused, whatever the policy, and nothing lands."""
    with pytest.raises(
        MalformedFileError, match=r"a.csv is not valid utf-8 text .*Declare the file's actual `encoding`"
    ):
        Landed(tmp_path, "a.csv", "name\nJosé\n".encode("latin-1"), CSV, on_malformed)


def test_csv_not_in_the_declared_encoding_past_its_first_block_fails_staging_naming_file_and_line(
    tmp_path: Path,
) -> None:
    """Past the block landing decodes, the text is first decoded by staging's scan: under `fail` it fails
    naming the delivered file and the record; under `skip` DuckDB sets that record aside (its text with the
    undecodable bytes replaced) and stages the rest. (The Arrow reader refused such a file whatever the
    policy.)"""
    data = b"name\n" + b"ann\n" * 20_000 + "José\n".encode("latin-1") + b"bob\n"
    landed = Landed(tmp_path / "fail", "a.csv", data, CSV)
    assert landed.refusal() == landed.fix_and_deliver_again(
        20_002, "Invalid unicode (byte sequence mismatch) detected. This file is not utf-8 encoded"
    )

    skipped = Landed(tmp_path / "skip", "a.csv", data, CSV, "skip")
    assert skipped.scan().column("name").to_pylist() == ["ann"] * 20_000 + ["bob"]
    assert skipped.rejected == [
        (
            "a.csv",
            20_002,
            "INVALID ENCODING: Invalid unicode (byte sequence mismatch) detected. This file is not utf-8 "
            "encoded.",
            "Jos?",
        )
    ]


@pytest.mark.parametrize(
    ("record", "what"),
    [(b"2", "Expected Number of Columns: 2 Found: 1"), (b"2,b,c", "Expected Number of Columns: 2 Found: 3")],
    ids=["too-few", "too-many"],
)
def test_csv_record_with_wrong_field_count_fails_with_file_line_and_what_to_do(
    tmp_path: Path, record: bytes, what: str
) -> None:
    """The line is the record's number, the header counted: 3 here, on the fourth physical line after a
    value spanning two (the Arrow reader said line 4, and `expected 2 fields, found 1`)."""
    landed = Landed(tmp_path, "a.csv", b'id,name\n1,"a\nb"\n' + record + b"\n3,c\n", CSV)
    assert landed.refusal() == landed.fix_and_deliver_again(3, what)


def test_a_malformed_csv_record_fails_the_staged_step_as_a_malformed_file(tmp_path: Path) -> None:
    """Through the raw and staged assets (`fault_files.file_slice`): the raw step lands the delivery, the
    staged step fails with the healing layer's `MalformedFileError`, the refusal above its message."""
    with dg.instance_for_test() as instance:
        platform = file_slice(tmp_path, instance)
        platform.deliver("a.csv", [*csv_rows(range(1, 4)), "4,40"])
        result = platform.materialize()
    assert not result.success
    assert result.is_node_success(f"raw__{SOURCE}__{ENTITY}")
    error = result.failure_data_for_node(STAGED_STEP).error
    while error.cause is not None and error.cls_name != "MalformedFileError":
        error = error.cause
    assert error.cls_name == "MalformedFileError"
    assert error.message.startswith(
        "resources.files.read_context.MalformedFileError: orders/a.csv (landed as "
    )
    assert error.message.rstrip().endswith(
        "): line 5: Expected Number of Columns: 3 Found: 2. Fix the file and deliver it again, or set "
        "`on_malformed: skip` on the entity to set such records aside and stage the rest."
    )


def test_csv_records_with_wrong_field_count_are_set_aside_by_staging_under_skip(tmp_path: Path) -> None:
    """Through the raw and staged assets (`fault_files.file_slice`): staging's scan sets the malformed
    records aside into the landing quarantine with their file, record number and text, stages the rest,
    and every staged row keeps its own `_record` (StagingSplit counts the set-aside records back in). The
    numbers are records, the header counted: after the record spanning two lines they are one less than the
    physical line (the Arrow reader reported lines 3002, 4002, 5002, 5003 and kept rows at lines 2503 and
    5001)."""
    lines = csv_rows(range(1, 5001))
    for key in range(1000, 5001, 1000):
        lines[key - 1] = f"{key}"
    lines[2499] = '2500,25000,"spans\nlines",extra'
    lines.append("5001,x,y,z")
    with dg.instance_for_test() as instance:
        platform = file_slice(tmp_path, instance, on_malformed="skip")
        platform.deliver("a.csv", lines)
        result = platform.materialize()
        assert result.success
        (event,) = result.asset_materializations_for_node(STAGED_STEP)
        staged = dict(platform.staged_rows(ENTITY, "order_id, _record"))

    assert event.metadata["malformed_records"].value == 7
    quarantine = pq.read_table(event.metadata["quarantine_file"].value).to_pylist()
    too_few = "MISSING COLUMNS: Expected Number of Columns: 3 Found: 1"
    too_many = "TOO MANY COLUMNS: Expected Number of Columns: 3 Found: 4"
    assert [(row["file"], row["line"], row["error"], row["text"]) for row in quarantine] == [
        ("orders/a.csv", 1001, too_few, "1000"),
        ("orders/a.csv", 2001, too_few, "2000"),
        ("orders/a.csv", 2501, too_many, '2500,25000,"spans\nlines",extra'),
        ("orders/a.csv", 3001, too_few, "3000"),
        ("orders/a.csv", 4001, too_few, "4000"),
        ("orders/a.csv", 5001, too_few, "5000"),
        ("orders/a.csv", 5002, too_many, "5001,x,y,z"),
    ]
    assert len(staged) == 5000 - 6
    assert (staged[1], staged[999], staged[1001], staged[2499], staged[2501], staged[4999]) == (
        2,
        1000,
        1002,
        2500,
        2502,
        5000,
    )


def test_csv_quote_never_closed_fails_naming_its_line(tmp_path: Path) -> None:
    """DuckDB refuses a quote left open instead of swallowing the rest of the file into one value."""
    landed = Landed(tmp_path, "a.csv", b'id,name\n1,x\n2,"abc\n3,y\n4,z\n', CSV)
    assert landed.refusal() == landed.fix_and_deliver_again(3, "Value with unterminated quote found")


def test_csv_quote_never_closed_sets_the_rest_of_the_file_aside_under_skip(tmp_path: Path) -> None:
    """Under `skip` the record the quote opens, the rest of the file, is set aside as one malformed record
    (its text the rest of the file, which DuckDB cuts at 10,000 characters); the records before it are
    staged. (The Arrow reader refused the file whatever the policy.)"""
    landed = Landed(tmp_path, "a.csv", b'id,name\n1,x\n2,"abc\n3,y\n4,z\n', CSV, "skip")
    assert landed.rows() == [{"id": "1", "name": "x", "_record": 2}]
    assert landed.rejected == [
        ("a.csv", 3, "UNQUOTED VALUE: Value with unterminated quote found.", '2,"abc\n3,y\n4,z\n')
    ]


def test_csv_records_keep_their_order_and_numbers_in_a_larger_file(tmp_path: Path) -> None:
    """`_record` is the row's position in the table staging parses a copy into (in parallel, in file order).
    A file this size fits one of DuckDB's scan buffers (32 MB): this pins the numbering of many records,
    not the order across buffers."""
    rows = b"".join(b"%d,v%d\n" % (i, i) for i in range(100_000))
    table = Landed(tmp_path, "a.csv", b"id,value\n" + rows, CSV).scan()
    assert table.column("id").to_pylist() == [str(i) for i in range(100_000)]
    assert table.column("_record").to_pylist() == list(range(2, 100_002))


@pytest.mark.parametrize("data", [b"", b"\n", b"\n\r\n\n"], ids=["zero-bytes", "blank", "blank-lines"])
def test_empty_csv_lands_nothing(tmp_path: Path, data: bytes) -> None:
    assert Landed(tmp_path, "a.csv", data, CSV).files == []


@pytest.mark.parametrize("data", [b"id,name\n", b"id,name"], ids=["header", "header-no-newline"])
def test_csv_of_a_header_alone_lands_no_row(tmp_path: Path, data: bytes) -> None:
    """A copy lands (its header names its columns), with no row in it."""
    landed = Landed(tmp_path, "a.csv", data, CSV)
    assert len(landed.files) == 1
    table = landed.scan()
    assert table.num_rows == 0
    assert table.column_names[:3] == ["id", "name", "_record"]


def test_csv_starting_with_a_blank_line_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        MalformedFileError, match="starts with a blank line; the header must be the first line"
    ):
        Landed(tmp_path, "a.csv", b"\nid,name\n1,ann\n", CSV, "skip")


def test_csv_header_with_duplicate_names_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MalformedFileError, match=r"repeats the column\(s\) \['id'\]"):
        Landed(tmp_path, "a.csv", b"id,id\n1,2\n", CSV)


def test_csv_header_with_an_empty_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MalformedFileError, match=r"has an empty name in its header \(field 2\)"):
        Landed(tmp_path, "a.csv", b"id,\n1,2\n", CSV)


def _parquet(table: pa.Table, **options: Any) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "fmt"),
    [
        ("a.csv", b"id,_file\n1,2\n", CSV),
        ("a.csv", b"1,2\n", FileFormat(format="csv", header=False, column_names=["id", "_record"])),
        ("a.parquet", _parquet(pa.table({"id": [1], "_file": ["x"]})), PARQUET),
    ],
    ids=["csv-header", "csv-column-names", "parquet"],
)
def test_a_column_named_like_lineage_is_refused(
    tmp_path: Path, name: str, data: bytes, fmt: FileFormat
) -> None:
    with pytest.raises(MalformedFileError, match=r"has a column named '_(file|record)', a name the platform"):
        Landed(tmp_path, name, data, fmt)


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_compressed_csv(tmp_path: Path, suffix: str) -> None:
    """A copy keeps a gzip or zstd delivery's bytes (DuckDB reads them as they are); any other lands
    zstd-compressed."""
    delivered = COMPRESS[suffix](b"id\n1\n2\n")
    landed = Landed(tmp_path, f"a.csv{suffix}", delivered, CSV)
    assert landed.rows() == [{"id": "1", "_record": 2}, {"id": "2", "_record": 3}]
    (copy,) = landed.files
    kept = suffix in (".gz", ".zst")
    assert copy.name.endswith(f".csv{suffix}" if kept else ".csv.zst")
    assert (copy.read_bytes() == delivered) == kept
    if not kept:
        assert zstandard.ZstdDecompressor().decompressobj().decompress(copy.read_bytes()) == b"id\n1\n2\n"


def _flip_bytes_in_the_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(byte ^ 0xFF for byte in data[middle : middle + 16]) + data[middle + 16 :]


CSV_ROWS = b"id\n" + b"".join(b"%d\n" % i for i in range(20_000))


@pytest.mark.parametrize(
    ("name", "data", "codec", "error"),
    [
        ("a.csv.gz", gzip.compress(CSV_ROWS)[:-20], "gzip", "EOFError"),
        ("a.csv.gz", _flip_bytes_in_the_middle(gzip.compress(CSV_ROWS)), "gzip", "BadGzipFile"),
        (
            "a.csv.zst",
            _flip_bytes_in_the_middle(zstandard.ZstdCompressor(write_checksum=True).compress(CSV_ROWS)),
            "zstd",
            "ZstdError",
        ),
        ("a.csv.bz2", bz2.compress(CSV_ROWS)[:-20], "bz2", "EOFError"),
        (
            "a.csv.bz2",
            _flip_bytes_in_the_middle(bz2.compress(CSV_ROWS)),
            "bz2",
            "OSError: Invalid data stream",
        ),
    ],
    ids=["gzip-truncated", "gzip-damaged", "zstd-damaged", "bz2-truncated", "bz2-damaged"],
)
def test_damaged_compressed_csv_fails_naming_it(
    tmp_path: Path, name: str, data: bytes, codec: str, error: str
) -> None:
    """Landing decompresses a copy it keeps compressed through to its end: DuckDB, which parses it at
    staging, would stage a damaged gzip stream's rows without checking its CRC."""
    with pytest.raises(
        MalformedFileError,
        match=rf"{name} cannot be decompressed as {codec} \({error}.* truncated or damaged",
    ):
        Landed(tmp_path, name, data, CSV)
    assert LandingZone(root=str(tmp_path / "landing")).committed_files("shop", "orders") == []


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_compressed_json_lines(tmp_path: Path, suffix: str) -> None:
    lines = Delivery(tmp_path, f"a.jsonl{suffix}", COMPRESS[suffix](b'{"id": 1}\n{"id": 2}\n')).table(JSONL)
    assert _rows(lines) == [{"id": "1", "_record": 1}, {"id": "2", "_record": 2}]


def test_damaged_compressed_json_lines_fail_naming_it(tmp_path: Path) -> None:
    damaged = gzip.compress(b'{"id": 1}\n' * 10_000)[:-20]
    with pytest.raises(
        MalformedFileError, match=r"a.jsonl.gz cannot be decompressed as gzip .* truncated or damaged"
    ):
        Delivery(tmp_path, "a.jsonl.gz", damaged).table(JSONL)


# JSON Lines


def test_json_lines_land_values_as_text(tmp_path: Path) -> None:
    record = {
        "id": 12345678901234567890,
        "price": 12.50,
        "big": 1e3,
        "ok": True,
        "day": "2024-01-02",
        "at": "2024-01-02 03:04:05",
        "none": None,
        "nested": {"b": [1, "x"], "a": None},
    }
    table = Delivery(tmp_path, "a.jsonl", (json.dumps(record) + "\n").encode()).table(JSONL)
    assert _rows(table) == [
        {
            "id": "12345678901234567890",
            "price": "12.5",
            "big": "1000",
            "ok": "true",
            "day": "2024-01-02",
            "at": "2024-01-02 03:04:05",
            "none": None,
            "nested": '{"b":[1,"x"],"a":null}',
            "_record": 1,
        }
    ]


def test_json_lines_fast_and_python_paths_agree(tmp_path: Path) -> None:
    flat = b'{"a": 1, "b": 2.50, "c": "2024-01-02", "d": false}\n'
    mixed = flat + b'{"a": "one", "b": 1e3, "c": 7, "d": null}\n'
    fast = _rows(Delivery(tmp_path, "fast.jsonl", flat).table(JSONL))
    python = _rows(Delivery(tmp_path, "python.jsonl", mixed).table(JSONL))
    assert python[0] == fast[0] == {"a": "1", "b": "2.5", "c": "2024-01-02", "d": "false", "_record": 1}
    assert python[1] == {"a": "one", "b": "1000", "c": "7", "d": None, "_record": 2}


def test_json_lines_keep_big_integers_exact_beside_decimals(tmp_path: Path) -> None:
    data = b'{"n": 1.5}\n{"n": 9007199254740993}\n{"n": 12345678901234567890}\n'
    table = Delivery(tmp_path, "a.jsonl", data).table(JSONL)
    assert table.column("n").to_pylist() == ["1.5", "9007199254740993", "12345678901234567890"]


def test_json_lines_malformed_line_fails_with_its_line_number(tmp_path: Path) -> None:
    delivery = Delivery(tmp_path, "a.jsonl", b'{"id": 1}\n\n{"id": 2,\n{"id": 3}\n')
    with pytest.raises(MalformedFileError, match=r"a.jsonl: line 3: not valid JSON .*`on_malformed: skip`"):
        delivery.table(JSONL)


def test_json_lines_malformed_and_non_object_lines_are_quarantined_under_skip(tmp_path: Path) -> None:
    data = b'{"id": 1}\n\n{"id": 2,\n[1, 2]\n"text"\n{"id": 3, "late": "x"}\n'
    delivery = Delivery(tmp_path, "a.jsonl", data)
    table = delivery.table(JSONL, "skip")
    assert _rows(table) == [{"id": "1", "late": None, "_record": 1}, {"id": "3", "late": "x", "_record": 6}]
    assert [(record.line, record.error, record.text) for record in delivery.quarantined] == [
        (3, "not valid JSON (Expecting property name enclosed in double quotes, column 10)", '{"id": 2,'),
        (4, "a JSON array where a record (an object) was expected", "[1, 2]"),
        (5, "a JSON string where a record (an object) was expected", '"text"'),
    ]


def test_json_lines_fields_appearing_late_widen_the_one_schema(tmp_path: Path) -> None:
    early = b"".join(b'{"id": %d, "day": "2024-01-02"}\n' % i for i in range(3000))
    data = early + b'{"id": "x-1", "coupon": "SAVE"}\n' + early
    batches = Delivery(tmp_path, "a.jsonl", data).batches(JSONL, batch_bytes=8 << 10)
    assert len(batches) > 5
    assert len({batch.schema for batch in batches}) == 1
    table = pa.Table.from_batches(batches)
    assert table.column_names == ["id", "day", "coupon", "_file", "_record"]
    assert table.column("coupon").to_pylist() == [None] * 3000 + ["SAVE"] + [None] * 3000
    assert table.column("_record").to_pylist() == list(range(1, 6002))
    assert set(table.column("day").to_pylist()) == {"2024-01-02", None}


def test_json_lines_not_utf8_fails_the_file(tmp_path: Path) -> None:
    with pytest.raises(MalformedFileError, match=r"a\.jsonl is not valid utf-8 text"):
        Delivery(tmp_path, "a.jsonl", '{"name": "José"}\n'.encode("latin-1")).table(JSONL, "skip")


def test_json_lines_in_latin_1(tmp_path: Path) -> None:
    fmt = FileFormat(format="jsonl", encoding="latin-1")
    table = Delivery(tmp_path, "a.jsonl", '{"name": "José"}\n'.encode("latin-1")).table(fmt)
    assert table.column("name").to_pylist() == ["José"]


@pytest.mark.parametrize("data", [b"", b"\n\n"], ids=["zero-bytes", "blank-lines"])
def test_empty_json_lines_yield_no_batches(tmp_path: Path, data: bytes) -> None:
    assert Delivery(tmp_path, "a.jsonl", data).batches(JSONL) == []


# JSON documents


def test_json_document_top_level_array_with_record_positions(tmp_path: Path) -> None:
    data = json.dumps([{"id": 1, "tags": ["a"]}, {"id": 2.5, "extra": True}]).encode()
    table = Delivery(tmp_path, "a.json.bz2", bz2.compress(data)).table(JSON)
    assert _rows(table) == [
        {"id": "1", "tags": '["a"]', "extra": None, "_record": 1},
        {"id": "2.5", "tags": None, "extra": "true", "_record": 2},
    ]


def test_json_document_records_at_a_record_path_in_batches(tmp_path: Path) -> None:
    data = json.dumps({"meta": {"n": 5}, "data": {"items": [{"id": i} for i in range(5)]}}).encode()
    fmt = FileFormat(format="json", record_path="data.items")
    batches = Delivery(tmp_path, "a.json", data).batches(fmt, batch_rows=2)
    assert [batch.num_rows for batch in batches] == [2, 2, 1]
    assert pa.Table.from_batches(batches).column("_record").to_pylist() == [1, 2, 3, 4, 5]


def test_truncated_json_document_fails_whatever_the_policy(tmp_path: Path) -> None:
    delivery = Delivery(tmp_path, "a.json", b'[{"id": 1}, {"id": 2}, {"id": ')
    with pytest.raises(
        MalformedFileError, match=r"a.json is not a complete, valid JSON document \(parse error"
    ):
        delivery.table(JSON, "skip")


def test_json_document_non_object_record_is_quarantined(tmp_path: Path) -> None:
    delivery = Delivery(tmp_path, "a.json", b'[{"id": 1}, 7, {"id": 3}]')
    table = delivery.table(JSON, "skip")
    assert _rows(table) == [{"id": "1", "_record": 1}, {"id": "3", "_record": 3}]
    assert delivery.quarantined == [
        MalformedRecord(file="a.json", line=None, error="record 2 is a JSON number, not an object", text="7")
    ]


def test_json_document_object_without_record_path_says_to_declare_it(tmp_path: Path) -> None:
    with pytest.raises(
        MalformedFileError,
        match="holds an object at the top level, not an array of records; declare `record_path`",
    ):
        Delivery(tmp_path, "a.json", b'{"data": [{"id": 1}]}').table(JSON)


def test_json_document_without_the_record_path_says_so(tmp_path: Path) -> None:
    fmt = FileFormat(format="json", record_path="data.items")
    with pytest.raises(
        MalformedFileError, match=r"has no array at `record_path` 'data\.items'; fix `record_path`"
    ):
        Delivery(tmp_path, "a.json", b'{"data": {"rows": []}}').table(fmt)


@pytest.mark.parametrize(
    "data",
    [b"", b"  \n", b"[]", b'{"data": {"items": []}}'],
    ids=["zero-bytes", "blank", "empty-array", "empty-at-path"],
)
def test_empty_json_document_yields_no_batches(tmp_path: Path, data: bytes) -> None:
    fmt = FileFormat(format="json", record_path="data.items" if data.startswith(b"{") else None)
    assert Delivery(tmp_path, "a.json", data).batches(fmt) == []


# Parquet and Avro


def test_parquet_lands_as_delivered_and_keeps_its_types_with_row_positions(tmp_path: Path) -> None:
    source = pa.table(
        {
            "id": pa.array(range(5), pa.int64()),
            "amount": pa.array([1.5] * 5),
            "day": [dt.date(2024, 1, 2)] * 5,
        }
    )
    delivered = _parquet(source, row_group_size=3)
    landed = Landed(tmp_path, "a.parquet", delivered, PARQUET)
    (copy,) = landed.files
    assert copy.read_bytes() == delivered
    table = landed.scan()
    assert table.schema.field("day").type == pa.date32()
    assert table.select(["id", "amount", "day"]).equals(source)
    assert table.column("_record").to_pylist() == [1, 2, 3, 4, 5]
    assert set(table.column("_file").to_pylist()) == {"a.parquet"}


def test_empty_parquet_lands_nothing(tmp_path: Path) -> None:
    data = _parquet(pa.table({"id": pa.array([], pa.int64())}))
    assert Landed(tmp_path, "a.parquet", data, PARQUET).files == []


def test_a_file_that_is_no_parquet_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MalformedFileError, match=r"a\.parquet is not a Parquet file"):
        Landed(tmp_path, "a.parquet", b"id,name\n1,ann\n", PARQUET)


AVRO_SCHEMA = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["paid", "shipped"]}},
        {"name": "coupon", "type": ["null", "string"]},
        {"name": "code", "type": ["null", "int", "string"]},
        {
            "name": "lines",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Line",
                    "fields": [
                        {"name": "sku", "type": "string"},
                        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
                    ],
                },
            },
        },
    ],
}


def test_avro_maps_its_types_to_arrow(tmp_path: Path) -> None:
    ref = uuid.UUID(int=7)
    placed = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    records = [
        {
            "id": i,
            "amount": decimal.Decimal("12.50"),
            "placed_at": placed,
            "ref": ref,
            "status": "paid",
            "coupon": None,
            "code": [5, "x", None][i % 3],
            "lines": [{"sku": "A", "ref": ref}],
        }
        for i in range(5)
    ]
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(AVRO_SCHEMA), records)
    table = Delivery(tmp_path, "a.avro", buffer.getvalue()).table(FileFormat(format="avro"), batch_rows=2)
    assert table.schema.remove(table.schema.get_field_index("_file")) == pa.schema(
        [
            ("id", pa.int64()),
            ("amount", pa.decimal128(10, 2)),
            ("placed_at", pa.timestamp("ms", tz="UTC")),
            ("ref", pa.string()),
            ("status", pa.string()),
            ("coupon", pa.string()),
            ("code", pa.string()),
            ("lines", pa.list_(pa.struct([("sku", pa.string()), ("ref", pa.string())]))),
            ("_record", pa.int64()),
        ]
    )
    first = _rows(table)[0]
    assert first == {
        "id": 0,
        "amount": decimal.Decimal("12.50"),
        "placed_at": placed,
        "ref": str(ref),
        "status": "paid",
        "coupon": None,
        "code": "5",
        "lines": [{"sku": "A", "ref": str(ref)}],
        "_record": 1,
    }
    assert table.column("code").to_pylist() == ["5", "x", None, "5", "x"]
    assert table.column("_record").to_pylist() == [1, 2, 3, 4, 5]


def test_empty_avro_yields_no_batches_and_a_non_avro_file_fails(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(AVRO_SCHEMA), [])
    assert Delivery(tmp_path, "a.avro", buffer.getvalue()).batches(FileFormat(format="avro")) == []
    with pytest.raises(MalformedFileError, match=r"b\.avro is not an Avro container file"):
        Delivery(tmp_path, "b.avro", b"id,name\n").batches(FileFormat(format="avro"))


def test_copies_parsed_in_several_scans_read_as_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of copies are parsed 1,000 per scan into one table (one scan of 30,000 ran out of
    memory): parsed 2 per scan, five copies give the same rows, record numbers and set-aside records as in
    one scan."""
    deliveries = tmp_path / "deliveries"
    deliveries.mkdir()
    for n in range(5):
        bad = "9,too,many,fields\n" if n == 3 else ""
        (deliveries / f"{n}.csv").write_text(f"order_id,amount\n{n}1,1.0\n{bad}{n}2,2.0\n")
    store = FileStore(root=str(deliveries))
    landing = LandingZone(root=str(tmp_path / "landing"))
    with landing.extraction("shop", "orders") as inflight:
        for file in store.list("*.csv"):
            land_file(
                store,
                file,
                FileFormat(format="csv"),
                on_malformed="skip",
                inflight=inflight,
                lineage=LINEAGE,
                batch_rows=DEFAULT_BATCH_ROWS,
                quarantine=lambda record: None,
            )
        files = [landed.path for landed in inflight.commit(LINEAGE.extracted_at.date().isoformat())]

    def scanned(per_scan: int) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        monkeypatch.setattr(delivered_module, "PARSE_FILES_PER_SCAN", per_scan)
        with duckdb.connect(":memory:") as con:
            parse_copies(con, files)
            relation = landed_relation(files, parsed=True)
            rows = con.sql(f"SELECT _file, _record, order_id FROM {relation} ORDER BY ALL").fetchall()
            rejected = [(record["file"], record["line"], record["text"]) for record in rejected_records(con)]
        return rows, rejected

    in_one = scanned(1000)
    assert len(in_one[0]) == 10 and [file for file, _, _ in in_one[1]] == ["3.csv"]
    assert scanned(2) == in_one
