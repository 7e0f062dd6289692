"""The extractor of each connection kind."""

from __future__ import annotations

from platform_assets.ingestion.database import DatabaseExtractor
from platform_assets.ingestion.extraction import Extractor
from platform_assets.ingestion.files import FilesExtractor
from platform_assets.ingestion.rest import RestExtractor

EXTRACTORS: dict[str, Extractor] = {
    "files": FilesExtractor(),
    "database": DatabaseExtractor(),
    "rest": RestExtractor(),
}
