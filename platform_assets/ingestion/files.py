"""Files: each delivered file is landed exactly once, as one landed file of its own.

CSV and Parquet deliveries land as the bytes delivered (`resources/landing/delivered.py`): a streamed copy,
hashed while copied, with a sidecar naming the DuckDB reader and options staging parses it with, once (a
CSV copy zstd-compressed unless delivered gzip or zstd; only a CSV header or a Parquet footer is read
here). JSON, JSON Lines and Avro deliveries are read record by record (`read_batches`) and land as one
Parquet file of Arrow batches. `land_file` lands one delivered file either way.

The processed-file ledger (path -> size, version, content hash, name of the landed copy, or `empty` for a
delivery with no rows, which lands nothing) is the extraction state, kept in its own file
(`resources/landing/ledger.py`: each run writes what changed; the materialization records the ledger's
size, digest and the run's delta, not the ledger itself): a file whose size and version (mtime or
GCS generation) are unchanged is skipped; one re-delivered with identical bytes (a `touch`, a re-upload) is
recognised by its hash and skipped too; a changed file is landed again, beside its earlier copy (staging then
replaces that file's earlier rows with its rows: `platform_assets/staging/redelivery.py`); a file whose
landed copy is gone is landed again. Entries for files that are gone are dropped, so the ledger is bounded
by the listing. A landed file is named after its ledger key, so a run that crashed after landing but before
Dagster recorded it is recognised, not landed twice.

A new or changed file lands only once it is ready (`resources/files/readiness.py`: unchanged for the
entity's `stable_after_seconds`, its `ready_marker` present); the files still waiting are listed in the
materialization (`files_waiting`), and their first observation is kept in the state beside the ledger, so a
later run lands them. A landed CSV whose last line has no newline is landed with a warning
(`files_without_final_newline`), not refused: many exporters omit the last newline, and DuckDB parses such a
line. A torn record with fewer fields is malformed when staged anyway; one cut inside its last field is not,
hence the warning.

A file that cannot be read as declared (`BAD_FILE_ERRORS`: a damaged archive, a zip of several files, ...)
fails the run under the entity's `file.on_bad_file: fail` (the default); under `skip` it is set aside: not
landed, its ledger entry flagged `set_aside` with its error (so an unchanged file is not read again, and a
changed re-delivery lands), listed in every materialization (`files_set_aside`) until then.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.ingestion.extraction import Extraction, ExtractionContext, today
from resources.files.compression import (
    DAMAGED_DATA_ERRORS,
    ArchiveContentError,
    Codec,
    codec_for,
    damaged_reason,
    decompressed,
    is_damaged_bz2,
)
from resources.files.config import BadFilePolicy, FileFormat, MalformedPolicy
from resources.files.formats.csv import duckdb_options, read_header
from resources.files.formats.reader import MalformedRecord, read_batches
from resources.files.headers import HeaderCollisionError, normalized_names
from resources.files.read_context import MalformedFileError, ReadContext
from resources.files.readiness import Observations, is_marker, sort_by_readiness
from resources.files.store import FileFingerprint, FileStore
from resources.landing.delivered import LINEAGE_NAMES, PARQUET_READER, DeliveredCopy
from resources.landing.ledger import LEDGER_FILE, FileLedger
from resources.landing.zone import InFlight, LandedFile, Lineage, QuarantineFile

MAX_LISTED_IN_METADATA = 50
LANDING_WORKERS = min(4, os.cpu_count() or 1)
"""Files landed at once: each holds one file's read-ahead and one batch in memory."""
COPIED_FORMATS = {"csv": "read_csv", "parquet": PARQUET_READER}
"""Formats landed as the bytes delivered, and the DuckDB function that parses them at staging."""
NATIVE_CODECS = {"gzip": ".gz", "zstd": ".zst"}
"""Compressions DuckDB reads itself: a copy keeps them; any other is landed zstd-compressed."""
_CHECK_CHUNK_BYTES = 1 << 20
LEDGER_STATE = "file_ledger"
"""Extraction state key: size, digest and copies of the ledger a run left (`resources/landing/ledger.py`)."""
LEGACY_LEDGER_STATE = "ledger"
"""Extraction state key of the whole ledger, as runs recorded it before it had its own file."""
OBSERVED_STATE = "observed"
"""Extraction state key: files not ready yet, as first listed unchanged (`resources/files/readiness.py`)."""
EMPTY_ENTRY = "empty"
"""Ledger flag of a delivery with no rows (a 0-byte file, a Parquet file with no row): processed,
with no landed copy to look for, so staging can tell "no data yet" from landed copies that went missing."""
SET_ASIDE_ENTRY = "set_aside"
"""Ledger field of a delivered file set aside under `file.on_bad_file: skip`: its error. Processed, with no
landed copy: the same file (size and version, or bytes) is not tried again; a changed re-delivery lands."""
BAD_FILE_ERRORS: tuple[type[Exception], ...] = (MalformedFileError, ArchiveContentError)
"""What a delivered file that cannot be read as declared raises while landed: set aside under
`on_bad_file: skip`. Any other error (the store unreachable, a full disk) fails the step under either."""
Outcome = Literal["landed", "recovered", "set_aside"]
_LEDGER_FIELDS = ("size", "version", "landed", EMPTY_ENTRY, SET_ASIDE_ENTRY)
"""The fields of every ledger entry a run compares (`FileLedger.fields`), at these positions:"""
_SIZE, _VERSION, _LANDED, _EMPTY, _SET_ASIDE = range(len(_LEDGER_FIELDS))


