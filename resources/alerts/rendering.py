"""What an alert says: a group of `Alert`s turned into one `RenderedAlert` that every channel can show.

Why masking happens here and not only in the channels: a channel can redact the secrets it *knows*, but an
alert's evidence quotes error messages written by drivers and servers, which may carry credentials nobody
declared (`postgresql://etl:pw@db`, `Authorization: Bearer ...`, `?api_key=...`). So every text is passed
through `mask_credentials`, which recognises those shapes, before a channel sees it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from resources.alerts.channels import SEVERITY_ORDER, Alert, AlertKind, AlertSection, RenderedAlert, Severity
from resources.secrets import REDACTED

_MAX_EVIDENCE = 1500
"""Characters of evidence JSON shown per alert: the gist fits; the healing ledger keeps the whole."""
_MAX_SECTIONS = 10
"""Alerts shown one by one in a grouped message; the rest are counted (chat cards have size limits)."""

_SECRET_WORD = r"[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|credentials?)"
_CREDENTIAL_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://user:***@host (the last @ before the path: passwords hold @)
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^\s/]+@"), rf"\g<1>{REDACTED}@"),
    # Authorization: Bearer xyz / Authorization: Basic xyz / "authorization": "xyz"
    (re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token)\s+)?)[^\s\"',;]+"),
     rf"\g<1>{REDACTED}"),
    # a bearer token quoted without its header
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\g<1>{REDACTED}"),
    # password=xyz, "api_key": "xyz", token: xyz, ?access_token=xyz
    (re.compile(rf"(?i)(\b{_SECRET_WORD}[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s&,;\"'}}\]]+)"),
     rf"\g<1>{REDACTED}"),
)  # fmt: skip
_SECRET_KEY = re.compile(rf"(?i)^{_SECRET_WORD}$|^authorization$")

KIND_LABELS: Mapping[AlertKind, str] = {
    "incident": "Incident",
    "proposal": "Approval needed",
    "escalation": "Escalation",
    "reminder": "Still failing",
    "resolution": "Resolved",
}
_KIND_URGENCY: Mapping[AlertKind, int] = {
    "resolution": 0, "incident": 1, "proposal": 2, "reminder": 3, "escalation": 3,
}  # fmt: skip


def mask_credentials(text: str) -> str:
    """`text` with credential-shaped substrings masked; idempotent, so masking twice is harmless."""
    for pattern, replacement in _CREDENTIAL_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def mask_value(value: Any) -> Any:
    """A JSON-able value with credentials masked: strings by shape, and whole values under secret keys."""
    if isinstance(value, str):
        return mask_credentials(value)
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if _SECRET_KEY.match(str(k)) and v not in (None, "") else mask_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_value(item) for item in value]
    return value


def mask_alert(alert: Alert) -> Alert:
    """`alert` with every text and the evidence masked (what may be stored or sent)."""
    return Alert.from_dict(mask_value(alert.as_dict()))


def render(alerts: Sequence[Alert], *, follow_up: bool = False) -> RenderedAlert:
    """One message for `alerts` (one alert, or a group with the same root asset). `follow_up` marks the
    message that gathers the alerts held back while a group's window was open."""
    if not alerts:
        raise ValueError("render needs at least one alert")
    masked = [mask_alert(alert) for alert in alerts]
    kind = max((a.kind for a in masked), key=_KIND_URGENCY.__getitem__)
    severity: Severity = max((a.severity for a in masked), key=SEVERITY_ORDER.__getitem__)
    sections = [_section(alert) for alert in masked[:_MAX_SECTIONS]]
    if len(masked) > _MAX_SECTIONS:
        sections.append(AlertSection(f"... and {len(masked) - _MAX_SECTIONS} more", (), ()))
    return RenderedAlert(
        headline=_headline(masked, severity, follow_up),
        kind=kind,
        severity=severity,
        sections=tuple(sections),
        data={"group_key": masked[0].group_key, "alerts": [alert.as_dict() for alert in masked]},
    )


def _headline(alerts: Sequence[Alert], severity: Severity, follow_up: bool) -> str:
    if len(alerts) == 1 and not follow_up:
        alert = alerts[0]
        return f"[{severity.upper()}] {KIND_LABELS[alert.kind]}: {alert.title}"
    count = f"{len(alerts)} more alert{'s' if len(alerts) > 1 else ''}"
    return f"[{severity.upper()}] {count} for {alerts[0].group_key}: {alerts[-1].title}"


def _section(alert: Alert) -> AlertSection:
    facts = [
        ("Severity", alert.severity),
        ("Category", alert.category),
        ("Confidence", f"{alert.confidence:.0%}"),
        ("Asset", alert.asset_key or "-"),
        ("Source", alert.source or "-"),
        ("Incident", alert.incident_id),
        ("Opened", alert.opened_at.isoformat(timespec="seconds")),
    ]
    if alert.deadline:
        facts.append(("Deadline", alert.deadline.isoformat(timespec="seconds")))
    lines = [f"Diagnosis: {alert.diagnosis}"]
    if alert.action:
        lines.append(f"{'Proposed action' if alert.kind == 'proposal' else 'Action'}: {alert.action}")
    if alert.approve_hint:
        lines.append(f"To approve: {alert.approve_hint}")
    if alert.kind == "resolution":
        lines.append("The incident is resolved: the asset healed and no action is needed.")
    if alert.evidence:
        evidence = json.dumps(alert.evidence, default=str, sort_keys=True)
        cut = evidence if len(evidence) <= _MAX_EVIDENCE else evidence[:_MAX_EVIDENCE] + "…"
        lines.append(f"Evidence: {cut}")
    return AlertSection(f"{KIND_LABELS[alert.kind]}: {alert.title}", tuple(facts), tuple(lines))
