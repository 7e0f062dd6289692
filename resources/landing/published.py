"""The landing zone kept on GCS (`gs://bucket/prefix`): the bucket is the durable truth, each process's
landing directory a working cache of it, in which the path-based landing and staging code runs unchanged
(DuckDB reads local files).

What is published is what an entity's state says: its processed-file ledger and landed index (the SQLite
files of `<cache>/_state/<source>/<entity>/`) and the names of its current key scans (`deletes:
reconcile`), packed into one object, `_state/<source>/<entity>/state.zip`.
One object write is atomic, so a reader sees the state before an extraction or after it, never between.
An extraction (holding the entity's lease, `lease.py`):

1. pulls: downloads the state object (remembering its generation) and makes the cache agree with it:
   committed files and key scans the state does not name are removed (an attempt killed before it
   published), those it names that the cache lacks are downloaded;
2. lands in the cache as on local disk, committing into `load_date=` directories and the local index;
3. publishes: uploads each file the index gained (a copy's lineage sidecar before the copy; one object
   each, through gcsfs, the filesystem layer of the file sources), its key scan, its quarantine files,
   and last the state object, only if its generation is still the one pulled (`ifGenerationMatch`).

Checkpoints are kept in the bucket too (`PublishedInFlight`): each checkpoint uploads the in-flight parts
it covers, then one object naming them, so that an extraction that failed on one machine resumes on any
other; a successful publish, or an extraction that discards its in-flight area, clears them.

A process killed before step 3 ends leaves uploaded objects that no published state names: readers never
look at them, and the next attempt lands those files again under the same names (overwriting them) or
under new ones. Nothing is landed twice, nothing half. The generation precondition keeps two publishers
from overwriting each other's state even when a lease expired under a slow holder.

gcsfs exposes no precondition but "does not exist", so the state and the lease go through
google-cloud-storage, which takes any generation.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import posixpath
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from gcsfs.core import GCSFileSystem
from gcsfs.retry import HttpError
from google.api_core.exceptions import GoogleAPIError, PreconditionFailed
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import GoogleAuthError
from google.cloud import storage

from resources.landing.delivered import SIDECAR_SUFFIX, atomic_write_bytes, sidecar_of
from resources.landing.landed_index import LOAD_DATE_PREFIX, LandedIndex
from resources.landing.lease import leased
from resources.landing.sharing import GCS_SCHEME, is_gcs_uri

STATE_OBJECT = "state.zip"
LEASES_DIR = "_leases"
PULLED_FILE = ".generation"
"""In a cached state directory: the generation of the published state the cache agrees with; absent while
an extraction may be changing the cache (and after one that did not publish)."""
RESUME_OBJECT = "resume.json"
"""In the bucket's copy of an in-flight area: the latest checkpoint and the parts it covers."""
KEY_SCANS_MEMBER = "key_scans.json"
"""The member of the state object naming the entity's current key scans (files of `EntityPaths.keys`)."""


_UNREACHABLE = (GoogleAPIError, GoogleAuthError, HttpError, requests.ConnectionError)
"""What the GCS clients raise when the bucket cannot be reached, found or written (the lease, taken first,
goes through google-cloud-storage and `requests`)."""


class LandingStoreError(RuntimeError):
    """The bucket of the landing cannot be reached, found or written: names it and what to check."""


class LandingConflictError(RuntimeError):
    """The entity's published state changed while this extraction ran: its files stay unpublished."""


@dataclass(frozen=True)
class EntityPaths:
    """Where one entity's landing lives in the cache (the bucket mirrors it under the prefix)."""

    landed: Path
    """The entity's directory: `load_date=<day>/` directories of committed files."""
    state: Path
    quarantine: Path
    keys: Path
    """Scans of the entity's primary keys (`deletes: reconcile`)."""
    inflight: Path


@dataclass(frozen=True)
class Pulled:
    """The published state an extraction started from."""

    generation: int
    """Of the state object; 0 when nothing was published yet."""
    files: frozenset[Path]
    """The live landed files it names."""
    key_scans: frozenset[Path] = frozenset()


@functools.cache
def published_landing(uri: str, cache_root: Path) -> PublishedLanding:
    """One per landing and process, so that its clients (and their connection pools) are reused."""
    return PublishedLanding(uri, cache_root)