class FilesExtractor:
    def kind_tag(self, item: CatalogEntity) -> str:
        assert item.entity.file is not None
        return item.entity.file.format

    def location(self, item: CatalogEntity) -> str:
        assert item.entity.file is not None
        return f"{_store(item).root.rstrip('/')}/{item.entity.file.path}"

    def extract(self, context: ExtractionContext) -> Extraction:
        item = context.item
        file_entity = item.entity.file
        assert file_entity is not None
        store = _store(item)
        listed = [
            file
            for file in store.list(file_entity.path)
            if not is_marker(file.path, file_entity.ready_marker)
        ]
        ledger_file = FileLedger(context.landing.state_dir(item.source_name, item.name) / LEDGER_FILE)
        legacy = context.previous_state.get(LEGACY_LEDGER_STATE)
        if legacy and not ledger_file.exists():
            # A ledger recorded in the materialization (before it moved to its own file) is taken over once.
            ledger_file.apply(legacy, [])
        # Only the fields compared are read for every entry; whole entries only for the files decided on.
        known = ledger_file.fields(_LEDGER_FIELDS)
        # An entry whose landed copy is gone (a cleaned-up landing zone) counts as absent, so the file lands
        # again; one whose copy retention removed stays processed (the landed index still names it), and
        # entries of empty deliveries name no copy, nor do entries from before entries named it.
        landed_names = context.inflight.index.known_names()
        still_landed = {
            path: fields
            for path, fields in known.items()
            if fields[_LANDED] is None or fields[_LANDED] in landed_names
        }
        new, unchanged, redelivered = _plan(store, listed, still_landed, ledger_file.get)
        ready = sort_by_readiness(
            store,
            new,
            file_entity.readiness(),
            _observations(context.previous_state.get(OBSERVED_STATE, {}), context.observed_files),
            now=time.time(),
        )
        to_land = ready.ready
        context.log.info(
            f"{len(listed)} file(s) match {self.location(item)}: {len(to_land)} to land, "
            f"{len(ready.waiting)} not ready yet, {len(unchanged)} already landed, {len(redelivered)} "
            f"re-delivered unchanged"
        )
        if len(to_land) > MAX_LISTED_IN_METADATA:
            context.log.info(
                f"Landing {len(to_land)} file(s); the first {MAX_LISTED_IN_METADATA} are logged one by one"
            )
        if ready.waiting:
            context.log.info(
                "Not landed yet (still being written, or waiting for their ready marker): "
                + "; ".join(f"{path}: {why}" for path, why in sorted(ready.waiting.items())[:5])
            )
        # Parts a failed attempt left in flight are not resumed: every file not in the ledger is read again,
        # and one withdrawn or rewritten since must not be committed with this run's parts.
        context.inflight.discard()
        quarantine = QuarantineFile(
            context.landing.quarantine_dir(item.source_name, item.name) / f"{context.lineage.run_id}.parquet",
            context.lineage,
        )
        try:
            outcomes, set_aside_now = _land_all(context, store, to_land, quarantine, file_entity.on_bad_file)
        except BaseException:
            # Nothing of this attempt lands, and the next one sets the same records aside again: keep no
            # quarantine file of it (unclosed, it would also be a Parquet file without its footer).
            quarantine.close()
            quarantine.path.unlink(missing_ok=True)
            raise
        quarantine.close()
        recovered = [file for file in to_land if outcomes[file.path][0] == "recovered"]
        landed_now = [file for file in to_land if file.path not in set_aside_now]
        committed = context.inflight.commit(today(context))
        committed_names = {landed.path.name for landed in committed}
        empty = {
            file.path
            for file in landed_now
            if outcomes[file.path][0] == "landed" and _landed_name(file, file_entity) not in committed_names
        }
        if empty:
            context.log.info(
                f"{len(empty)} delivered file(s) had no rows and landed nothing (no data is normal): "
                f"{', '.join(sorted(empty)[:5])}"
            )
        unterminated = sorted(
            file.path
            for file in landed_now
            if outcomes[file.path][0] == "landed"
            and file.path not in empty
            and _unterminated(store, file, file_entity)
        )
        if unterminated:
            context.log.warning(
                f"{len(unterminated)} landed CSV file(s) do not end with a newline: their last record may be "
                f"torn (a file still being written). Declare `stable_after_seconds` or `ready_marker` if the "
                f"writer is still busy when files are listed: {', '.join(unterminated[:5])}"
            )
        written = dict(redelivered)
        written.update(
            {
                file.path: {
                    "size": file.size,
                    "version": file.version,
                    "hash": outcomes[file.path][1],
                    **(
                        {SET_ASIDE_ENTRY: set_aside_now[file.path]}
                        if file.path in set_aside_now
                        else {EMPTY_ENTRY: True}
                        if file.path in empty
                        else {"landed": _landed_name(file, file_entity)}
                    ),
                }
                for file in to_land
            }
        )
        present = {file.path for file in listed}
        delta = ledger_file.apply(written, (path for path in known if path not in present))
        kept = {path: fields for path, fields in known.items() if path in present and path not in written}
        set_aside = dict(
            sorted(
                [(path, fields[_SET_ASIDE]) for path, fields in kept.items() if fields[_SET_ASIDE]]
                + [
                    (path, entry[SET_ASIDE_ENTRY])
                    for path, entry in written.items()
                    if SET_ASIDE_ENTRY in entry
                ]
            )
        )
        if set_aside:
            context.log.warning(
                f"{len(set_aside)} delivered file(s) set aside, not landed ({len(set_aside_now)} in this "
                f"run; `on_bad_file: skip`), each until it is re-delivered changed: "
                + "; ".join(f"{path}: {error}" for path, error in list(set_aside.items())[:5])
            )
        malformed_records = quarantine.count - len(set_aside_now)
        details: dict[str, Any] = {
            "files_listed": len(listed),
            "files_landed": len(landed_now) - len(recovered) - len(empty),
            "files_empty": len(empty),
            "files_recovered": len(recovered),
            "files_skipped": len(unchanged) + len(redelivered),
            "files_landed_names": sorted(f.path for f in landed_now)[:MAX_LISTED_IN_METADATA],
            "files_set_aside": dict(list(set_aside.items())[:MAX_LISTED_IN_METADATA]),
            "files_set_aside_this_run": len(set_aside_now),
            "malformed_records": malformed_records,
            "files_waiting": dict(sorted(ready.waiting.items())[:MAX_LISTED_IN_METADATA]),
            "files_without_final_newline": unterminated[:MAX_LISTED_IN_METADATA],
        }
        if file_entity.normalize_headers is not None:
            renamed = _renamed_columns(committed, file_entity)
            if renamed:
                details["columns_renamed"] = renamed
                context.log.info(
                    f"Delivered column names staged as {file_entity.normalize_headers} (normalize_headers): "
                    + ", ".join(f"{delivered!r} -> {name}" for delivered, name in list(renamed.items())[:20])
                )
        if malformed_records:
            context.log.warning(
                f"{malformed_records} malformed record(s) set aside in {quarantine.path}; first: "
                f"{next((row for row in quarantine.examples if row['file'] not in set_aside_now), '-')}"
            )
        if quarantine.count:
            details["quarantine_file"] = str(quarantine.path)
        details["ledger_delta"] = {
            "written": len(delta.written),
            "dropped": len(delta.dropped),
            "paths": sorted(delta.written)[:MAX_LISTED_IN_METADATA],
        }
        entries, digest = ledger_file.summary()
        with_copies = sum(1 for fields in kept.values() if _names_a_copy(fields)) + sum(
            1 for entry in written.values() if not entry.get(EMPTY_ENTRY) and SET_ASIDE_ENTRY not in entry
        )
        state: dict[str, Any] = {
            LEDGER_STATE: {"entries": entries, "digest": digest, "with_copies": with_copies}
        }
        if ready.observed:
            state[OBSERVED_STATE] = ready.observed
        return Extraction(files=committed, state=state, load_kind="append", details=details)


