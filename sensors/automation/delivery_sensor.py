"""The delivery sensor of a file source: new files in its directory or GCS prefix start a run.

Every tick lists each entity's glob with `FileStore.list` (local disk and `gs://` alike) and compares the
listing with the cursor, the files seen before, each as `path|size|version` (a rewritten file has a new
version, so it counts as new). An entity with new files gets one run for the whole batch, materializing
its raw asset and what is downstream of it (a subset of the shared job, `sensors/automation/targets.py`);
the run's `run_key` is a hash of that batch, so a tick evaluated twice (a daemon restart before the cursor
was stored) cannot launch it twice. What a run lands is decided by the raw asset's own processed-file
ledger, not by this sensor: a batch that arrives while the previous run is still going is landed by the
next run, never twice, and a batch that arrives while the entity's previous run still waits in the queue
launches nothing: that run lands it (`_joinable_run`).

A file that is not ready yet (`resources/files/readiness.py`: still changing within the entity's
`stable_after_seconds`, or without its `ready_marker`) starts no run and is not counted as seen, so a later
tick starts one once it is ready. The first observation of each such file is kept in the cursor; the run
launched for it is handed that observation (`RawConfig.observed_files`), so the raw asset counts the sensor's
listing as its own first one and lands the file rather than starting to watch it afresh.

While the source's circuit breaker is open the tick is skipped and the cursor is not advanced, so the files
delivered meanwhile start a run once the breaker closes. A listing error (bucket unreachable) skips the tick
with the error as its reason; the next tick tries again. The cursor keeps only files still listed, so it
stays as large as the delivery directory.
"""

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from resources.files.readiness import Observations, Readiness, is_marker, sort_by_readiness
from resources.files.store import FileFingerprint, FileStore, FileStoreError
from resources.state.database import StateLocation
from sensors.automation.conditions import ENTITY_TAG, SOURCE_TAG, TRIGGER_TAG
from sensors.automation.targets import SharedJob, selected_keys
from sensors.automation.waiting_runs import waiting_run
from sensors.healing.engine import open_breaker_skip

DELIVERY_TRIGGER = "delivery"


@dataclass(frozen=True)
class WatchedEntity:
    """One entity of a file source: its glob under the source's root, what a run of it targets, when a
    listed file is ready to land, and its raw asset (whose run is told what the sensor observed)."""

    name: str
    pattern: str
    target: dg.AssetSelection
    readiness: Readiness = field(default_factory=Readiness)
    raw_key: dg.AssetKey | None = None


@dataclass(frozen=True)
class DeliveryCursor:
    """Files seen so far, per entity (`path|size|version`), and the files waiting to be ready, as first
    observed (`resources/files/readiness.py`)."""

    seen: dict[str, list[str]]
    observed: dict[str, Observations]

    def dumps(self) -> str:
        seen = {name: sorted(keys) for name, keys in self.seen.items()}
        return json.dumps({"seen": seen, "observed": self.observed}, sort_keys=True)


def parse_cursor(raw: str | None) -> DeliveryCursor:
    """The cursor as stored; one written before readiness was tracked is the `seen` mapping alone."""
    stored = json.loads(raw) if raw else {}
    if not isinstance(stored.get("seen"), dict):  # an old cursor's entity named `seen` holds a list
        return DeliveryCursor(stored, {})
    return DeliveryCursor(stored["seen"], stored.get("observed", {}))


def batch_run_key(source: str, entity: str, new_files: Sequence[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(new_files)).encode()).hexdigest()[:16]
    return f"{source}.{entity}:{digest}"


