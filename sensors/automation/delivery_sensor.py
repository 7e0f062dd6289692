"""The delivery sensor of a file source: new files in its directory or GCS prefix start a run.

Every tick lists each entity's glob with `FileStore.list` (local disk and `gs://` alike) and compares the
listing with the cursor, the files seen before, each as `path|size|version` (a rewritten file has a new
version, so it counts as new). An entity with new files gets one run for the whole batch, materializing
its raw asset and what is downstream of it (a subset of the shared job, `sensors/automation/targets.py`);
the run's `run_key` is a hash of that batch, so a tick evaluated twice (a daemon restart before the cursor
was stored) cannot launch it twice. What a run lands is decided by the raw asset's own processed-file
ledger, not by this sensor: a batch that arrives while the previous run is still going is landed by the
next run, never twice.

While the source's circuit breaker is open the tick is skipped and the cursor is not advanced, so the files
delivered meanwhile start a run once the breaker closes. A listing error (bucket unreachable) skips the tick
with the error as its reason; the next tick tries again. The cursor keeps only files still listed, so it
stays as large as the delivery directory.
"""

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from resources.files.store import FileStore, FileStoreError
from sensors.automation.conditions import SOURCE_TAG, TRIGGER_TAG
from sensors.automation.targets import SharedJob, selected_keys
from sensors.healing.engine import open_breaker_skip

DELIVERY_TRIGGER = "delivery"


@dataclass(frozen=True)
class WatchedEntity:
    """One entity of a file source: its glob under the source's root, and what a run of it targets."""

    name: str
    pattern: str
    target: dg.AssetSelection


def parse_cursor(raw: str | None) -> dict[str, list[str]]:
    """Files seen so far, per entity (`path|size|version`)."""
    return json.loads(raw) if raw else {}


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
    healing_store: Path,
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
        seen = parse_cursor(context.cursor)
        try:
            listed = {
                entity.name: [f.ledger_key() for f in store.list(entity.pattern)] for entity in entities
            }
        except FileStoreError as error:
            return dg.SkipReason(f"Cannot list the files of {source}: {error}")
        requests = []
        for entity in entities:
            new = sorted(set(listed[entity.name]) - set(seen.get(entity.name, [])))
            if not new:
                continue
            context.log.info(f"{source}.{entity.name}: {len(new)} new file(s), e.g. {new[0].split('|')[0]}")
            requests.append(
                dg.RunRequest(
                    run_key=batch_run_key(source, entity.name, new),
                    asset_selection=selected_keys(context.repository_def, entity.target, f"sensor {name}"),
                    tags={SOURCE_TAG: source, TRIGGER_TAG: DELIVERY_TRIGGER, "platform/entity": entity.name},
                )
            )
        cursor = json.dumps(_sorted(listed), sort_keys=True)
        if not requests:
            return dg.SensorResult(skip_reason=f"No new files of {source}.", cursor=cursor)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return delivery_sensor


def _sorted(listed: Mapping[str, list[str]]) -> dict[str, list[str]]:
    return {name: sorted(keys) for name, keys in listed.items()}
