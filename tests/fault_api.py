"""What the REST fault-injection scenarios share: the loopback API's source in the catalog, its records,
and the scoreboard row of a scenario."""

from __future__ import annotations

from typing import Any

from healing_harness import HealingSlice, ScoreboardRow, key_counts
from rest_test_server import items

RECORDS = items(23)  # five pages of five, the last one short
KEYS = {record["id"] for record in RECORDS}
MAX_ATTEMPTS = 3
"""The REST connection's retry.max_attempts in these scenarios: a fault must outlast it to fail a step."""


def rest_source(base_url: str, **connection: Any) -> dict[str, Any]:
    return {
        "source": "api",
        "connection": {
            "kind": "rest",
            "base_url": base_url,
            "retry": {"max_attempts": MAX_ATTEMPTS, "backoff_seconds": 0.05, "max_backoff_seconds": 1},
            **connection,
        },
        "entities": {
            "items": {
                "endpoint": {
                    "path": "/items",
                    "record_path": "data",
                    "pagination": {"kind": "page_number", "page_param": "page", "start": 1},
                },
                "primary_key": ["id"],
                "columns": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "updated_at": {"type": "timestamp"},
                },
            }
        },
    }


def record(
    scoreboard: list,
    name: str,
    healable: bool,
    platform: HealingSlice,
    keys: set[Any],
    *,
    in_step: tuple[str, str] | None = None,
) -> ScoreboardRow:
    """The scenario's scoreboard row: from the ledger's incident, or for a fault healed inside the step
    (`in_step` = (category, action)), from what the caller observed; data from the staged table."""
    incidents = platform.incidents()
    first = incidents[0] if incidents else None
    rows = platform.staged_rows("items", "id") if platform.results[-1].success else []
    lost, duplicated = key_counts(rows, keys) if rows else (len(keys), 0)
    if in_step is not None:
        assert first is None, "a fault healed in-step opens no incident"
        category, action = in_step
        outcome = "healed in-step" if platform.results[-1].success else "open"
    else:
        assert first is not None
        category, action = first.category, str(first.action)
        outcome = {"resolved": "healed", "escalated": "escalated"}.get(first.status, "open")
    row = ScoreboardRow(
        scenario=name,
        healable=healable,
        category=category,
        action=action,
        outcome=outcome,
        seconds_to_recover=first.time_to_recover_s if first else None,
        rows_lost=lost if healable else 0,
        rows_duplicated=duplicated,
    )
    scoreboard.append(row)
    return row
