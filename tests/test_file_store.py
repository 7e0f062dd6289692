"""The file store on local disk: globbing, fingerprints, content hashes and transparent decompression."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from resources.files.compression import ArchiveContentError
from resources.files.store import FileFingerprint, FileStore, FileStoreError

CONTENT = b"id,name\n1,ann\n2,bob\n" * 100


def _zip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("orders.csv", data)
    return buffer.getvalue()


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "zip": _zip,
    "zst": zstandard.ZstdCompressor().compress,
}


def _write(root: Path, path: str, data: bytes = b"x") -> Path:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def _only(store: FileStore, pattern: str) -> FileFingerprint:
    [file] = store.list(pattern)
    return file


def test_glob_matches_files_relative_to_the_root_sorted_by_path(tmp_path: Path) -> None:
    for path in ["orders/b.csv", "orders/a.csv", "orders/2024/01/c.csv", "orders/notes.txt", "other/d.csv"]:
        _write(tmp_path, path)
    (tmp_path / "orders" / "folder.csv").mkdir()
    store = FileStore(root=str(tmp_path))

    assert [file.path for file in store.list("orders/*.csv")] == ["orders/a.csv", "orders/b.csv"]
    assert [file.path for file in store.list("orders/**/*.csv")] == [
        "orders/2024/01/c.csv",
        "orders/a.csv",
        "orders/b.csv",
    ]
    assert store.list("orders/*.parquet") == []


def test_a_pattern_may_not_leave_the_root(tmp_path: Path) -> None:
    with pytest.raises(FileStoreError, match="must be relative to the root"):
        FileStore(root=str(tmp_path)).list("../*.csv")


def test_a_missing_root_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileStoreError, match=f"root {missing} is not a directory"):
        FileStore(root=str(missing)).list("*.csv")


def test_a_relative_root_is_refused() -> None:
    with pytest.raises(FileStoreError, match="must be an absolute directory or gs://bucket"):
        FileStore(root="relative/dir").list("*.csv")


def test_fingerprint_carries_size_and_mtime_and_changes_with_either(tmp_path: Path) -> None:
    target = _write(tmp_path, "a.csv", b"id\n1\n")
    os.utime(target, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_001))
    store = FileStore(root=str(tmp_path))
    first = _only(store, "a.csv")
    assert (first.path, first.size, first.version, first.checksum) == (
        "a.csv",
        5,
        "1700000000000000001",
        None,
    )
    assert first.ledger_key() == "a.csv|5|1700000000000000001"

    os.utime(target, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_002))
    touched = _only(store, "a.csv")
    target.write_bytes(b"id\n1\n2\n")
    os.utime(target, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_002))
    grown = _only(store, "a.csv")

    assert len({first.ledger_key(), touched.ledger_key(), grown.ledger_key()}) == 3
    assert grown.size == 7


def test_content_hash_is_the_sha256_of_the_raw_bytes_and_ignores_the_version(tmp_path: Path) -> None:
    target = _write(tmp_path, "a.csv.gz", gzip.compress(CONTENT))
    store = FileStore(root=str(tmp_path))
    before = _only(store, "a.csv.gz")
    hashed = store.content_hash(before)
    assert hashed == "sha256:" + hashlib.sha256(target.read_bytes()).hexdigest()

    target.write_bytes(target.read_bytes())
    os.utime(target, ns=(1, 1))
    redelivered = _only(store, "a.csv.gz")
    assert redelivered.ledger_key() != before.ledger_key()
    assert store.content_hash(redelivered) == hashed

    target.write_bytes(gzip.compress(CONTENT + b"3,cy\n"))
    assert store.content_hash(_only(store, "a.csv.gz")) != hashed


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_files_are_read_transparently_by_suffix(tmp_path: Path, suffix: str) -> None:
    _write(tmp_path, f"orders.csv.{suffix}", COMPRESSORS[suffix](CONTENT))
    store = FileStore(root=str(tmp_path))
    with store.open_bytes(_only(store, "orders.csv.*")) as stream:
        assert stream.read() == CONTENT


def test_declared_compression_wins_over_the_suffix(tmp_path: Path) -> None:
    _write(tmp_path, "orders.dat", zstandard.ZstdCompressor().compress(CONTENT))
    _write(tmp_path, "plain.gz", CONTENT)
    store = FileStore(root=str(tmp_path))
    with store.open_bytes(_only(store, "orders.dat"), "zstd") as stream:
        assert stream.read() == CONTENT
    with store.open_bytes(_only(store, "plain.gz"), "none") as stream:
        assert stream.read() == CONTENT


def test_a_zip_with_two_members_is_refused_with_their_names(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.csv", CONTENT)
        archive.writestr("b.csv", CONTENT)
    _write(tmp_path, "orders.zip", buffer.getvalue())
    store = FileStore(root=str(tmp_path))
    with (
        pytest.raises(
            ArchiveContentError, match=r"orders.zip is a zip archive holding 2 files \(a.csv, b.csv\)"
        ),
        store.open_bytes(_only(store, "orders.zip")),
    ):
        pass


def test_describe_gives_the_absolute_path(tmp_path: Path) -> None:
    _write(tmp_path, "sub/a.csv")
    store = FileStore(root=str(tmp_path))
    assert store.describe(_only(store, "sub/*.csv")) == f"{tmp_path}/sub/a.csv"
