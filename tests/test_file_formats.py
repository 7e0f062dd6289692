"""Every file format read into Arrow batches: text formats as text, typed formats with their types, lineage
on every row, malformed records failed or quarantined with their exact line, one schema per file."""

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

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from resources.files.config import FileFormat, MalformedPolicy
from resources.files.formats.reader import MalformedFileError, MalformedRecord, read_batches
from resources.files.store import FileStore

CSV = FileFormat(format="csv")
JSONL = FileFormat(format="jsonl")
JSON = FileFormat(format="json")


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
    """One delivered file under a temporary root, read the way landing reads it."""

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


# CSV


def test_csv_lands_every_column_as_text_with_file_and_line(tmp_path: Path) -> None:
    table = Delivery(tmp_path, "orders.csv", b'id,amount,note\n1,12.50,""\n2,,plain\n').table(CSV)
    assert table.schema == pa.schema(
        [
            ("id", pa.string()),
            ("amount", pa.string()),
            ("note", pa.string()),
            ("_file", pa.string()),
            ("_record", pa.int64()),
        ]
    )
    assert table.to_pylist() == [
        {"id": "1", "amount": "12.50", "note": "", "_file": "orders.csv", "_record": 2},
        {"id": "2", "amount": None, "note": "plain", "_file": "orders.csv", "_record": 3},
    ]


def test_csv_lines_count_values_spanning_lines_and_blank_lines(tmp_path: Path) -> None:
    data = b'id,note\n1,"two\nlines"\n\n2,"three\r\nlines\nhere"\n3,x\n'
    table = Delivery(tmp_path, "notes.csv", data).table(CSV)
    assert _rows(table) == [
        {"id": "1", "note": "two\nlines", "_record": 2},
        {"id": "2", "note": "three\r\nlines\nhere", "_record": 5},
        {"id": "3", "note": "x", "_record": 8},
    ]


def test_csv_delimiter_and_quote_char(tmp_path: Path) -> None:
    table = Delivery(tmp_path, "a.csv", b"id;name\n1;'Doe; Jane'\n").table(
        FileFormat(format="csv", delimiter=";", quote_char="'")
    )
    assert _rows(table) == [{"id": "1", "name": "Doe; Jane", "_record": 2}]


def test_csv_without_header_takes_the_declared_names_and_counts_from_line_one(tmp_path: Path) -> None:
    fmt = FileFormat(format="csv", header=False, column_names=["id", "name"])
    table = Delivery(tmp_path, "a.csv", b"1,ann\n2,bob\n").table(fmt)
    assert _rows(table) == [
        {"id": "1", "name": "ann", "_record": 1},
        {"id": "2", "name": "bob", "_record": 2},
    ]


def test_csv_header_renamed_by_declared_column_names(tmp_path: Path) -> None:
    fmt = FileFormat(format="csv", column_names=["order_id", "customer"])
    table = Delivery(tmp_path, "a.csv", b"ID,Kunde\n1,ann\n").table(fmt)
    assert _rows(table) == [{"order_id": "1", "customer": "ann", "_record": 2}]


def test_csv_without_header_needs_column_names(tmp_path: Path) -> None:
    with pytest.raises(MalformedFileError, match="no `column_names`"):
        Delivery(tmp_path, "a.csv", b"1,2\n").table(FileFormat(format="csv", header=False))


def test_csv_in_latin_1(tmp_path: Path) -> None:
    fmt = FileFormat(format="csv", encoding="latin-1")
    table = Delivery(tmp_path, "a.csv", "name\nJosé\nMüller\n".encode("latin-1")).table(fmt)
    assert table.column("name").to_pylist() == ["José", "Müller"]


def test_csv_not_in_the_declared_encoding_fails_the_file(tmp_path: Path) -> None:
    delivery = Delivery(tmp_path, "a.csv", "name\nJosé\n".encode("latin-1"))
    with pytest.raises(
        MalformedFileError, match=r"a.csv is not valid utf-8 text .*Declare the file's actual `encoding`"
    ):
        delivery.table(CSV, "skip")


def test_csv_row_with_wrong_field_count_fails_with_file_line_and_what_to_do(tmp_path: Path) -> None:
    delivery = Delivery(tmp_path, "a.csv", b'id,name\n1,"a\nb"\n2\n3,c\n')
    with pytest.raises(MalformedFileError) as failure:
        delivery.table(CSV)
    assert str(failure.value) == (
        f"{tmp_path}/a.csv: line 4: expected 2 fields, found 1. Fix the file and deliver it again, or set "
        f"`on_malformed: skip` on the entity to quarantine such records and land the rest."
    )