def _land_all(
    context: ExtractionContext,
    store: FileStore,
    files: list[FileFingerprint],
    quarantine: QuarantineFile,
    on_bad_file: BadFilePolicy,
) -> tuple[dict[str, tuple[Outcome, str]], dict[str, str]]:
    """Land `files`, up to `LANDING_WORKERS` at a time (Arrow parses and Parquet compresses outside the
    GIL), each with its content hash for the ledger: path -> (outcome, hash); and the files set aside, path
    -> error. The first failure is raised once the files being landed have stopped; files not started are
    not landed. Under `on_bad_file: skip`, a file that cannot be read as declared (`BAD_FILE_ERRORS`) is
    no failure: what it left in flight is dropped, and it is set aside with its error (also a row of the
    landing quarantine file, with no line)."""
    set_aside: dict[str, str] = {}

    def land(file: FileFingerprint, announce: bool) -> tuple[Outcome, str]:
        try:
            outcome, copied_hash = _land(context, store, file, quarantine, announce=announce)
        except BAD_FILE_ERRORS as exc:
            if on_bad_file == "fail":
                raise
            fmt = context.item.entity.file
            assert fmt is not None
            context.inflight.drop(_landed_name(file, fmt))
            error = f"{type(exc).__name__}: {exc}"
            set_aside[file.path] = error
            quarantine.add(
                {"file": file.path, "line": None, "error": f"file set aside: {error}", "text": None}
            )
            return "set_aside", _content_hash(store, file)
        return outcome, file.checksum or copied_hash or _content_hash(store, file)

    with ThreadPoolExecutor(max_workers=LANDING_WORKERS, thread_name_prefix="landing") as pool:
        futures = {
            file.path: pool.submit(land, file, number < MAX_LISTED_IN_METADATA)
            for number, file in enumerate(files)
        }
        try:
            return {path: future.result() for path, future in futures.items()}, set_aside
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def _land(
    context: ExtractionContext,
    store: FileStore,
    file: FileFingerprint,
    quarantine: QuarantineFile,
    *,
    announce: bool,
) -> tuple[Literal["landed", "recovered"], str | None]:
    """Land one file in flight; `recovered` when a crashed, unrecorded run already committed it. With the
    hash of the delivered bytes when landing read them all as delivered (a copy of them). `announce`: log
    it (the first `MAX_LISTED_IN_METADATA` of a run: each log line is an event in Dagster's event log, and
    a backlog of 100,000 files would write 100,000 of them)."""
    item = context.item
    fmt = item.entity.file
    assert fmt is not None
    name = _landed_name(file, fmt)
    if context.landing.find_committed(item.source_name, item.name, name) is not None:
        context.log.warning(f"{file.path} was landed by a run that was not recorded; not landing it again")
        return "recovered", None
    if announce:
        context.log.info(f"Landing {store.describe(file)} ({file.size} bytes)")

    def set_aside(record: MalformedRecord) -> None:
        quarantine.add(vars(record))

    copied_hash = land_file(
        store,
        file,
        fmt,
        on_malformed=item.entity.on_malformed,
        inflight=context.inflight,
        lineage=context.lineage,
        batch_rows=context.batch_rows,
        quarantine=set_aside,
    )
    return "landed", copied_hash


