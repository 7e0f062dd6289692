"""Every data-quality check of the staged layer besides the schema contract: per staged entity, the
anomaly checks (`volume_anomaly`, `null_rate_drift`, `mean_shift`: one step, warn only) and, for an entity
with `references`, the `relationships` check."""

import dagster as dg

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.quality.anomaly_checks import build_anomaly_checks
from platform_assets.quality.relationship_checks import build_relationship_check


def build_quality_checks(catalog: list[CatalogEntity]) -> list[dg.AssetChecksDefinition]:
    checks: list[dg.AssetChecksDefinition] = []
    for item in catalog:
        checks.extend(build_anomaly_checks(item))
        relationships = build_relationship_check(item, catalog)
        if relationships is not None:
            checks.append(relationships)
    return checks
