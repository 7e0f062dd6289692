"""The soak's report, `bench/results/soak_<minutes>m.md`: every figure from the measurements of one soak,
and the issue's goals stated as met or missed from those figures (issue 23)."""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from soak_faults import EXPECTED_CATEGORY
from soak_measure import KeyDiff, Match, percentile

GOAL_FAULTS = 60
GOAL_HEALED_SHARE = 0.95
GOAL_MEDIAN_S = 60.0
GOAL_P95_S = 300.0
METRIC_PREFIX = "dataplatform_"
METRICS_SKIPPED = ("_timestamp_seconds", "freshness_lag", "freshness_state", "_host_")
"""Per-asset timestamps and host figures: long, and not what the soak scores."""
OUTCOMES = ("no effect", "absorbed", "healed", "escalated", "proposed", "open")


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def goals(result: dict[str, Any], matches: list[Match], diffs: list[KeyDiff], stuck: int) -> list[str]:
    healable = [m for m in matches if m.fault.healable and m.fault.hit]
    healed = [m for m in healable if m.outcome in ("absorbed", "healed")]
    other = [m for m in matches if not m.fault.healable and m.fault.hit]
    escalated = [
        m
        for m in other
        if m.outcome == "escalated"
        and any(i["category"] == EXPECTED_CATEGORY.get(m.fault.kind) for i in m.incidents)
    ]
    recover = [m.recover_s for m in matches if m.recover_s is not None]
    median = statistics.median(recover) if recover else None
    p95 = percentile(recover, 0.95)
    lost = sum(len(d.lost) for d in diffs)
    dup = sum(len(d.duplicated) for d in diffs)
    stale = sum(len(d.stale) for d in diffs)
    minutes = result["args"]["minutes"]
    share = len(healed) / len(healable) if healable else 1.0
    return [
        "| goal (issue 23) | measured | verdict |",
        "|---|---|---|",
        f"| 30-minute soak, >= {GOAL_FAULTS} overlapping faults | {minutes:g} min, {len(matches)} faults | "
        f"{verdict(minutes >= 30 and len(matches) >= GOAL_FAULTS)} |",
        f"| 0 rows lost, 0 duplicated, 0 stale after the quiet period | {lost} lost, {dup} duplicated, "
        f"{stale} stale | {verdict(lost == dup == stale == 0)} |",
        f"| >= 95% of healable faults healed without a human | {len(healed)} of {len(healable)} that hit "
        f"({share:.0%}) | {verdict(share >= GOAL_HEALED_SHARE)} |",
        f"| 100% of non-healable faults escalated with the right category | {len(escalated)} of {len(other)} "
        f"escalated as expected | {verdict(len(escalated) == len(other))} |",
        f"| median time to recover < 60 s | {seconds(median)} (over {len(recover)} faults with an incident "
        f"healed) | {verdict(median is not None and median < GOAL_MEDIAN_S)} |",
        f"| p95 time to recover < 5 min | {seconds(p95)} | {verdict(p95 is not None and p95 < GOAL_P95_S)} |",
        f"| no run stuck | {stuck} | {verdict(stuck == 0)} |",
    ]


def fault_table(matches: list[Match]) -> list[str]:
    lines = [f"| kind | injected | healable | {' | '.join(OUTCOMES)} |", "|---" * (3 + len(OUTCOMES)) + "|"]
    kinds = sorted({m.fault.kind for m in matches})
    for kind in kinds:
        of_kind = [m for m in matches if m.fault.kind == kind]
        outcomes = Counter(m.outcome for m in of_kind)
        lines.append(
            f"| {kind} | {len(of_kind)} | {'yes' if of_kind[0].fault.healable else 'no'} | "
            + " | ".join(str(outcomes[o]) for o in OUTCOMES)
            + " |"
        )
    return lines


def fault_log(matches: list[Match], origin: float) -> list[str]:
    lines = [
        "| t (s) | kind | detail | incidents (category / action / status) | recover |",
        "|---|---|---|---|---|",
    ]
    for m in matches:
        found = "; ".join(f"{i['category']} / {i['action']} / {i['status']}" for i in m.incidents) or "none"
        lines.append(
            f"| {m.fault.started_at - origin:.0f} | {m.fault.kind} | {m.fault.detail} | {found} | "
            f"{seconds(m.recover_s)} |"
        )
    return lines


