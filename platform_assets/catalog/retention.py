"""`retention:` in the catalog: how long an entity keeps what it accumulates beside its staged table.

Declared on a source (the default of every entity) or on an entity (its own keys override the source's):

    retention:
      landed: {days: 30}        # or {count: 1000}: landed files (and sidecars) kept after they are staged
      quarantine: {days: 90}    # quarantine rows (ops.quarantine) and set-aside record files
      rebuild: refuse           # or from_remaining: what a full rebuild does once landed files are gone

Without `retention`, nothing is removed (the behaviour before it existed). Landed files are removed only
once staging committed their rows (`platform_assets/staging/retention.py` says which ones and why);
`rebuild` exists because a full rebuild (a catalog edit, a schema change, a replay) restages from landed
files, and those retention removed can no longer be read.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RebuildAfterRetention = Literal["refuse", "from_remaining"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LandedRetention(_Strict):
    """Either `days` or `count`: a landed file older than that is removed once staged."""

    days: int | None = Field(
        default=None, ge=1, description="Keep landed files extracted within this many days."
    )
    count: int | None = Field(default=None, ge=1, description="Keep the newest this many landed files.")

    @model_validator(mode="after")
    def _one_limit(self) -> LandedRetention:
        if (self.days is None) == (self.count is None):
            raise ValueError(
                "retention.landed takes exactly one of `days` (keep files extracted within N days, e.g. "
                "{days: 30}) or `count` (keep the newest N files, e.g. {count: 1000}), each a whole number "
                "of at least 1"
            )
        return self


class DaysRetention(_Strict):
    days: int = Field(ge=1, description="Keep rows younger than this many days.")


class Retention(_Strict):
    landed: LandedRetention | None = None
    quarantine: DaysRetention | None = None
    rebuild: RebuildAfterRetention = Field(
        default="refuse",
        description="A full rebuild once retention removed landed files: `refuse` (fail, naming retention) "
        "or `from_remaining` (restage from the files left; rows only removed files held leave the table).",
    )


def inherited_retention(source: object, entity: object) -> object:
    """An entity's `retention` mapping with the source's keys it does not set itself (both as written in
    the YAML); anything else (not mappings) is returned for validation to reject."""
    if source is None:
        return entity
    if entity is None:
        return source
    if isinstance(source, dict) and isinstance(entity, dict):
        return {**source, **entity}
    return entity
