"""Re-delivered files: a file delivered again with changed content replaces that file.

The files extractor lands a changed file again (`platform_assets/ingestion/files.py`), beside its earlier
landed copy; every landed row names the delivered file it came from (`_file`, staged as `_origin`). The
copies of one delivered file are versions of that file, so a later copy's rows replace the earlier copy's
rows: a key the later copy no longer has is removed from the staged table, unless a file landed after the
copy that staged it holds the key (then that file's version is the current one and stays). Keys the later
copy still has follow the usual rule: each key from its latest good version (a correction that breaks a
rule leaves the version before it staged).

Withdrawing rows is something an upsert cannot do: an incremental run would have to find the staged rows
of the earlier copy and delete them in the warehouse. Instead, an incremental run whose new files include a
re-delivery rebuilds in full (`StagingSplit` withdraws the replaced rows while it builds the run's rows), so
the rule holds identically on every warehouse with no warehouse capability beyond `load`; changed
re-deliveries are rare next to new files, and the rebuild says why in `staging/reason`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from platform_assets.staging.sql import FILE_COLUMN
from resources.landing.delivered import constant_value

EarlierCopies = Callable[[Iterable[str], Iterable[Path]], set[str]]


def delivered_file(landed: Path) -> str | None:
    """The delivered file whose rows a landed file holds (one delivered file per landed file); None for
    other extractions (tables, API pages)."""
    only = constant_value(landed, FILE_COLUMN)
    return only if isinstance(only, str) else None


def redelivered(new: list[Path], delivered_before: EarlierCopies) -> list[str]:
    """The delivered files that `new` (landed files an incremental run would stage) lands again: an earlier
    copy is among the entity's other landed files (`delivered_before`: `LandedSet.delivered_before`, an
    indexed lookup), or `new` holds two copies. Their replaced rows may be staged under a key only a full
    rebuild can withdraw."""
    copies = Counter(name for name in map(delivered_file, new) if name is not None)
    earlier = delivered_before(copies, new) if copies else set()
    # Counted once (not `names.count` per name: quadratic, minutes for a rebuild of 100,000 files).
    return sorted(name for name, count in copies.items() if name in earlier or count > 1)


def no_earlier_copies(delivered: Iterable[str], excluding: Iterable[Path]) -> set[str]:
    """For `redelivered` within one set of files: no copy outside it counts."""
    return set()
