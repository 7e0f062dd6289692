"""Loads the source catalog: every `*.yaml` in the catalog directory, one source system per file.

All problems in all files are reported together, each with its file, the line of the offending key and
a hint, so a user fixes a broken catalog in one pass instead of one error per reload. Checks run in three
passes: the YAML itself (syntax, duplicate keys, placeholders), each file against the model,
then the catalog as a whole (sources declared once, references that resolve, blocks that fit their
connection). The third pass does not wait for the second to be clean: it checks every entity that is valid
on its own, and resolves references against what each file declares as written, so a mistake elsewhere in
a file neither hides an entity's bad reference nor makes references to that file look unresolved.

A `${SECRET}` whose variable is not set is no catalog error: it is logged as a warning and resolved where it
is used, so one source's missing secret fails that source's assets (naming the variable), not the code
location and every other source with it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from platform_assets.catalog.model import ENTITY_BLOCK, Entity, Source
from platform_assets.catalog.template import (
    DuplicateKeyLoader,
    duplicate_keys,
    file_vars,
    fill_placeholders,
)

logger = logging.getLogger(__name__)

CATALOG_DIR = Path(__file__).parent / "sources"
"""The catalog shipped with the platform; `PLATFORM_CATALOG_DIR` points a deployment at its own."""
DATABASE_IDENTIFIER = re.compile(r"^[^\x00-\x1f\"`]{1,63}$")
"""What a table, schema or column name in a source database may be: quoted on use, so anything printable
up to PostgreSQL's 63-byte limit, except the quote characters themselves."""


class CatalogError(ValueError):
    """The catalog is invalid; the message lists every problem found."""


@dataclass(frozen=True)
class CatalogEntity:
    """One entity with the source it belongs to: the unit the asset factories work on."""

    source: Source
    name: str
    entity: Entity

    @property
    def source_name(self) -> str:
        return self.source.source


@dataclass(frozen=True)
class _Parsed:
    path: Path
    node: yaml.Node
    document: Mapping[str, Any]
    """The file as written (placeholders filled): what the catalog pass reads names from."""
    source: Source | None
    """None when the file breaks the model (its problems are reported)."""
    entities: Mapping[str, Entity]
    """The entities that are valid on their own: all of `source`'s, or those of a file that is not."""


