"""Retrying a failed step inside its run, for the failures where an immediate retry usually succeeds.

Three layers retry, each for what it is good at, so that none doubles another:
- the REST client retries a single call (backoff with jitter, `Retry-After`): a 5xx, a reset connection;
- this module retries a whole extraction step once more in the same run (`dg.RetryRequested`, jittered
  delay) when the classifier says `transient_network` with enough confidence: a path that broke mid-body
  after the client's own retries; the step resumes from its checkpoint;
- the healing sensor re-materializes in a new run what still fails, with its policy's backoff of minutes,
  parameter overrides and circuit breakers; Dagster's run retries (dagster.yaml) only relaunch crashed
  runs.
"""

from __future__ import annotations

import random

import dagster as dg

from sensors.healing.classifier import Category, classify, evidence_from_error

STEP_RETRY_CATEGORIES = frozenset({Category.transient_network})
MAX_STEP_RETRIES = 1
MIN_CONFIDENCE = 0.8
BASE_DELAY_SECONDS = 1.0


def step_retry(
    error: BaseException, *, asset_key: dg.AssetKey, retry_number: int
) -> dg.RetryRequested | None:
    """The `RetryRequested` to raise (from `error`) when the failure is worth one more try in this run."""
    if retry_number >= MAX_STEP_RETRIES:
        return None
    diagnosis = classify(evidence_from_error(error, kind="step_failure", asset_key=asset_key))
    if diagnosis.category not in STEP_RETRY_CATEGORIES or diagnosis.confidence < MIN_CONFIDENCE:
        return None
    delay = BASE_DELAY_SECONDS * 2**retry_number * random.uniform(0.5, 1.5)
    return dg.RetryRequested(max_retries=MAX_STEP_RETRIES, seconds_to_wait=round(delay, 2))