def build_delivery_sensor(
    name: str,
    *,
    source: str,
    root: str,
    entities: Sequence[WatchedEntity],
    job: SharedJob,
    healing_store: StateLocation,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds: int = 60,
) -> dg.SensorDefinition:
    """A sensor named `name` watching the files of `source` under `root` (a directory or gs://bucket/prefix);
    its runs are subsets of `job`."""

    @dg.sensor(
        name=name,
        target=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=f"New files of {source} under {root}: one run per entity and batch of new files (raw and "
        f"downstream); skipped while the source's circuit breaker is open.",
    )
    def delivery_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        if (skip := open_breaker_skip(healing_store, source, "new files wait until it closes.")) is not None:
            return skip
        store = FileStore(root=root)
        cursor = parse_cursor(context.cursor)
        now = time.time()
        seen: dict[str, list[str]] = {}
        observed: dict[str, Observations] = {}
        requests = []
        for entity in entities:
            marker = entity.readiness.ready_marker
            try:
                listed = [file for file in store.list(entity.pattern) if not is_marker(file.path, marker)]
                before = set(cursor.seen.get(entity.name, []))
                new = [file for file in listed if file.ledger_key() not in before]
                ready = sort_by_readiness(
                    store, new, entity.readiness, cursor.observed.get(entity.name, {}), now
                )
            except FileStoreError as error:
                return dg.SkipReason(f"Cannot list the files of {source}: {error}")
            # A waiting file stays unseen: a later tick finds it new again, and ready.
            seen[entity.name] = [file.ledger_key() for file in listed if file.path not in ready.waiting]
            if ready.observed:
                observed[entity.name] = ready.observed
            if ready.waiting:
                first = min(ready.waiting)
                context.log.info(
                    f"{source}.{entity.name}: {len(ready.waiting)} file(s) not ready yet, e.g. {first}: "
                    f"{ready.waiting[first]}"
                )
            if not ready.ready:
                continue
            keys = sorted(file.ledger_key() for file in ready.ready)
            example = keys[0].split("|")[0]
            tags = {SOURCE_TAG: source, TRIGGER_TAG: DELIVERY_TRIGGER, ENTITY_TAG: entity.name}
            if (queued := _joinable_run(context.instance, entity, tags)) is not None:
                context.log.info(
                    f"{source}.{entity.name}: {len(keys)} new file(s), e.g. {example}, join run {queued} "
                    f"waiting in the queue: it lands every new file when it starts"
                )
                continue
            context.log.info(f"{source}.{entity.name}: {len(keys)} new file(s), e.g. {example}")
            requests.append(
                dg.RunRequest(
                    run_key=batch_run_key(source, entity.name, keys),
                    asset_selection=selected_keys(context.repository_def, entity.target, f"sensor {name}"),
                    run_config=_observed_config(entity, ready.ready, cursor.observed.get(entity.name, {})),
                    tags=tags,
                )
            )
        stored = DeliveryCursor(seen, observed).dumps()
        if not requests:
            return dg.SensorResult(skip_reason=f"No new files of {source} ready to land.", cursor=stored)
        return dg.SensorResult(run_requests=requests, cursor=stored)

    return delivery_sensor


def _joinable_run(instance: dg.DagsterInstance, entity: WatchedEntity, tags: dict[str, str]) -> str | None:
    """The entity's delivery run waiting in the queue that new files join (`waiting_runs.py`). None for an
    entity that waits for files to be stable: its run is told when this sensor first listed each file
    (`_observed_config`), and a file it was not told of would be watched afresh rather than landed."""
    if entity.readiness.stable_after_seconds > 0:
        return None
    return waiting_run(instance, tags)


def _observed_config(
    entity: WatchedEntity, ready: list[FileFingerprint], observed: Observations
) -> dict[str, Any]:
    """The raw step's config telling it when this sensor first listed each ready file as it is (only what
    `stable_after_seconds` needs; nothing when the entity does not wait for stability)."""
    if entity.raw_key is None or entity.readiness.stable_after_seconds <= 0:
        return {}
    since = {
        file.ledger_key(): float(observed[file.path]["since"]) for file in ready if file.path in observed
    }
    op = entity.raw_key.to_python_identifier()
    return {"ops": {op: {"config": {"observed_files": since}}}}
