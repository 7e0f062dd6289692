"""Whether a delivered file is ready to land, or still being written.

A file copied into a drop folder (or uploaded in parts) is listed while it grows; landing it then lands half
a file, exactly once. Two declared signals hold it back, and the raw asset and the delivery sensor both ask
them here, so a sensor never launches a run for a file the run would not land:

- `stable_after_seconds`: the file's size and version (local mtime, GCS generation) were the same in two
  listings at least that many seconds apart. The first listing's observation is remembered by the caller
  (the raw asset in its extraction state, the sensor in its cursor) and handed back on the next call.
- `ready_marker`: a file beside it says the writer is done: `_SUCCESS` (one marker for the directory),
  `{name}.done` (one per file; `{stem}` is the name without its last suffix). Markers are never landed.

Both are off by default: a file is ready as soon as it is listed, as before these options existed.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from resources.files.store import FileFingerprint, FileStore

MARKER_PLACEHOLDERS = ("{name}", "{stem}")
_PLACEHOLDER = re.compile(r"(\{name\}|\{stem\})")
_GLOB_CHARACTERS = set("*?[]")

Observations = dict[str, dict[str, Any]]
"""path -> {"size", "version", "since"}: the file as first listed unchanged, `since` in epoch seconds."""


@dataclass(frozen=True)
class Readiness:
    """When a listed file may land: unchanged for `stable_after_seconds`, and its `ready_marker` present."""

    stable_after_seconds: float = 0
    ready_marker: str | None = None

    @property
    def waits(self) -> bool:
        """Whether anything can hold a file back (the defaults land every listed file at once)."""
        return self.stable_after_seconds > 0 or self.ready_marker is not None


@dataclass(frozen=True)
class Sorted:
    """A listing sorted by readiness: the files to land, those to wait for (with why), and the
    observations to remember until the next listing."""

    ready: list[FileFingerprint]
    waiting: dict[str, str] = field(default_factory=dict)
    observed: Observations = field(default_factory=dict)


def marker_problem(template: str) -> str | None:
    """What is wrong with a `ready_marker` declaration, for the catalog's error; None when it is usable."""
    if "/" in template or "\\" in template:
        return "names a file in the delivered file's own directory: no directory part"
    if _GLOB_CHARACTERS & set(template):
        return "is a file name (with {name} or {stem}), not a glob"
    rest = _PLACEHOLDER.sub("", template)
    if "{" in rest or "}" in rest:
        return (
            "knows only the placeholders {name} (the delivered file's name) and {stem} (without its suffix)"
        )
    if not rest.strip(".").strip():
        return "must name a file other than the delivered one (e.g. `_SUCCESS` or `{name}.done`)"
    return None


def marker_of(path: str, template: str) -> str:
    """The marker that says the file at `path` is complete (relative to the store's root)."""
    directory, name = posixpath.split(path)
    stem = posixpath.splitext(name)[0]
    return posixpath.join(directory, template.replace("{name}", name).replace("{stem}", stem))


def is_marker(path: str, template: str | None) -> bool:
    """Whether a listed file is itself a marker (the entity's glob may match `*.done` too): never landed."""
    if template is None:
        return False
    pattern = "".join(
        ".+" if part in MARKER_PLACEHOLDERS else re.escape(part) for part in _PLACEHOLDER.split(template)
    )
    return re.fullmatch(pattern, posixpath.basename(path)) is not None


def sort_by_readiness(
    store: FileStore,
    files: list[FileFingerprint],
    readiness: Readiness,
    observed: Mapping[str, Mapping[str, Any]],
    now: float,
) -> Sorted:
    """Split `files` (listed, not yet landed as they are) into ready and waiting at wall-clock time `now`
    (epoch seconds: observations outlive the process that made them). `observed` is what the previous
    listing remembered; a file whose size or version changed since is observed afresh."""
    if not readiness.waits:
        return Sorted(list(files))
    ready: list[FileFingerprint] = []
    waiting: dict[str, str] = {}
    remembered: Observations = {}
    markers: dict[str, bool] = {}
    for file in files:
        reasons = []
        seen = observed.get(file.path)
        if seen is None or (seen["size"], seen["version"]) != (file.size, file.version):
            seen = {"size": file.size, "version": file.version, "since": now}
        if readiness.stable_after_seconds > 0:
            unchanged_for = now - float(seen["since"])
            if unchanged_for < readiness.stable_after_seconds:
                reasons.append(
                    f"unchanged for {unchanged_for:.1f} of {readiness.stable_after_seconds:g} s "
                    f"({file.size} bytes)"
                )
        if readiness.ready_marker is not None:
            marker = marker_of(file.path, readiness.ready_marker)
            if marker not in markers:
                markers[marker] = store.exists(marker)
            if not markers[marker]:
                reasons.append(f"no ready marker {marker}")
        if reasons:
            waiting[file.path] = "; ".join(reasons)
            remembered[file.path] = dict(seen)  # a file stable while its marker is missing stays stable
        else:
            ready.append(file)
    return Sorted(ready, waiting, remembered)
