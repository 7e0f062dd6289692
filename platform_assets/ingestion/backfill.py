"""Backfilling a range: one run that extracts again the rows of an incremental entity whose cursor lies
between `since` and `until` (both included), without moving the watermark its regular runs resume from.

A reset (`platform_assets/ingestion/reset.py`) moves the watermark back, so the next run re-reads
everything from there to now; a backfill re-reads only the range, which is what a source that fixed
January in place needs from a table that holds years. The rows read again are upserted by staging (by
primary key, the latest extraction winning), never duplicated. The run is the raw asset's materialization
like any other, its range recorded (`backfill/since`, `backfill/until`) beside an unchanged watermark.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.ingestion.reset import ResetError, refuse_without_watermark, reset_state

BACKFILL_SINCE = "backfill/since"
BACKFILL_UNTIL = "backfill/until"


@dataclass(frozen=True)
class BackfillRange:
    """The cursor range a run re-extracts: from `since` (None: the start, or `initial_value`) up to
    `until` (None: up to now)."""

    since: str | None
    until: str | None

    def describe(self) -> str:
        return f"from {self.since or 'the start'} up to {self.until or 'now'}"


def backfill_range(item: CatalogEntity, since: str | None, until: str | None) -> BackfillRange:
    """The range, checked against the entity: a ResetError (what, where, what to do) for an entity without
    a watermark, a bound its cursor cannot hold, an empty range, or an upper bound the source cannot be
    asked for."""
    refuse_without_watermark(item)
    where = f"{item.source_name}.{item.name}"
    bounds = [
        _parsed(where, name, value, _mode(item)) for name, value in (("since", since), ("until", until))
    ]
    if None not in bounds and bounds[0] > bounds[1]:  # type: ignore[operator]
        raise ResetError(f"{where}: backfill since {since!r} is after until {until!r}: an empty range")
    if until is not None:
        _refuse_unbounded_source(item, where)
    return BackfillRange(since, until)


def starting_state(
    item: CatalogEntity, previous: Mapping[str, Any], backfill: BackfillRange
) -> dict[str, Any]:
    """The extraction state the backfill starts from: the previous one, its watermark at `since`."""
    return reset_state(item, previous, backfill.since)


def state_after(previous: Mapping[str, Any], extracted: Mapping[str, Any]) -> dict[str, Any]:
    """What the next regular run resumes from after a backfill: the extraction's state (a key scan's
    time...) with the watermark it had before, so the runs after it miss nothing and read nothing twice."""
    state = {name: value for name, value in extracted.items() if name != "watermark"}
    if "watermark" in previous:
        state["watermark"] = previous["watermark"]
    return state


def _mode(item: CatalogEntity) -> str:
    table = item.entity.table
    if table is not None and table.incremental is not None:
        return table.incremental.mode
    return "text"


def _parsed(where: str, name: str, value: str | None, mode: str) -> Any:
    """A bound as a comparable value: an integer key, a timestamp, or (an API's cursor) text."""
    if value is None:
        return None
    if mode == "key":
        try:
            return int(value)
        except ValueError:
            raise ResetError(
                f"{where}: backfill {name} {value!r} is not an integer (its cursor is a key)"
            ) from None
    if mode == "timestamp":
        try:
            return datetime.fromisoformat(value).replace(tzinfo=None)
        except ValueError:
            raise ResetError(
                f"{where}: backfill {name} {value!r} is not an ISO timestamp (e.g. 2026-01-31T00:00:00)"
            ) from None
    return value


def _refuse_unbounded_source(item: CatalogEntity, where: str) -> None:
    """A ResetError for an entity whose source cannot be asked for rows up to a bound."""
    table, endpoint = item.entity.table, item.entity.endpoint
    if table is not None and table.query is not None:
        raise ResetError(
            f"{where} is extracted by a custom query, which the platform cannot bound: backfill it without "
            f"`until` (from `since` to now), or reset it."
        )
    if endpoint is not None and endpoint.incremental is not None and endpoint.incremental.until_param is None:
        raise ResetError(
            f"{where}: a backfill up to `until` needs the endpoint's `incremental.until_param` (the query "
            f"parameter the API reads an upper bound from, e.g. `updated_before`). Declare it in the "
            f"catalog, or backfill without `until` (from `since` to now)."
        )