class PublishedLanding:
    def __init__(self, uri: str, cache_root: Path) -> None:
        if not is_gcs_uri(uri):
            raise ValueError(f"Landing URI {uri!r} is not gs://bucket[/prefix].")
        bucket, _, prefix = uri.removeprefix(GCS_SCHEME).partition("/")
        self.uri = uri.rstrip("/")
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.cache_root = cache_root

    @functools.cached_property
    def _bucket(self) -> storage.Bucket:
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            client = storage.Client(project="emulator", credentials=AnonymousCredentials())
        else:
            client = storage.Client()
        return client.bucket(self.bucket_name)

    @functools.cached_property
    def _files(self) -> GCSFileSystem:
        # As the file store does (`resources/files/store.py`): anonymous on an emulator, no listing cache.
        token = "anon" if os.environ.get("STORAGE_EMULATOR_HOST") else None
        return GCSFileSystem(token=token, use_listings_cache=False)

    def _key(self, local: Path) -> str:
        """The object name of a cache path."""
        return posixpath.join(self.prefix, local.relative_to(self.cache_root).as_posix())

    def _remote(self, local: Path) -> str:
        return f"{self.bucket_name}/{self._key(local)}"

    @contextlib.contextmanager
    def reaching(self, action: str) -> Iterator[None]:
        """Storage errors of the block as a LandingStoreError saying what failed where, and what to check."""
        try:
            yield
        except _UNREACHABLE as error:
            raise LandingStoreError(
                f"The landing zone {self.uri} could not {action}: {type(error).__name__}: {error}. Check "
                f"that the bucket exists and that this machine's credentials may read and write objects in "
                f"it (application default credentials: GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth "
                f"application-default login`, or the machine's service account; role "
                f"roles/storage.objectAdmin), or set PLATFORM_LANDING_URI to another location."
            ) from error

    @contextlib.contextmanager
    def lease(self, source: str, entity: str, seconds: int) -> Iterator[None]:
        name = self._key(self.cache_root / LEASES_DIR / source / entity)
        with contextlib.ExitStack() as held:
            with self.reaching(f"take the lease on {source}.{entity}"):
                held.enter_context(leased(self._bucket, name, f"{source}.{entity}", seconds))
            yield

    def pull(self, paths: EntityPaths, index: Callable[[], LandedIndex], *, writing: bool = False) -> Pulled:
        """Replace the cached state with the published one and make the cached files agree with it; only
        the state object's metadata is read when the cache already agrees with its generation. `writing`:
        the caller (an extraction) changes the cache next, which then no longer agrees with it."""
        blob = self._bucket.get_blob(self._key(paths.state / STATE_OBJECT))
        marker = paths.state / PULLED_FILE
        if blob is not None and marker.exists() and marker.read_text() == str(blob.generation):
            pulled = self._cached(paths, int(blob.generation), index)
        else:
            pulled = self._download_state(paths, blob, index)
            if pulled.generation:
                atomic_write_bytes(marker, str(pulled.generation).encode())
        if writing:
            marker.unlink(missing_ok=True)
        return pulled

    def _cached(self, paths: EntityPaths, generation: int, index: Callable[[], LandedIndex]) -> Pulled:
        scans = frozenset(paths.keys.iterdir()) if paths.keys.is_dir() else frozenset()
        return Pulled(generation, frozenset(index().live()), scans)

    def _download_state(
        self, paths: EntityPaths, blob: storage.Blob | None, index: Callable[[], LandedIndex]
    ) -> Pulled:
        if paths.state.is_dir():
            for stale in paths.state.iterdir():
                stale.unlink()
        if blob is None:
            for day in list(_load_dates(paths.landed)):
                shutil.rmtree(day)
            shutil.rmtree(paths.keys, ignore_errors=True)
            return Pulled(0, frozenset())
        generation = int(blob.generation)
        try:
            packed = blob.download_as_bytes(if_generation_match=generation)
        except PreconditionFailed:  # published meanwhile: take the newer state
            return self._download_state(paths, self._bucket.get_blob(blob.name), index)
        paths.state.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(packed)) as archive:
            for member in archive.namelist():
                if member != KEY_SCANS_MEMBER:
                    atomic_write_bytes(paths.state / member, archive.read(member))
            scans = frozenset(paths.keys / name for name in json.loads(archive.read(KEY_SCANS_MEMBER)))
        live = frozenset(index().live())
        self._agree([path for day in _load_dates(paths.landed) for path in day.iterdir()], live)
        self._agree(list(paths.keys.iterdir()) if paths.keys.is_dir() else [], scans)
        return Pulled(generation, live, scans)

    def _agree(self, cached: list[Path], wanted: frozenset[Path]) -> None:
        """Remove the `cached` files (and sidecars) not `wanted`; download the `wanted` the cache lacks."""
        for path in cached:
            if path.with_name(path.name.removesuffix(SIDECAR_SUFFIX)) not in wanted:
                path.unlink()
        for path in sorted(wanted):
            if not path.exists():
                self._download(path)

    def _download(self, path: Path) -> None:
        """A landed file, its sidecar (when it has one) first, each through a temporary name."""
        path.parent.mkdir(parents=True, exist_ok=True)
        for local in (sidecar_of(path), path):
            temporary = local.with_name(f".{local.name}.tmp")
            try:
                self._files.get_file(self._remote(local), str(temporary))
            except FileNotFoundError:
                if local == path:
                    raise FileNotFoundError(
                        f"{self.uri}: the published state names {self._key(path)}, which is not in the "
                        f"bucket. Was it deleted by hand? Re-materialize the raw asset to land it again."
                    ) from None
                continue
            os.replace(temporary, local)

    def publish(self, pulled: Pulled, paths: EntityPaths, live: Iterable[Path]) -> None:
        """Upload what the extraction landed, then its state (see the module's docstring)."""
        for path in sorted(set(live) - pulled.files):
            if sidecar_of(path).exists():
                self._files.put_file(str(sidecar_of(path)), self._remote(sidecar_of(path)))
            self._files.put_file(str(path), self._remote(path))
        scans = sorted(paths.keys.glob("*.parquet")) if paths.keys.is_dir() else []
        for path in sorted(set(scans) - pulled.key_scans):
            self._files.put_file(str(path), self._remote(path))
        self.keep_quarantine(paths.quarantine)
        state = self._bucket.blob(self._key(paths.state / STATE_OBJECT))
        try:
            state.upload_from_string(
                _packed(paths.state, [path.name for path in scans]),
                content_type="application/zip",
                if_generation_match=pulled.generation,
            )
            atomic_write_bytes(paths.state / PULLED_FILE, str(state.generation).encode())
        except PreconditionFailed:
            raise LandingConflictError(
                f"The landing state {self.uri}/{state.name.removeprefix(self.prefix).lstrip('/')} changed "
                f"while this extraction ran (another process published, after this one's lease expired): "
                f"this extraction's files are not published. Materialize the raw asset again."
            ) from None

    def keep_quarantine(self, directory: Path) -> None:
        """Upload the quarantine files (records set aside, one file per run) the bucket lacks."""
        if not directory.is_dir():
            return
        remote = self._listed(directory)
        for path in sorted(directory.glob("*.parquet")):
            if self._remote(path) not in remote:
                self._files.put_file(str(path), self._remote(path))

    def _listed(self, directory: Path) -> set[str]:
        """`bucket/name` of the objects under a cache directory's counterpart."""
        try:
            return set(self._files.ls(self._remote(directory), detail=False))
        except FileNotFoundError:
            return set()

    def inflight(self, paths: EntityPaths) -> PublishedInFlight:
        return PublishedInFlight(self, paths)


