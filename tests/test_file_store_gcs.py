"""The file store on `gs://`: through the GCS emulator, with the real gcsfs and google-cloud-storage."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gcsfs.core import GCSFileSystem
from google.cloud import storage

from resources.files.config import FileFormat
from resources.files.formats.reader import MalformedRecord, read_batches
from resources.files.store import FileStore, FileStoreError

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


def test_reads_gzipped_csv_and_parquet_from_the_bucket(gcs_client: storage.Client, gcs_bucket: str) -> None:
    _upload(gcs_client, gcs_bucket, "in/orders.csv.gz", gzip.compress(b"id,amount\n1,12.50\n2,\n"))
    parquet = io.BytesIO()
    pq.write_table(pa.table({"id": [1, 2], "day": ["a", "b"]}), parquet)
    _upload(gcs_client, gcs_bucket, "in/items.parquet", parquet.getvalue())
    store = FileStore(root=f"gs://{gcs_bucket}/in")
    quarantined: list[MalformedRecord] = []

    def read(pattern: str, fmt: FileFormat) -> list[dict[str, object]]:
        [file] = store.list(pattern)
        batches = read_batches(store, file, fmt, on_malformed="fail", quarantine=quarantined.append)
        return pa.Table.from_batches(list(batches)).to_pylist()

    assert read("*.csv.gz", FileFormat(format="csv")) == [
        {"id": "1", "amount": "12.50", "_file": "orders.csv.gz", "_record": 2},
        {"id": "2", "amount": None, "_file": "orders.csv.gz", "_record": 3},
    ]
    assert read("*.parquet", FileFormat(format="parquet")) == [
        {"id": 1, "day": "a", "_file": "items.parquet", "_record": 1},
        {"id": 2, "day": "b", "_file": "items.parquet", "_record": 2},
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