def diff_table(diffs: list[KeyDiff]) -> list[str]:
    lines = ["| table | keys expected | lost | duplicated | stale | examples |", "|---|---|---|---|---|---|"]
    for d in diffs:
        examples = (d.lost[:3] + d.duplicated[:3] + d.stale[:3])[:4]
        lines.append(
            f"| `{d.table}` | {d.expected} | {len(d.lost)} | {len(d.duplicated)} | {len(d.stale)} | "
            f"{', '.join(map(str, examples)) or '-'} |"
        )
    return lines


def metric_lines(text: str) -> list[str]:
    kept = [
        line for line in text.splitlines() if line.startswith(METRIC_PREFIX) and not line.endswith(" 0.0")
    ]
    return ["```", *kept[:60], *(["... (more)"] if len(kept) > 60 else []), "```"]


def write_report(path: Path, result: dict[str, Any]) -> None:
    matches: list[Match] = result["matches"]
    diffs: list[KeyDiff] = result["diffs"]
    runs: dict[str, int] = result["runs"]
    stuck = sum(n for status, n in runs.items() if status not in ("SUCCESS", "FAILURE", "CANCELED"))
    origin = result["soak_start"]
    args = result["args"]
    phases = result["phases"]
    unmatched = result["unmatched"]
    lines = [
        f"# Chaos soak, {args['minutes']:g} minutes, seed {args['seed']}",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        f"`bench/soak.py --minutes {args['minutes']:g} "
        f"--seed {args['seed']}` (deliveries every {args['interval']:g} s, quiet period at least "
        f"{args['quiet']:g} s) on a shared 2-CPU machine. How it works and what it does not do yet: "
        "`bench/README.md`, Chaos soak.",
        "",
        "## Goals",
        "",
        *goals(result, matches, diffs, stuck),
        "",
        "Absorbed: the fault broke something (a request refused, a connection or a run worker killed, a file",
        "changed) and opened no incident: healed inside the step (the REST client's retries, the step's own",
        "retry, a run retry of a crashed run), or nothing in flight noticed. No effect: it met nothing to",
        "break, is not scored. Time to recover is from the fault's start to the last of its incidents",
        "resolved; absorbed faults have none.",
        "",
        "## Faults by kind",
        "",
        *fault_table(matches),
        "",
        "## Every fault",
        "",
        *fault_log(matches, origin),
        "",
        f"Incidents matched to no fault: {len(unmatched)}"
        + (
            ": "
            + "; ".join(
                f"{i['category']} / {i['action']} / {i['status']} ({i['asset_key']})" for i in unmatched[:8]
            )
            if unmatched
            else ""
        ),
        "",
        "## Data after the quiet period (keys the soak touched)",
        "",
        *diff_table(diffs),
        "",
        "Deliveries: "
        + ", ".join(f"{k} {v}" for k, v in sorted(result["deliveries"].items()))
        + f"; delivery errors (a source down during a fault): {len(result['delivery_errors'])}.",
        "",
        "## Runs",
        "",
        "By status at the end: "
        + ", ".join(f"{k} {v}" for k, v in sorted(runs.items()))
        + f"; stuck: {stuck}.",
        "",
        "## Cost",
        "",
        f"- daemon process group: {result['daemon_cpu_s']:.0f} CPU seconds over the soak and quiet period "
        f"(sampled every second, killed daemons' last samples included), peak RSS "
        f"{result['daemon_peak_rss'] / 2**20:.0f} MiB",
        f"- instance database: {result['instance']['event_log_rows']} rows in `event_logs`, "
        f"{result['instance']['database_bytes'] / 2**20:.0f} MiB",
        "",
        "## Duration, end to end",
        "",
        "| phase | seconds |",
        "|---|---|",
        *(f"| {name} | {value:.0f} |" for name, value in phases.items()),
        "",
        "## Prometheus metrics at the end (non-zero `dataplatform_*` samples)",
        "",
        *metric_lines(result["metrics"]),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(re.sub(r"\n{3,}", "\n\n", "\n".join(lines)))