class PublishedInFlight:
    """The bucket's copy of an entity's in-flight area: its latest checkpoint and the parts it covers."""

    def __init__(self, landing: PublishedLanding, paths: EntityPaths) -> None:
        self.landing = landing
        self.directory = paths.inflight
        self.resume = paths.inflight / RESUME_OBJECT

    def pull(self, checkpoint_file: Path, landed: set[str]) -> None:
        """Make the cached in-flight area the bucket's: its checkpoint, and the parts it covers that are not
        landed (a run killed after publishing, before clearing, landed them)."""
        try:
            resume = json.loads(self.landing._files.cat_file(self.landing._remote(self.resume)))
        except FileNotFoundError:
            resume = None
        parts = (
            frozenset()
            if resume is None
            else frozenset(self.directory / name for name in resume["parts"] if name not in landed)
        )
        cached = [path for path in self.directory.iterdir() if not path.name.startswith(".")]
        self.landing._agree(cached, parts)
        if resume is not None:
            atomic_write_bytes(checkpoint_file, json.dumps(resume["checkpoint"], sort_keys=True).encode())

    def save(self, parts: list[Path], checkpoint: bytes) -> None:
        """Upload the parts the bucket lacks, then the checkpoint naming them (one object)."""
        with self.landing.reaching(f"keep the checkpoint {self.landing._key(self.resume)}"):
            remote = self.landing._listed(self.directory)
            for part in parts:
                for local in (sidecar_of(part), part):
                    if local.exists() and self.landing._remote(local) not in remote:
                        self.landing._files.put_file(str(local), self.landing._remote(local))
            resume = {"checkpoint": json.loads(checkpoint), "parts": [part.name for part in parts]}
            self.landing._files.pipe_file(self.landing._remote(self.resume), json.dumps(resume).encode())

    def clear(self) -> None:
        """Forget the bucket's copy of the area (its extraction was published, or abandoned)."""
        with self.landing.reaching(f"clear {self.landing._key(self.directory)}"):
            if self.landing._listed(self.directory):
                self.landing._files.rm(self.landing._remote(self.directory), recursive=True)


def _packed(state_dir: Path, key_scans: list[str]) -> bytes:
    """The state object: the state directory's files and the names of the current key scans."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(state_dir.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                archive.write(path, path.name)
        archive.writestr(KEY_SCANS_MEMBER, json.dumps(key_scans))
    return buffer.getvalue()


def _load_dates(entity_dir: Path) -> Iterator[Path]:
    if entity_dir.is_dir():
        yield from (
            day for day in entity_dir.iterdir() if day.name.startswith(LOAD_DATE_PREFIX) and day.is_dir()
        )
