"""The source catalog: the YAML a data engineer writes and the code that turns it into typed entities.

`sources/*.yaml`: one file per source system (the default catalog; `PLATFORM_CATALOG_DIR` points elsewhere).
`loader` (`load_catalog`, `CatalogEntity`, `CatalogError`: every error at once, with file and line),
`model` (the pydantic models of a source and an entity), `template` (`{{ var }}` / `${SECRET}` placeholders),
`rules` (the row-level quality rules an entity declares, read by staging and quality alike).
Imports `resources` config models only, so connectors and catalog cannot drift apart.
"""
