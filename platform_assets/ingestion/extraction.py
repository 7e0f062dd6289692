"""What every extractor receives and returns, whatever the kind of source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import dagster as dg
import pyarrow as pa

from platform_assets.catalog.loader import CatalogEntity
from resources.landing.zone import InFlight, LandedFile, LandingZone, Lineage


@dataclass(frozen=True)
class ExtractionContext:
    item: CatalogEntity
    landing: LandingZone
    inflight: InFlight
    lineage: Lineage
    previous_state: dict[str, Any]
    batch_rows: int
    log: dg.DagsterLogManager
    rate_scale: float = 1.0
    """The healing layer's slow-down factor of the source's request rate (APIs)."""
    until: str | None = None
    """A backfill's upper bound (`platform_assets/ingestion/backfill.py`): rows whose cursor is at most it;
    its lower bound is the watermark of `previous_state`."""
    observed_files: dict[str, float] = field(default_factory=dict)
    """Files: `path|size|version` -> when the delivery sensor first listed the file so (epoch seconds). The
    sensor launches a run once a file was stable that long; the run counts the sensor's listing as its
    first, so it lands the file instead of starting to watch it afresh."""


@dataclass(frozen=True)
class Extraction:
    """The committed result of one extraction and the state the next one starts from."""

    files: list[LandedFile]
    state: dict[str, Any]
    load_kind: Literal["snapshot", "append"]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int | None:
        """None when a landed file is a copy of the delivered bytes: staging counts its records, as it
        parses them (counting them here would parse the delivery twice)."""
        counts = [f.rows for f in self.files]
        return None if None in counts else sum(f for f in counts if f is not None)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def schema(self) -> pa.Schema | None:
        """The landed columns: the union over this run's files (text formats may differ file to file)."""
        if not self.files:
            return None
        return pa.unify_schemas([f.schema for f in self.files], promote_options="permissive")


class Extractor(Protocol):
    def kind_tag(self, item: CatalogEntity) -> str:
        """The Dagster kind shown for the source (csv, postgres, rest...)."""
        ...

    def location(self, item: CatalogEntity) -> str:
        """Where the entity comes from, for the UI; never contains a secret."""
        ...

    def extract(self, context: ExtractionContext) -> Extraction: ...


def today(context: ExtractionContext) -> str:
    """The load date partition of this extraction's files."""
    return context.lineage.extracted_at.date().isoformat()
