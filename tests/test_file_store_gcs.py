"""The file store on `gs://`: through the GCS emulator, with the real gcsfs and google-cloud-storage."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gcsfs.core import GCSFileSystem
from google.cloud import storage

from platform_assets.ingestion.files import land_file
from resources.files.config import FileFormat
from resources.files.formats.reader import DEFAULT_BATCH_ROWS, MalformedRecord, read_batches
from resources.files.store import FileStore, FileStoreError
from resources.landing.delivered import read_landed
from resources.landing.zone import LandingZone, Lineage

LISTING_PAGE = 1000
"""Objects per page of a GCS listing (gcsfs asks for at most this many)."""


def _upload(client: storage.Client, bucket: str, name: str, data: bytes) -> storage.Blob:
    blob = client.bucket(bucket).blob(name)
    blob.upload_from_string(data)
    return blob


def test_glob_under_a_prefix_lists_objects_relative_to_it(
    gcs_client: storage.Client, gcs_bucket: str
) -> None:
    for name in [
        "landing/orders/b.csv",
        "landing/orders/a.csv",
        "landing/orders/2024/c.csv",
        "landing/x.txt",
        "elsewhere/d.csv",
    ]:
        _upload(gcs_client, gcs_bucket, name, b"id\n1\n")
    store = FileStore(root=f"gs://{gcs_bucket}/landing")

    assert [file.path for file in store.list("orders/*.csv")] == ["orders/a.csv", "orders/b.csv"]
    assert [file.path for file in store.list("**/*.csv")] == [
        "orders/2024/c.csv",
        "orders/a.csv",
        "orders/b.csv",
    ]
    assert store.list("orders/*.json") == []
    assert store.describe(store.list("orders/a.csv")[0]) == f"gs://{gcs_bucket}/landing/orders/a.csv"


def test_fingerprint_carries_generation_and_md5_and_an_overwrite_changes_it(
    gcs_client: storage.Client, gcs_bucket: str
) -> None:
    data = b"id\n1\n"
    blob = _upload(gcs_client, gcs_bucket, "a.csv", data)
    store = FileStore(root=f"gs://{gcs_bucket}")
    [first] = store.list("*.csv")
    assert (first.path, first.size, first.version) == ("a.csv", len(data), str(blob.generation))
    assert first.checksum == "md5:" + base64.b64encode(hashlib.md5(data).digest()).decode()

    rewritten = _upload(gcs_client, gcs_bucket, "a.csv", data)
    [second] = store.list("*.csv")
    assert second.version == str(rewritten.generation) != first.version
    assert second.ledger_key() != first.ledger_key()
    assert (
        store.content_hash(second)
        == store.content_hash(first)
        == "sha256:" + hashlib.sha256(data).hexdigest()
    )


def test_lands_gzipped_csv_and_parquet_from_the_bucket_as_delivered(
    gcs_client: storage.Client, gcs_bucket: str, tmp_path: Path
) -> None:
    """CSV and Parquet objects land as their bytes (`land_file`: the gzip kept, its content checked to the
    end), read back as staging reads them."""
    csv = gzip.compress(b"id,amount\n1,12.50\n2,\n")
    _upload(gcs_client, gcs_bucket, "in/orders.csv.gz", csv)
    parquet = io.BytesIO()
    pq.write_table(pa.table({"id": [1, 2], "day": ["a", "b"]}), parquet)
    _upload(gcs_client, gcs_bucket, "in/items.parquet", parquet.getvalue())
    store = FileStore(root=f"gs://{gcs_bucket}/in")
    lineage = Lineage("shop.orders", datetime.now(UTC), "run-1")
    landing = LandingZone(root=str(tmp_path / "landing"))

    def land(pattern: str, fmt: FileFormat) -> list[dict[str, object]]:
        [file] = store.list(pattern)
        with landing.extraction("shop", fmt.format) as inflight:
            copied_hash = land_file(
                store,
                file,
                fmt,
                on_malformed="fail",
                inflight=inflight,
                lineage=lineage,
                batch_rows=DEFAULT_BATCH_ROWS,
                quarantine=quarantined.append,
            )
            (landed,) = inflight.commit(lineage.extracted_at.date().isoformat())
        assert copied_hash == store.content_hash(file), "the bytes copied are the object's"
        rows = read_landed([landed.path]).to_pylist()
        return [
            {name: row[name] for name in row if name not in ("_source", "_extracted_at", "_run_id")}
            for row in rows
        ]

    quarantined: list[MalformedRecord] = []
    assert land("*.csv.gz", FileFormat(format="csv")) == [
        {"id": "1", "amount": "12.50", "_record": 2, "_file": "orders.csv.gz"},
        {"id": "2", "amount": None, "_record": 3, "_file": "orders.csv.gz"},
    ]
    assert land("*.parquet", FileFormat(format="parquet")) == [
        {"id": 1, "day": "a", "_record": 1, "_file": "items.parquet"},
        {"id": 2, "day": "b", "_record": 2, "_file": "items.parquet"},
    ]
    assert quarantined == []


def test_reads_gzipped_json_lines_from_the_bucket(gcs_client: storage.Client, gcs_bucket: str) -> None:
    _upload(
        gcs_client, gcs_bucket, "in/orders.jsonl.gz", gzip.compress(b'{"id": 1, "amount": 12.5}\n{"id": 2}\n')
    )
    store = FileStore(root=f"gs://{gcs_bucket}/in")
    [file] = store.list("*.jsonl.gz")
    quarantined: list[MalformedRecord] = []
    batches = read_batches(
        store, file, FileFormat(format="jsonl"), on_malformed="fail", quarantine=quarantined.append
    )
    assert pa.Table.from_batches(list(batches)).to_pylist() == [
        {"id": "1", "amount": "12.5", "_file": "orders.jsonl.gz", "_record": 1},
        {"id": "2", "amount": None, "_file": "orders.jsonl.gz", "_record": 2},
    ]
    assert quarantined == []


def test_a_listing_longer_than_one_page_is_complete(gcs_client: storage.Client, gcs_bucket: str) -> None:
    names = [f"many/{i:05d}.csv" for i in range(LISTING_PAGE + 5)]
    GCSFileSystem(token="anon").pipe({f"{gcs_bucket}/{name}": b"x" for name in names})  # concurrent uploads
    assert [file.path for file in FileStore(root=f"gs://{gcs_bucket}").list("many/*.csv")] == names


def test_a_missing_bucket_names_the_root_and_what_to_check(gcs_emulator: str) -> None:
    with pytest.raises(
        FileStoreError, match=r"cannot list gs://no-such-bucket-here/x: .*Check that the bucket exists"
    ):
        FileStore(root="gs://no-such-bucket-here/x").list("*.csv")


def test_a_ready_marker_and_a_missing_final_newline_are_seen_in_the_bucket(
    gcs_client: storage.Client, gcs_bucket: str
) -> None:
    """What readiness and the torn-line warning ask the store, on GCS: whether a marker object exists (its
    name need not match the entity's glob), and an object's last byte."""
    _upload(gcs_client, gcs_bucket, "drop/day1/a.csv", b"id\n1\n2")
    store = FileStore(root=f"gs://{gcs_bucket}/drop")
    [file] = store.list("day1/*.csv")
    assert not store.exists("day1/_SUCCESS")
    assert store.last_byte(file) == b"2"

    _upload(gcs_client, gcs_bucket, "drop/day1/_SUCCESS", b"")
    assert store.exists("day1/_SUCCESS")
