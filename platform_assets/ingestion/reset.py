"""Resetting an entity's extraction state: what its next extraction starts from, moved back on purpose.

An incremental table or API resumes from the watermark its raw asset's latest materialization recorded
(`platform_assets/factories/raw_assets.py`). To re-extract a range (a source fixed its rows in place, a
bug staged a range wrong), the watermark is moved back to a chosen point, or forgotten (the next run reads
everything, from `initial_value` when one is declared). The rows read again are not duplicated: staging
upserts them by primary key, the latest extraction winning.

A reset is itself a materialization of the raw asset, recorded before the next run reads it: it names who
asked and why, the state before (`reset/previous_state`) and after, so it is auditable, and undoable
(`undo`: the state before the latest reset, as long as no run has landed since). It lands nothing.

Files are not reset here: a delivered file lands once per content (its ledger entry), as the bytes
delivered, so there is nothing to extract again; what a fixed rule or bug needs is staging them again
(`dataplatform replay`). Forgetting ledger entries would not help either: a file whose landed copy still
exists is recognised and not landed twice, and one whose copy retention removed lands again only if the
source still holds it. Re-delivering a changed file replaces its rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from platform_assets.catalog.loader import CatalogEntity

RESET_PREVIOUS_STATE = "reset/previous_state"
RESET_SINCE = "reset/since"
RESET_BY = "reset/by"
RESET_REASON = "reset/reason"
RESET_UNDONE = "reset/undoes"
_BEFORE = timedelta(microseconds=1)


class ResetError(ValueError):
    """A reset that cannot be made: which entity, why, what to do instead."""


def reset_state(item: CatalogEntity, state: Mapping[str, Any], since: str | None) -> dict[str, Any]:
    """The extraction state that makes the next run of `item` read again from `since` (a timestamp or a
    key, as the cursor holds it: rows whose cursor is at or after it), or from the start when None."""
    refuse_without_watermark(item)
    kept = {name: value for name, value in state.items() if name != "watermark"}
    if since is None:
        return kept
    table = item.entity.table
    if table is not None and table.incremental is not None:
        cursor = table.incremental
        watermark = {"cursor_column": cursor.cursor_column, "cursor": _just_before(since, cursor.mode)}
        return {**kept, "watermark": watermark}
    return {**kept, "watermark": since}


def entities_named(catalog: Sequence[CatalogEntity], names: Sequence[str]) -> list[CatalogEntity]:
    """The entities `names` name: `source.entity`, or `source` for its incremental ones; a ResetError
    listing what exists for a name the catalog lacks."""
    by_name = {f"{item.source_name}.{item.name}": item for item in catalog}
    selected: list[CatalogEntity] = []
    for name in names:
        if name in by_name:
            selected.append(by_name[name])
            continue
        of_source = [
            item for full, item in by_name.items() if full.split(".")[0] == name and has_watermark(item)
        ]
        if not of_source:
            raise ResetError(
                f"{name!r} is no entity or source with incremental entities in the catalog (entities: "
                f"{', '.join(sorted(by_name)[:20])})"
            )
        selected.extend(of_source)
    return selected


def has_watermark(item: CatalogEntity) -> bool:
    """Whether the entity's extraction resumes from a watermark (an incremental table or API)."""
    table, endpoint = item.entity.table, item.entity.endpoint
    return (table is not None and table.incremental is not None) or (
        endpoint is not None and endpoint.incremental is not None
    )


def refuse_without_watermark(item: CatalogEntity) -> None:
    """A ResetError, saying what to do instead, for an entity whose extraction has no watermark."""
    if has_watermark(item):
        return
    where = f"{item.source_name}.{item.name}"
    if item.entity.file is not None:
        raise ResetError(
            f"{where} is a file entity: each delivered file lands once per content, as the bytes delivered. "
            f"To stage its landed files again (a rule or a bug fixed), run `dataplatform replay {where}`; to "
            f"land a file again, deliver it again changed (its rows replace the earlier ones)."
        )
    raise ResetError(f"{where} is extracted whole on every run: it has no watermark to reset.")


def _just_before(since: str, mode: str) -> object:
    """A table cursor just before `since`, so that `cursor > watermark` reads the rows at `since` too: one
    microsecond before a timestamp (written with the separator `since` uses, so that a cursor stored as
    text, `2026-01-06 22:59:55`, compares right), one before a key."""
    if mode == "key":
        try:
            return int(since) - 1
        except ValueError:
            raise ResetError(f"--since {since!r}: a key-mode cursor is an integer") from None
    try:
        return (datetime.fromisoformat(since) - _BEFORE).isoformat(sep=" " if " " in since else "T")
    except ValueError:
        raise ResetError(f"--since {since!r} is not an ISO timestamp (e.g. 2026-01-31T00:00:00)") from None
