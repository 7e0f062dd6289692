"""What a landing zone shared between processes and machines needs named without loading the GCS client
libraries (`published.py` and `lease.py` load them, only when the landing is on GCS): whether a URI names a
bucket, how long a lease outlives a lost holder, and the error when another process lands the same entity
(the local lock, the GCS lease and the bronze layer's advisory lock all raise it)."""

from __future__ import annotations

GCS_SCHEME = "gs://"
DEFAULT_LEASE_SECONDS = 600
"""On GCS: how long an extraction's lease outlives its holder's last renewal, so how long a lost machine's
lease keeps others out."""


class LandingBusyError(RuntimeError):
    """Another process is landing the same entity right now."""


def is_gcs_uri(uri: str) -> bool:
    """`gs://bucket` or `gs://bucket/prefix` (a bucket name present)."""
    return uri.startswith(GCS_SCHEME) and bool(uri.removeprefix(GCS_SCHEME).partition("/")[0])