def land_file(
    store: FileStore,
    file: FileFingerprint,
    fmt: FileFormat,
    *,
    on_malformed: MalformedPolicy,
    inflight: InFlight,
    lineage: Lineage,
    batch_rows: int,
    quarantine: Callable[[MalformedRecord], None],
) -> str | None:
    """Land one delivered file in flight under its ledger-key name (`_landed_name`), whatever its format: a
    copy of its bytes with its sidecar (`COPIED_FORMATS`), else one Parquet part of its records, the
    malformed ones handed to `quarantine` under `on_malformed: skip`. The hash of the delivered bytes when
    a copy of them is what landed (see `_copy`). Nothing of the ledger: what `FilesExtractor` runs per file
    it lands, and what the format tests land a delivery with."""
    name = _landed_name(file, fmt)
    if fmt.format in COPIED_FORMATS:
        read = ReadContext(file.path, store.describe(file), on_malformed, quarantine)
        return _copy(store, file, fmt, name, read, inflight, lineage)
    batches = read_batches(
        store, file, fmt, batch_rows=batch_rows, on_malformed=on_malformed, quarantine=quarantine
    )
    inflight.write(name, batches, lineage)
    return None


def _renamed_columns(landed: list[LandedFile], fmt: FileFormat) -> dict[str, str]:
    """Delivered -> staged name of the columns of this run's landed files that `normalize_headers`
    renames (landed files keep the delivered names: staging renames them)."""
    renamed: dict[str, str] = {}
    for file in landed:
        delivered = [name for name in file.schema.names if name not in LINEAGE_NAMES]
        renamed.update(
            (name, normalized)
            for name, normalized in _normalized(delivered, fmt).items()
            if name != normalized
        )
    return dict(sorted(renamed.items()))


