"""Staging: how a landed delivery becomes a typed staged table.

`plan` (full or incremental, and why), `sql` (the typed select with lineage and rule columns),
`schema_registry` (the delivered schema as logical types, versioned), `schema_evolution` (what a change
does under the entity's `schema_evolution`). Reads the catalog; knows nothing of checks or assets.
"""
