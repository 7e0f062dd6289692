"""Placeholders in a catalog file, filled in on the parsed YAML tree so that every problem keeps its line.

`{{ name }}` takes a value from the file's `vars:` block or from the platform (e.g. `sources_dir`);
`{{ env.NAME }}` takes a non-secret environment variable; either may end in `| default("value")`. An
undefined name without a default is an error. `${NAME}` references are secrets: they stay in the text, are
only checked for presence here, and are resolved by the connector at the moment of use.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import yaml

from resources.secrets import env_references

PLACEHOLDER = re.compile(
    r"\{\{\s*(?P<name>(?:env\.)?[A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?:\|\s*default\(\s*(?:\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)')\s*\)\s*)?\}\}"
)
LEFTOVER = re.compile(r"\{\{|\}\}")


@dataclass(frozen=True)
class TemplateProblem:
    line: int
    message: str
    unset_secret: bool = False
    """A `${VAR}` whose variable is not set: not an error of the catalog (the code location loads, and the
    source's assets fail naming the variable when they run), reported as a warning."""


_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML was built with it (the wheels are): it parses a catalog file about eight
times faster than the pure-Python one, which made parsing a large part of loading a catalog of hundreds of
entities, and its nodes carry the same line marks. The pure-Python loader is the fallback."""


class DuplicateKeyLoader(_SafeLoader):
    """A YAML loader that exposes the node tree, so that duplicate keys (which plain YAML silently
    collapses, losing an entity) and placeholders can be checked with their line numbers."""


def scalar_nodes(node: yaml.Node) -> Iterator[yaml.ScalarNode]:
    if isinstance(node, yaml.ScalarNode):
        yield node
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from scalar_nodes(key)
            yield from scalar_nodes(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from scalar_nodes(item)


def duplicate_keys(node: yaml.Node) -> list[TemplateProblem]:
    problems: list[TemplateProblem] = []
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if isinstance(key, yaml.ScalarNode) and key.value in first_line:
                problems.append(
                    TemplateProblem(
                        line,
                        f"key {key.value!r} is declared twice (first on line {first_line[key.value]}); "
                        f"YAML would keep only the last one: rename or merge them",
                    )
                )
            elif isinstance(key, yaml.ScalarNode):
                first_line[key.value] = line
            problems.extend(duplicate_keys(value))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            problems.extend(duplicate_keys(item))
    return problems


def file_vars(node: yaml.Node) -> dict[str, str]:
    """The file's own `vars:` block, read before substitution (its values are literal)."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "vars" and isinstance(value, yaml.MappingNode):
                return {k.value: v.value for k, v in value.value if isinstance(v, yaml.ScalarNode)}
    return {}


def fill_placeholders(
    node: yaml.Node, variables: Mapping[str, str], environ: Mapping[str, str]
) -> list[TemplateProblem]:
    """Replace placeholders in every scalar of the tree, in place; report undefined names and missing
    secret variables."""
    problems: list[TemplateProblem] = []
    resolving: set[str] = set()
    for scalar in scalar_nodes(node):
        line = scalar.start_mark.line + 1

        def substitute(match: re.Match[str], line: int = line) -> str:
            name = match.group("name")
            default = match.group("dq") if match.group("dq") is not None else match.group("sq")
            table = environ if name.startswith("env.") else variables
            key = name.removeprefix("env.")
            if key in table and name in resolving:
                problems.append(TemplateProblem(line, f"variable {key!r} refers to itself"))
                return match.group(0)
            if key in table:
                resolving.add(name)
                value = PLACEHOLDER.sub(substitute, table[key])
                resolving.discard(name)
                return value
            if default is not None:
                return PLACEHOLDER.sub(substitute, default)
            where = "environment variable" if name.startswith("env.") else "variable"
            known = ", ".join(sorted(variables)) or "none"
            problems.append(
                TemplateProblem(
                    line,
                    f"{where} {key!r} in {{{{ {name} }}}} is not defined: declare it under `vars:`, set it, "
                    f'or give a default: {{{{ {name} | default("...") }}}} (variables: {known})',
                )
            )
            return match.group(0)

        if "{{" in scalar.value:
            if LEFTOVER.search(PLACEHOLDER.sub("", scalar.value)):
                problems.append(
                    TemplateProblem(
                        line,
                        f"malformed placeholder in {scalar.value!r}: write {{{{ name }}}}, "
                        f'{{{{ env.NAME }}}} or {{{{ name | default("value") }}}}',
                    )
                )
            scalar.value = PLACEHOLDER.sub(substitute, scalar.value)
        for name in env_references(scalar.value):
            if name not in environ:
                problems.append(
                    TemplateProblem(
                        line,
                        f"secret ${{{name}}} refers to environment variable {name}, which is not set: this "
                        f"source's assets fail until it is set where Dagster runs (the shell, the service's "
                        f"environment file, or the .env file next to workspace.yaml)",
                        unset_secret=True,
                    )
                )
    return problems