def _normalized(names: list[str], fmt: FileFormat, read: ReadContext | None = None) -> dict[str, str]:
    """Delivered -> staged name of each delivered column (`file.normalize_headers`); two columns that
    would take one name fail the file (named by `read`)."""
    try:
        return normalized_names(names, fmt.normalize_headers)
    except HeaderCollisionError as exc:
        if read is None:
            raise
        read.fail(str(exc))


def _copy(
    store: FileStore,
    file: FileFingerprint,
    fmt: FileFormat,
    name: str,
    read: ReadContext,
    inflight: InFlight,
    lineage: Lineage,
) -> str | None:
    """Land the delivered bytes as the copy `name`; the hash of the delivered bytes when they are what was
    copied (not a bz2 or zip archive's content). Only what names the columns is parsed here (a CSV header,
    a Parquet footer); an empty file lands nothing. A compressed delivery that is truncated or damaged
    fails, naming it."""
    codec = codec_for(file.path, fmt.compression)
    try:
        with store.open_bytes(file, fmt.compression) as stream:
            if fmt.format == "parquet":
                options, records_after, names = _parquet_options(stream, read)
            else:
                names = read_header(stream, fmt, read) or []
                copy_codec = codec if codec in NATIVE_CODECS else "zstd"
                options = duckdb_options(fmt, names, read.on_malformed, copy_codec) if names else None
                records_after = 1 if fmt.header else 0
            _normalized(names, fmt, read)  # names that staging cannot tell apart fail the file here
        if options is None:
            return None
        described = DeliveredCopy(
            reader=COPIED_FORMATS[fmt.format],
            options=options,
            file=file.path,
            source=lineage.source,
            extracted_at=lineage.extracted_at.isoformat(),
            run_id=lineage.run_id,
            records_after=records_after,
        )
        kept = _kept_codec(fmt, codec)
        opened = store.open_raw(file) if kept else store.open_bytes(file, fmt.compression)
        with opened as stream:
            copied = inflight.copy(name, stream, described, compress=fmt.format != "parquet" and not kept)
        if kept:
            _decompress_to_the_end(inflight.directory / name, codec)
    except DAMAGED_DATA_ERRORS as exc:
        read.fail(damaged_reason(codec, exc))
    except OSError as exc:
        if not is_damaged_bz2(exc):
            raise
        read.fail(damaged_reason(codec, exc))
    return copied if codec == "none" or kept else None


def _decompress_to_the_end(copy: Path, codec: Codec) -> None:
    """Read a copy that keeps its delivered gzip or zstd compression through to its end (from local disk,
    just written), discarding what it holds: the codec raises on a truncated or damaged stream. Staging's
    DuckDB would not: it checks no gzip member's CRC (a damaged file would stage wrong rows), and names no
    delivered file when a stream ends early."""
    with open(copy, "rb") as raw, decompressed(raw, codec, str(copy)) as stream:
        while stream.read(_CHECK_CHUNK_BYTES):
            pass


def _kept_codec(fmt: FileFormat, codec: str) -> bool:
    """Whether a copy keeps the delivered compression: DuckDB reads a gzip or zstd text file as it is (an
    uncompressed one is compressed with zstd, what its sidecar then says); a Parquet file is compressed
    inside, so one delivered compressed as a whole lands decompressed."""
    return fmt.format != "parquet" and codec in NATIVE_CODECS


