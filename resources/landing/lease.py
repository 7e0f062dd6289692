"""A lease on one entity's landing that holds across machines: a small GCS object, created only if no
object of that name exists (generation precondition 0), deleted by its holder when the extraction ends.

The local `fcntl` lock of the landing zone keeps two processes of one machine apart; machines that share
only the bucket need the bucket to decide, and an object create with `ifGenerationMatch=0` is decided by
GCS alone: of two creators exactly one succeeds. A holder killed before it deletes its lease leaves it
behind, so the lease names its holder (host, pid) and when it expires: a lease is taken over once it has
expired, or at once when its holder is a process of this host that no longer runs (a killed step retried
on the same machine). A live holder renews its lease from a background thread every third of its
duration, so the duration can be short (a lost machine's lease is taken over minutes later) however long
the extraction runs. Taking over deletes the stale object by its generation, so that of two processes
taking over the same stale lease only one deletes it and only one creates the next.

A lease that expires while its holder still works does not let two extractions publish: publishing is
itself guarded by the generation of the entity's state (`resources/landing/published.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import requests
from google.api_core.exceptions import GoogleAPIError, NotFound, PreconditionFailed
from google.cloud import storage

from resources.landing.sharing import LandingBusyError
from resources.processes import process_exists

MIN_RENEWAL_SECONDS = 0.2


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    expires_at: float

    def is_stale(self, now: float) -> bool:
        """Expired, or held by a process of this host that is gone."""
        return now >= self.expires_at or (self.host == socket.gethostname() and not process_exists(self.pid))


@contextlib.contextmanager
def leased(bucket: storage.Bucket, name: str, what: str, seconds: int) -> Iterator[None]:
    """Hold the lease object `name` for the block; LandingBusyError when a live holder has it."""
    blob = bucket.blob(name)
    generation = _take(blob, _holder(seconds), what)
    done = threading.Event()
    renewals = threading.Thread(target=_renew, args=(blob, generation, seconds, done), daemon=True)
    renewals.start()
    try:
        yield
    finally:
        done.set()
        renewals.join()
        with contextlib.suppress(NotFound, PreconditionFailed):
            blob.delete(if_generation_match=blob.generation)


def _holder(seconds: float) -> Holder:
    return Holder(socket.gethostname(), os.getpid(), time.time() + seconds)


def _renew(blob: storage.Blob, generation: int, seconds: float, done: threading.Event) -> None:
    """Push the lease's expiry forward every third of its duration until `done`; stop once another process
    took it over (a renewal that came too late: the state's generation then fences this holder)."""
    while not done.wait(max(seconds / 3, MIN_RENEWAL_SECONDS)):
        try:
            blob.upload_from_string(
                json.dumps(asdict(_holder(seconds))),
                content_type="application/json",
                if_generation_match=generation,
            )
        except (NotFound, PreconditionFailed):
            return
        except (GoogleAPIError, requests.ConnectionError):
            continue  # a blip: the next renewal may pass before the lease expires
        generation = int(blob.generation)


def _take(blob: storage.Blob, holder: Holder, what: str) -> int:
    """Create the lease, taking over a stale one; its generation."""
    for _ in range(3):
        with contextlib.suppress(PreconditionFailed):
            blob.upload_from_string(
                json.dumps(asdict(holder)), content_type="application/json", if_generation_match=0
            )
            return int(blob.generation)
        current = blob.bucket.get_blob(blob.name)
        if current is None:
            continue
        try:
            other = Holder(**json.loads(current.download_as_bytes(if_generation_match=current.generation)))
        except (NotFound, PreconditionFailed):
            continue
        if not other.is_stale(time.time()):
            raise LandingBusyError(
                f"Another run is landing {what} right now (lease gs://{blob.bucket.name}/{blob.name} held by "
                f"pid {other.pid} on {other.host} until {time.ctime(other.expires_at)}); wait for it to "
                f"finish instead of extracting the same data twice. If that process is gone for good, "
                f"delete the lease object."
            )
        with contextlib.suppress(NotFound, PreconditionFailed):
            blob.bucket.blob(blob.name).delete(if_generation_match=current.generation)
    raise LandingBusyError(
        f"Could not take the lease gs://{blob.bucket.name}/{blob.name} on {what}: contended."
    )