def test_csv_rows_with_wrong_field_count_are_quarantined_under_skip(tmp_path: Path) -> None:
    lines = [b"id,name"] + [b"%d,n%d" % (i, i) if i % 1000 else b"%d" % i for i in range(1, 5001)]
    lines[2500] = b'2500,"spans\nlines",extra'
    delivery = Delivery(tmp_path, "a.csv", b"\n".join(lines) + b"\n5001,x,y\n")
    table = delivery.table(CSV, "skip", batch_bytes=4096)

    assert [(record.line, record.error, record.text) for record in delivery.quarantined] == [
        (1001, "expected 2 fields, found 1", "1000"),
        (2001, "expected 2 fields, found 1", "2000"),
        (2501, "expected 2 fields, found 3", '2500,"spans\nlines",extra'),
        (3002, "expected 2 fields, found 1", "3000"),
        (4002, "expected 2 fields, found 1", "4000"),
        (5002, "expected 2 fields, found 1", "5000"),
        (5003, "expected 2 fields, found 3", "5001,x,y"),
    ]
    assert {record.file for record in delivery.quarantined} == {"a.csv"}
    assert table.num_rows == 5000 - 6
    records = dict(zip(table.column("id").to_pylist(), table.column("_record").to_pylist(), strict=True))
    assert (records["1"], records["2499"], records["2501"], records["4999"]) == (2, 2500, 2503, 5001)


def test_csv_quote_never_closed_fails_instead_of_swallowing_the_rest(tmp_path: Path) -> None:
    data = b'id,name\n1,x\n2,"abc\n3,y\n4,z\n'
    with pytest.raises(
        MalformedFileError, match="has a quote opened on line 3 or after that is never closed"
    ):
        Delivery(tmp_path, "a.csv", data).batches(CSV, "skip")


def test_csv_in_many_batches_shares_one_schema(tmp_path: Path) -> None:
    rows = b"".join(b"%d,v%d\n" % (i, i) for i in range(20_000))
    batches = Delivery(tmp_path, "a.csv", b"id,value\n" + rows).batches(CSV, batch_bytes=16 << 10)
    assert len(batches) > 5
    assert len({batch.schema for batch in batches}) == 1
    table = pa.Table.from_batches(batches)
    assert table.column("_record").to_pylist() == list(range(2, 20_002))


@pytest.mark.parametrize(
    "data", [b"", b"id,name\n", b"id,name", b"\n"], ids=["zero-bytes", "header", "header-no-newline", "blank"]
)
def test_empty_csv_yields_no_batches(tmp_path: Path, data: bytes) -> None:
    assert Delivery(tmp_path, "a.csv", data).batches(CSV) == []


def test_csv_starting_with_a_blank_line_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        MalformedFileError, match="starts with a blank line; the header must be the first line"
    ):
        Delivery(tmp_path, "a.csv", b"\nid,name\n1,ann\n").table(CSV, "skip")


def test_csv_header_with_duplicate_names_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MalformedFileError, match=r"repeats the column\(s\) \['id'\]"):
        Delivery(tmp_path, "a.csv", b"id,id\n1,2\n").table(CSV)


def test_a_column_named_like_lineage_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MalformedFileError, match="has a column named '_file'"):
        Delivery(tmp_path, "a.csv", b"id,_file\n1,2\n").table(CSV)


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_compressed_csv_and_json_lines(tmp_path: Path, suffix: str) -> None:
    csv = Delivery(tmp_path, f"a.csv{suffix}", COMPRESS[suffix](b"id\n1\n2\n")).table(CSV)
    lines = Delivery(tmp_path, f"a.jsonl{suffix}", COMPRESS[suffix](b'{"id": 1}\n{"id": 2}\n')).table(JSONL)
    assert _rows(csv) == [{"id": "1", "_record": 2}, {"id": "2", "_record": 3}]
    assert _rows(lines) == [{"id": "1", "_record": 1}, {"id": "2", "_record": 2}]


def test_damaged_compressed_file_fails_naming_it(tmp_path: Path) -> None:
    damaged = gzip.compress(b"id\n" + b"1\n" * 10_000)[:-20]
    with pytest.raises(
        MalformedFileError, match=r"a.csv.gz cannot be decompressed as gzip .* truncated or damaged"
    ):
        Delivery(tmp_path, "a.csv.gz", damaged).table(CSV)


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


def test_parquet_keeps_its_types_with_row_positions(tmp_path: Path) -> None:
    source = pa.table(
        {
            "id": pa.array(range(5), pa.int64()),
            "amount": pa.array([1.5] * 5),
            "day": [dt.date(2024, 1, 2)] * 5,
        }
    )
    buffer = io.BytesIO()
    pq.write_table(source, buffer, row_group_size=3)
    batches = Delivery(tmp_path, "a.parquet", buffer.getvalue()).batches(
        FileFormat(format="parquet"), batch_rows=2
    )
    table = pa.Table.from_batches(batches)
    assert table.schema.field("day").type == pa.date32()
    assert table.drop_columns(["_file", "_record"]).equals(source)
    assert table.column("_record").to_pylist() == [1, 2, 3, 4, 5]


def test_empty_parquet_yields_no_batches(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": pa.array([], pa.int64())}), buffer)
    assert Delivery(tmp_path, "a.parquet", buffer.getvalue()).batches(FileFormat(format="parquet")) == []


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