def _parquet_options(stream: BinaryIO, read: ReadContext) -> tuple[dict[str, Any] | None, int, list[str]]:
    """`read_parquet`'s options for a delivered Parquet file (none: it says its own schema), after checking
    from its footer that it is one and that its columns are named so they can be staged; None when it has
    no row. With its column names."""
    try:
        metadata = pq.ParquetFile(stream).metadata
    except (pa.ArrowInvalid, OSError) as exc:
        read.fail(f"is not a Parquet file ({exc}).")
    names = metadata.schema.to_arrow_schema().names
    read.check_names(names)
    return ({} if metadata.num_rows else None), 0, names


def _store(item: CatalogEntity) -> FileStore:
    connection = item.source.connection
    assert connection.kind == "files"
    return FileStore(root=connection.root)


def _plan(
    store: FileStore,
    listed: list[FileFingerprint],
    known: Mapping[str, tuple[Any, ...]],
    entries: Callable[[list[str]], dict[str, dict[str, Any]]],
) -> tuple[list[FileFingerprint], list[FileFingerprint], dict[str, dict[str, Any]]]:
    """Split the listing into files to land, files already landed, and files re-delivered with the same
    bytes (returned as their updated ledger entries), given each known file's `_LEDGER_FIELDS`; `entries`
    fetches whole ledger entries (only those of files whose version changed are read)."""
    to_land, unchanged, touched = [], [], []
    for file in listed:
        seen = known.get(file.path)
        if seen is None or seen[_SIZE] != file.size:
            to_land.append(file)
        elif str(seen[_VERSION]) == file.version:
            unchanged.append(file)
        else:
            touched.append(file)
    earlier = entries([file.path for file in touched])
    redelivered: dict[str, dict[str, Any]] = {}
    for file in touched:
        seen_entry = earlier[file.path]
        if seen_entry["hash"] == _content_hash(store, file):
            redelivered[file.path] = {**seen_entry, "version": file.version}
        else:
            to_land.append(file)
    return to_land, unchanged, redelivered


def _observations(recorded: Observations, by_sensor: dict[str, float]) -> Observations:
    """The earliest listing of each file as it is now: the previous run's (its extraction state), or the
    delivery sensor's, whichever saw the same size and version first."""
    observed = {path: dict(seen) for path, seen in recorded.items()}
    for key, since in by_sensor.items():
        path, size, version = key.rsplit("|", 2)
        seen = observed.get(path)
        if (
            seen is None
            or (str(seen["size"]), str(seen["version"])) != (size, version)
            or since < seen["since"]
        ):
            observed[path] = {"size": int(size), "version": version, "since": since}
    return observed


def _unterminated(store: FileStore, file: FileFingerprint, fmt: FileFormat) -> bool:
    """Whether an uncompressed CSV delivery's last line has no newline: the mark of a file landed while it
    was written (its last record torn), though some writers just omit it. Compressed deliveries are not
    checked: one cut short fails landing as truncated."""
    if fmt.format != "csv" or codec_for(file.path, fmt.compression) != "none":
        return False
    return store.last_byte(file) not in (b"", b"\n")


def _names_a_copy(fields: tuple[Any, ...]) -> bool:
    """Whether a ledger entry (its `_LEDGER_FIELDS`) stands for rows landed: neither an empty delivery nor a
    file set aside."""
    return not fields[_EMPTY] and not fields[_SET_ASIDE]


def _landed_name(file: FileFingerprint, fmt: FileFormat) -> str:
    """Named after the ledger key, so that a copy committed by a crashed run is found again; a copy ends
    in its format and codec (what DuckDB reads it as)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", file.path)[-80:]
    digest = hashlib.sha256(file.ledger_key().encode()).hexdigest()[:16]
    if fmt.format not in COPIED_FORMATS:
        return f"{stem}-{digest}.parquet"
    if fmt.format == "parquet":
        return f"{stem}-{digest}.parquet"
    codec = codec_for(file.path, fmt.compression)
    return f"{stem}-{digest}.{fmt.format}{NATIVE_CODECS.get(codec, '.zst')}"


def _content_hash(store: FileStore, file: FileFingerprint) -> str:
    """The store's own checksum when the listing carries one (GCS: free), else a hash of the bytes."""
    return file.checksum or store.content_hash(file)
