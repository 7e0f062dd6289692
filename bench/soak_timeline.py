"""Where a soak's time to recover went, from its post-mortem (`postmortem.json`, written beside the unit
logs): for each incident an automatic action healed, the failure to its first healing attempt's creation
(the sensor's ticks and the backoff), the creation to the run's start (the queue and the worker's start),
the first attempt's own run, its attempts, and the failure to the recovery. The median goal of issue 23 is
argued from these figures, so the report prints them instead of a post-mortem done by hand.

    python bench/soak_timeline.py /tmp/soak_xxx/postmortem.json
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sensors.healing.engine import COMPANIONS_TAG, attempt_ids

WAITED_LONG_S = 20.0


@dataclass(frozen=True)
class HealedIncident:
    incident_id: str
    category: str
    attempts: int
    to_first_attempt_s: float | None
    """Failure -> the first attempt's run created (None: resolved before any attempt was launched)."""
    first_attempt_queued_s: float | None
    """The first attempt's creation -> its start (queue, run slot, the worker process starting)."""
    first_attempt_ran_s: float | None
    shared_first_attempt: bool
    """The first attempt also retried other incidents of the source (companions)."""
    by_another_run: bool
    """Resolved by a run that was not one of its attempts (a schedule's, a delivery's)."""
    to_recover_s: float


def healed_incidents(
    runs: Iterable[dict[str, Any]], incidents: Iterable[dict[str, Any]]
) -> list[HealedIncident]:
    """The incidents healed without a human by an automatic action, with their attempts' times."""
    attempts: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for incident_id in attempt_ids(run["tags"]):
            attempts.setdefault(incident_id, []).append(run)
    healed = []
    for incident in incidents:
        if incident["status"] != "resolved" or incident["decision"] != "auto":
            continue
        if incident["time_to_recover_s"] is None or not str(incident["outcome"]).startswith(
            ("healed by run", "materialized by run")
        ):
            continue
        own = sorted(attempts.get(incident["incident_id"], []), key=lambda run: run["creationTime"])
        first = own[0] if own else None
        started, ended = (first.get("startTime"), first.get("endTime")) if first else (None, None)
        healed.append(
            HealedIncident(
                incident_id=incident["incident_id"],
                category=incident["category"],
                attempts=len(own),
                to_first_attempt_s=first["creationTime"] - incident["opened_at"] if first else None,
                first_attempt_queued_s=started - first["creationTime"] if first and started else None,
                first_attempt_ran_s=ended - started if started and ended else None,
                shared_first_attempt=bool(first and first["tags"].get(COMPANIONS_TAG)),
                by_another_run=str(incident["outcome"]).startswith("materialized by run"),
                to_recover_s=float(incident["time_to_recover_s"]),
            )
        )
    return healed


def timeline_lines(healed: list[HealedIncident]) -> list[str]:
    """The report's section: medians and ranges over the healed incidents, and what waited long."""
    if not healed:
        return ["No incident was healed by an automatic action."]

    def row(name: str, values: list[float]) -> str:
        if not values:
            return f"| {name} | - | - | 0 |"
        median, low, high = statistics.median(values), min(values), max(values)
        return f"| {name} | {median:.0f} s | {low:.0f}-{high:.0f} s | {len(values)} |"

    queued = [h.first_attempt_queued_s for h in healed if h.first_attempt_queued_s is not None]
    return [
        "| step (incidents healed by an automatic action) | median | range | incidents |",
        "|---|---|---|---|",
        row(
            "failure -> first attempt created (ticks, backoff)",
            [h.to_first_attempt_s for h in healed if h.to_first_attempt_s is not None],
        ),
        row("first attempt created -> started (queue, worker start)", queued),
        row(
            "first attempt's run",
            [h.first_attempt_ran_s for h in healed if h.first_attempt_ran_s is not None],
        ),
        row("failure -> recovered", [h.to_recover_s for h in healed]),
        "",
        f"Attempts per incident: {_counts(h.attempts for h in healed)}; first attempts shared with another "
        f"incident of the source: {sum(h.shared_first_attempt for h in healed)}; first attempts that waited "
        f"more than {WAITED_LONG_S:.0f} s to start: {sum(q > WAITED_LONG_S for q in queued)}; resolved by "
        f"another run than their attempts: {sum(h.by_another_run for h in healed)}.",
    ]


def _counts(values: Iterable[int]) -> str:
    counted = sorted(Counter(values).items())
    return ", ".join(f"{n} attempt{'s' if n != 1 else ''}: {count}" for n, count in counted)


def main() -> None:
    postmortem = json.loads(Path(sys.argv[1]).read_text())
    print("\n".join(timeline_lines(healed_incidents(postmortem["runs"], postmortem["incidents"]))))


if __name__ == "__main__":
    main()
