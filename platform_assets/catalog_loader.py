"""Loads the source catalog: every `*.yaml` in the catalog directory, one source system per file.

All problems in all files are reported together, each with its file, line and a hint, so a user fixes a
broken catalog in one pass instead of one error per reload.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from platform_assets.catalog_model import Entity, Source

CATALOG_DIR = Path(__file__).parent / "catalog"


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


def load_catalog(directory: Path = CATALOG_DIR) -> list[CatalogEntity]:
    problems: list[str] = []
    sources: list[Source] = []
    seen: dict[str, Path] = {}
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise CatalogError(f"No source declarations (*.yaml) in {directory}.")
    for path in files:
        text = path.read_text(encoding="utf-8")
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            problems.append(f"{path}: not valid YAML: {exc}")
            continue
        try:
            source = Source.model_validate(document)
        except ValidationError as exc:
            problems.extend(_describe(path, text, exc))
            continue
        if source.source in seen:
            problems.append(
                f"{path}: source {source.source!r} is already declared in {seen[source.source]}; "
                f"merge the two files or rename one source."
            )
            continue
        seen[source.source] = path
        sources.append(source)
    if problems:
        raise CatalogError("Invalid source catalog:\n  - " + "\n  - ".join(problems))
    return [
        CatalogEntity(source, name, entity) for source in sources for name, entity in source.entities.items()
    ]


def _describe(path: Path, text: str, exc: ValidationError) -> list[str]:
    node = yaml.compose(text)
    described = []
    for error in exc.errors():
        location = tuple(error["loc"])
        where = ".".join(str(part) for part in location) or "(top level)"
        line = _line_of(node, location)
        hint = _hint(error)
        described.append(f"{path}:{line}: {where}: {error['msg']}{hint}")
    return described


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


def _hint(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return " (unknown key: check its spelling against the catalog reference in README.md)"
    if error["type"] == "string_pattern_mismatch":
        return " (names are lower-case letters, digits and underscores, starting with a letter)"
    if error["type"] == "enum":
        return f" (expected one of: {error['ctx']['expected']})"
    return ""
