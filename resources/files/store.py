"""Delivered files on local disk or in a GCS bucket, behind one filesystem layer (fsspec / gcsfs).

Asset code names files by their path relative to the store's root and never learns where the root is:
moving from a laptop directory to `gs://bucket/prefix` is a change of `root`. Each listed file carries a
fingerprint (size and version: GCS generation, or local mtime in ns) so that the processed-file ledger can
tell a new or re-delivered file from one already landed without reading it.

Credentials for GCS are gcsfs's defaults: application default credentials. When `STORAGE_EMULATOR_HOST`
is set (tests, local emulators), gcsfs sends every request there and the store uses anonymous credentials,
as google-cloud-storage does.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import dagster as dg
import fsspec
from fsspec.implementations.local import LocalFileSystem
from gcsfs.core import GCSFileSystem
from gcsfs.retry import HttpError

from resources.files.compression import codec_for, decompressed
from resources.files.config import Compression

GCS_SCHEME = "gs://"
HASH_CHUNK_BYTES = 1 << 20
_STORAGE_ERRORS = (OSError, HttpError)
_LISTED_CHECKSUMS = (("md5", "md5Hash"), ("crc32c", "crc32c"))
_MAGIC = re.compile(r"[*?[]")


class FileStoreError(ValueError):
    """The store's root cannot be reached or read: names the root and what to check."""


@dataclass(frozen=True)
class FileFingerprint:
    """One file as listed: enough to decide whether it was processed before, without reading it."""

    path: str
    """Posix path relative to the store's root."""
    size: int
    version: str
    """GCS object generation, or the local modification time in nanoseconds."""
    checksum: str | None = None
    """`md5:<base64>` or `crc32c:<base64>` when the listing carries one (GCS), else None."""

    def ledger_key(self) -> str:
        """Stable key of this delivery of this file: a rewrite changes the version, so it is a new key."""
        return f"{self.path}|{self.size}|{self.version}"