def load_catalog(
    directory: Path = CATALOG_DIR,
    variables: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[CatalogEntity]:
    """Every entity of every source. `variables` are the platform's placeholder values (e.g.
    `sources_dir`); `environ` is where `{{ env.X }}` and `${X}` look (the process environment by default)."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    parsed: list[_Parsed] = []
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise CatalogError(f"No source declarations (*.yaml) in {directory}.")
    for path in files:
        result = _parse_file(path, dict(variables or {}), env, problems)
        if result is not None:
            parsed.append(result)
    problems.extend(_catalog_problems(parsed))
    if problems:
        raise CatalogError("Invalid source catalog:\n  - " + "\n  - ".join(problems))
    return [
        CatalogEntity(item.source, name, entity)
        for item in parsed
        if item.source is not None
        for name, entity in item.source.entities.items()
    ]


def _parse_file(
    path: Path, variables: dict[str, str], environ: Mapping[str, str], problems: list[str]
) -> _Parsed | None:
    loader = DuplicateKeyLoader(path.read_text(encoding="utf-8"))
    try:
        node = loader.get_single_node()
        if node is None:
            problems.append(f"{path}:1: the file is empty; declare `source:`, `connection:` and `entities:`")
            return None
        template_problems = duplicate_keys(node) + fill_placeholders(
            node, {**file_vars(node), **variables}, environ
        )
        problems.extend(f"{path}:{p.line}: {p.message}" for p in template_problems if not p.unset_secret)
        for unset in (p for p in template_problems if p.unset_secret):
            logger.warning(f"{path}:{unset.line}: {unset.message}")
        document = loader.construct_document(node)
    except yaml.YAMLError as exc:
        problems.append(f"{path}: not valid YAML: {exc}")
        return None
    finally:
        loader.dispose()
    if not isinstance(document, Mapping):
        problems.append(
            f"{path}:1: the file is not a mapping; declare `source:`, `connection:` and `entities:`"
        )
        return None
    try:
        source = Source.model_validate(document)
    except ValidationError as exc:
        problems.extend(_describe(path, node, exc))
        return _Parsed(path, node, document, None, _entities_valid_alone(document))
    return _Parsed(path, node, document, source, source.entities)


def _entities_valid_alone(document: Mapping[str, Any]) -> dict[str, Entity]:
    """The entities of an invalid file that validate by themselves, for the catalog pass (their own
    errors, if any, are already among the file's)."""
    valid = {}
    for name, raw in _mapping(document.get("entities")).items():
        try:
            valid[name] = Entity.model_validate(raw)
        except ValidationError:
            continue
    return valid


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _catalog_problems(parsed: list[_Parsed]) -> list[str]:
    problems: list[str] = []
    first_file: dict[str, Path] = {}
    for item in parsed:
        name = item.document.get("source")
        if not isinstance(name, str):
            continue
        if name in first_file:
            problems.append(
                f"{item.path}:1: source {name!r} is already declared in {first_file[name]}; "
                f"merge the two files or rename one source."
            )
        first_file.setdefault(name, item.path)
    columns = {
        (item.document["source"], str(entity_name)): {
            str(column) for column in _mapping(entity.get("columns"))
        }
        for item in parsed
        if isinstance(item.document.get("source"), str)
        for entity_name, entity in _mapping(item.document.get("entities")).items()
        if isinstance(entity, Mapping)
    }
    for item in parsed:
        kind = _mapping(item.document.get("connection")).get("kind")
        for entity_name, entity in item.entities.items():
            where = ("entities", entity_name)
            for message, location in [
                *_block_problems(kind, entity),
                *_identifier_problems(entity),
                *_reference_problems(entity, columns),
            ]:
                line = _line_of(item.node, (*where, *location))
                problems.append(f"{item.path}:{line}: {'.'.join(map(str, (*where, *location)))}: {message}")
    return problems


def _block_problems(kind: object, entity: Entity) -> list[tuple[str, tuple[Any, ...]]]:
    """A connection kind the model refused (reported with the file's errors) has no block to check."""
    if kind not in ENTITY_BLOCK:
        return []
    wanted = ENTITY_BLOCK[str(kind)]
    given = [block for block in ENTITY_BLOCK.values() if getattr(entity, block) is not None]
    if given == [wanted]:
        return []
    return [
        (
            f"a {kind} source reads each entity from a `{wanted}:` block "
            f"(found: {', '.join(given) or 'none'}); declare exactly that one",
            (),
        )
    ]


def _identifier_problems(entity: Entity) -> list[tuple[str, tuple[Any, ...]]]:
    table = entity.table
    if table is None:
        return []
    named: list[tuple[str | None, tuple[Any, ...]]] = [
        (table.table, ("table", "table")),
        (table.schema_name, ("table", "schema")),
        *((column, ("table", "columns", i)) for i, column in enumerate(table.columns or [])),
    ]
    if table.incremental is not None:
        named.append((table.incremental.cursor_column, ("table", "incremental", "cursor_column")))
        named.extend(
            (column, ("table", "incremental", "tie_breaker", i))
            for i, column in enumerate(table.incremental.tie_breaker or [])
        )
    problems = [
        (
            f"{value!r} is not a valid database identifier (1-63 characters, no control characters or "
            f"quotes); use the name exactly as the database spells it",
            location,
        )
        for value, location in named
        if value is not None and not DATABASE_IDENTIFIER.match(value)
    ]
    if (table.table is None) == (table.query is None):
        problems.append(
            ("declare either `table:` or `query:` (a custom SELECT), not both or neither", ("table",))
        )
    return problems


def _reference_problems(
    entity: Entity, columns: dict[tuple[str, str], set[str]]
) -> list[tuple[str, tuple[Any, ...]]]:
    problems = []
    for name, column in entity.columns.items():
        if column.references is None:
            continue
        source, target, target_column = column.references.split(".")
        if (source, target) not in columns:
            known = ", ".join(sorted(f"{s}.{e}" for s, e in columns))
            problems.append(
                (
                    f"references {source}.{target}, which no catalog file declares (entities: {known})",
                    ("columns", name, "references"),
                )
            )
        elif target_column not in columns[(source, target)]:
            problems.append(
                (
                    f"references column {target_column!r}, which {source}.{target} does not declare "
                    f"(columns: {', '.join(sorted(columns[(source, target)]))})",
                    ("columns", name, "references"),
                )
            )
    return problems


def _describe(path: Path, node: yaml.Node, exc: ValidationError) -> list[str]:
    described = []
    for error in exc.errors():
        location = _yaml_location(node, tuple(error["loc"]))
        where = ".".join(str(part) for part in location) or "(top level)"
        described.append(f"{path}:{_line_of(node, location)}: {where}: {error['msg']}{_hint(error)}")
    return described


def _yaml_location(node: yaml.Node | None, location: tuple) -> tuple:
    """The error location as the user wrote it: pydantic inserts the chosen member of a tagged union
    (`connection.files.root`), a level the YAML does not have."""
    kept: list[Any] = []
    for index, part in enumerate(location):
        if isinstance(node, yaml.MappingNode):
            children = {key.value: value for key, value in node.value}
            following = location[index + 1] if index + 1 < len(location) else None
            if part not in children and following in children:
                continue
            node = children.get(part)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
        kept.append(part)
    return tuple(kept)


def _line_of(node: yaml.Node | None, location: tuple) -> int:
    """1-based line of the deepest YAML node that the error location reaches."""
    line = 1 if node is None else node.start_mark.line + 1
    for part in location:
        if isinstance(node, yaml.MappingNode):
            children = {key.value: (key, value) for key, value in node.value}
            if part not in children:
                break
            key, node = children[part]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _hint(error: Mapping[str, Any]) -> str:
    if error["type"] == "missing" and error["loc"][-1] == "primary_key":
        given = error["input"] if isinstance(error["input"], Mapping) else {}
        composite = (
            "; a composite `unique:` key is checked besides it and does not replace it (if it identifies "
            "a row, declare it as `primary_key:` instead)"
            if "unique" in given
            else ""
        )
        return (
            f" (every entity needs `primary_key: [column, ...]`, the declared column(s) that identify a "
            f"row: staging upserts and de-duplicates by it{composite})"
        )
    if error["type"] == "extra_forbidden":
        return " (unknown key: check its spelling against the catalog reference in README.md)"
    if error["type"] == "string_pattern_mismatch":
        return " (names are lower-case letters, digits and underscores, starting with a letter)"
    if error["type"] == "enum":
        return f" (expected one of: {error['ctx']['expected']})"
    if error["type"] == "literal_error":
        return f" (expected {error['ctx']['expected']})"
    return ""