class FileStore(dg.ConfigurableResource):
    """Files under one root: an absolute local directory, or `gs://bucket[/prefix]`."""

    root: str

    def list(self, pattern: str) -> list[FileFingerprint]:
        """Files matching a glob relative to the root (`*` within a directory, `**` across directories),
        sorted by path so that landing order is deterministic. No match is an empty list: the caller
        decides whether that is an error."""
        if pattern.startswith("/") or ".." in pattern.split("/"):
            raise FileStoreError(
                f"File pattern {pattern!r} must be relative to the root {self.root} and stay under it."
            )
        if not self._is_gcs:
            return self._list_local(pattern)
        try:
            found: dict[str, dict[str, Any]] = self._filesystem().glob(self._location(pattern), detail=True)
        except _STORAGE_ERRORS as exc:
            raise FileStoreError(self._unreachable("cannot list", exc)) from exc
        files = [self._fingerprint(name, info) for name, info in found.items() if info.get("type") == "file"]
        return sorted(files, key=lambda file: file.path)

    def _list_local(self, pattern: str) -> list[FileFingerprint]:
        """Local files matching `pattern`, each stat'ed once (`*` matches dotfiles too, as fsspec's glob
        does). fsspec's glob stat'ed each match twice over: 0.43 s per 10,000 files, on every run of an
        entity whose drop folder keeps its files."""
        base = self._base()
        if not os.path.isdir(base):
            raise FileStoreError(
                f"The file store root {self.root} is not a directory. Check the sources location configured "
                f"for this environment (locally: PLATFORM_DATA_DIR)."
            )
        files = [
            FileFingerprint(name, info.st_size, str(info.st_mtime_ns))
            for name, info in _local_matches(base, pattern)
            if stat.S_ISREG(info.st_mode)
        ]
        return sorted(files, key=lambda file: file.path)

    def exists(self, path: str) -> bool:
        """Whether a file is at `path` (relative to the root): a ready marker, which the entity's glob
        need not match."""
        try:
            return bool(self._filesystem().isfile(self._location(path)))
        except _STORAGE_ERRORS as exc:
            raise FileStoreError(self._unreachable(f"cannot look for {path} under", exc)) from exc

    def last_byte(self, file: FileFingerprint) -> bytes:
        """The file's last byte as listed (empty for an empty file): whether a text delivery ends its last
        line, read without reading the file."""
        if file.size == 0:
            return b""
        with self.open_raw(file) as raw:
            raw.seek(file.size - 1)
            return raw.read(1)

    def content_hash(self, file: FileFingerprint) -> str:
        """`sha256:<hex>` of the raw (still compressed) bytes, read in 1 MiB chunks: tells a re-delivered
        identical file (new version, same content) from a changed one."""
        digest = hashlib.sha256()
        with self.open_raw(file) as raw:
            while chunk := raw.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
        return f"sha256:{digest.hexdigest()}"

    @contextmanager
    def open_bytes(self, file: FileFingerprint, compression: Compression = "infer") -> Iterator[BinaryIO]:
        """The file's content as a binary stream, decompressed by the declared codec or its suffix
        (.gz, .bz2, .zip with exactly one member, .zst / .zstd)."""
        with (
            self.open_raw(file) as raw,
            decompressed(raw, codec_for(file.path, compression), self.describe(file)) as stream,
        ):
            yield stream

    def describe(self, file: FileFingerprint) -> str:
        """Where the file is, for messages: `gs://bucket/prefix/x.csv` or an absolute local path."""
        location = self._location(file.path)
        return GCS_SCHEME + location if self._is_gcs else location

    @property
    def _is_gcs(self) -> bool:
        return self.root.startswith(GCS_SCHEME)

    def _base(self) -> str:
        """The root as the filesystem spells paths: `bucket/prefix` for GCS, an absolute path locally."""
        if self._is_gcs:
            base = self.root.removeprefix(GCS_SCHEME).strip("/")
            if not base:
                raise FileStoreError(
                    f"File store root {self.root!r} names no bucket; use gs://bucket[/prefix]."
                )
            return base
        if not os.path.isabs(self.root):
            raise FileStoreError(
                f"File store root {self.root!r} must be an absolute directory or gs://bucket[/prefix]."
            )
        return os.path.normpath(self.root).rstrip("/") or "/"

    def _location(self, path: str) -> str:
        return posixpath.join(self._base(), path)

    def _filesystem(self) -> fsspec.AbstractFileSystem:
        if not self._is_gcs:
            return LocalFileSystem()
        # The plain GCS filesystem: gcsfs's default class probes every bucket's layout over gRPC first,
        # which an emulator cannot answer (a minute of retries per call). Listings are not cached: the
        # ledger must see overwrites made by other clients.
        token = "anon" if os.environ.get("STORAGE_EMULATOR_HOST") else None
        return GCSFileSystem(token=token, use_listings_cache=False)

    def _fingerprint(self, name: str, info: dict[str, Any]) -> FileFingerprint:
        """A GCS object as listed (local files: `_list_local`)."""
        path = posixpath.relpath(name, self._base())
        # Composite objects have no MD5, only a CRC32C.
        checksum = next((f"{kind}:{info[key]}" for kind, key in _LISTED_CHECKSUMS if info.get(key)), None)
        return FileFingerprint(path, int(info["size"]), str(info["generation"]), checksum)

    @contextmanager
    def open_raw(self, file: FileFingerprint) -> Iterator[BinaryIO]:
        """The file's bytes as delivered (still compressed): what a copy of it lands."""
        try:
            raw = self._filesystem().open(self._location(file.path), "rb")
        except _STORAGE_ERRORS as exc:
            raise FileStoreError(self._unreachable(f"cannot open {file.path} under", exc)) from exc
        with raw:
            yield cast(BinaryIO, raw)

    def _unreachable(self, action: str, exc: Exception) -> str:
        if self._is_gcs:
            check = (
                "Check that the bucket exists and that the credentials in use may list and read it "
                "(application default credentials: GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth "
                "application-default login`, or the machine's service account; role "
                "roles/storage.objectViewer)."
            )
        else:
            check = "Check that the directory exists and that this process may read it."
        return f"The file store {action} {self.root}: {type(exc).__name__}: {exc}. {check}"


def _local_matches(base: str, pattern: str) -> Iterator[tuple[str, os.stat_result]]:
    """(posix path relative to `base`, stat) of what `pattern` matches under `base`. The usual pattern, one
    folder and a name pattern (`orders/*.csv`), is one `scandir` of the folder with the stat it gives each
    entry; others (`**`, wildcard folders) go through Python's glob. A file removed while listed is left
    out."""
    folder, _, leaf = pattern.rpartition("/")
    if _MAGIC.search(folder) is None and "**" not in leaf:
        matches = re.compile(fnmatch.translate(leaf)).match
        try:
            entries = os.scandir(os.path.join(base, folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        with entries:
            for entry in entries:
                if matches(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        yield posixpath.join(folder, entry.name), entry.stat()
        return
    for name in glob.iglob(pattern, root_dir=base, recursive=True, include_hidden=True):
        with contextlib.suppress(FileNotFoundError):
            yield name.replace(os.sep, "/"), os.stat(os.path.join(base, name))
