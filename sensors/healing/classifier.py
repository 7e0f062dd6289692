"""The failure classifier: turns a failed step, a failed asset check, a stale asset or a crashed run into a
`Diagnosis` (category, confidence, the rule that decided and a sentence for the alert).

Why rules in data: what counts as "a 429 is rate limited" is policy that operators tune and review, so the
ordered table lives in `failure_rules.yaml` (first match wins) and this module only knows how to read the
evidence and match it. The rules name exception classes by their simple class name, never by import, so
that `sensors/` stays independent of `platform_assets/` and of optional drivers.

Evidence comes from live exceptions or from Dagster's `SerializableErrorInfo` (what the event log keeps).
Both are walked through `__cause__` / `__context__` (outermost first), and Dagster's user-code wrappers
("Error occurred while executing op ...") are left out: they say where the error happened, not why. HTTP
status and SQLSTATE are taken from attributes when the exception is live (`status_code`,
`response.status_code`, `sqlstate`, `pgcode`) and from the message text otherwise ("HTTP 429",
"401 Client Error", "SQLSTATE 57014"), since serialization keeps only class names and messages.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
import yaml
from dagster._utils.error import SerializableErrorInfo
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_RULES_PATH = Path(__file__).with_name("failure_rules.yaml")
EvidenceKind = Literal["step_failure", "check_failure", "freshness", "run_crash"]

_MAX_CHAIN = 32
"""Errors read per chain: a guard against cycles and pathological nesting, far above real chains."""
_HTTP_IN_MESSAGE = (re.compile(r"\bHTTP (\d{3})\b"), re.compile(r"\b(\d{3}) (?:Client|Server) Error\b"))
_SQLSTATE_IN_MESSAGE = re.compile(r"\bSQLSTATE[\s:=]*\(?([0-9A-Z]{5})\b")
_SQLSTATE_PATTERN = re.compile(r"[0-9A-Z]{5}|[0-9A-Z]{1,4}\*")
_STATUS_PATTERN = re.compile(r"(\d{3})(?:-(\d{3}))?")


class Category(StrEnum):
    transient_network = "transient_network"
    timeout = "timeout"
    rate_limited = "rate_limited"
    source_unavailable = "source_unavailable"
    auth_permission = "auth_permission"
    schema_drift = "schema_drift"
    data_quality = "data_quality"
    volume_anomaly = "volume_anomaly"
    stale_upstream = "stale_upstream"
    resource_exhausted = "resource_exhausted"
    interrupted = "interrupted"
    configuration_error = "configuration_error"
    code_defect = "code_defect"
    unknown = "unknown"


@dataclass(frozen=True)
class ErrorLink:
    """One error of a chain: its simple class name and its message without the `module.Class: ` prefix."""

    class_name: str
    message: str


@dataclass(frozen=True)
class Evidence:
    """Everything the rules may look at, and what the healing ledger records about the failure."""

    kind: EvidenceKind
    asset_key: str | None
    """The asset's user string (`staged/shop/orders`)."""
    run_id: str | None
    errors: tuple[ErrorLink, ...] = ()
    """Outermost first, then causes and contexts; Dagster's wrappers left out."""
    http_status: int | None = None
    sqlstate: str | None = None
    check_name: str | None = None
    check_metadata: Mapping[str, object] = field(default_factory=dict)
    """A failed check's metadata values (unwrapped), or a stale asset's lag and policy."""
    step_key: str | None = None
    occurred_at: float | None = None
    """When the failure happened (Unix seconds: the failure event's own timestamp), so that an incident's
    time to recover counts from the failure, not from when the sensor got round to reading it."""
    op_config: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    """The failed run's own op config by step (minus the healing parameters), which a retry repeats: what
    the run was asked to do (a backfill's range) is part of the run, not of the failure."""

    def as_dict(self) -> dict[str, Any]:
        """A `json.dumps`-able form for the ledger and alerts; values JSON cannot hold become text."""
        return {
            "kind": self.kind,
            "asset_key": self.asset_key,
            "run_id": self.run_id,
            "step_key": self.step_key,
            "errors": [{"class_name": e.class_name, "message": e.message} for e in self.errors],
            "http_status": self.http_status,
            "sqlstate": self.sqlstate,
            "check_name": self.check_name,
            "check_metadata": {str(k): _jsonable(v) for k, v in self.check_metadata.items()},
            "occurred_at": self.occurred_at,
            "op_config": {step: dict(config) for step, config in self.op_config.items()},
        }


@dataclass(frozen=True)
class Diagnosis:
    category: Category
    confidence: float
    rule_id: str
    explanation: str
    evidence: Evidence


class FailureRuleError(ValueError):
    """The rule file is invalid: names the file and the rule."""


def _as_tuple(value: object) -> tuple[object, ...]:
    """Lets a rule write a single value where a list is expected (`http_status: 429`)."""
    if isinstance(value, str | int):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(value)
    raise ValueError("expected a list")


class Rule(BaseModel):
    """One row of the rule table. Every match field given must match; none given matches everything."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    category: Category
    confidence: Annotated[float, Field(ge=0, le=1)]
    explanation: Annotated[str, Field(min_length=1)]
    exception: tuple[str, ...] = ()
    message: tuple[re.Pattern[str], ...] = ()
    http_status: tuple[tuple[int, int], ...] = ()
    sqlstate: tuple[str, ...] = ()
    evidence_kind: tuple[EvidenceKind, ...] = ()
    check_name: tuple[str, ...] = ()
    metadata_has: tuple[str, ...] = ()

    _as_tuples = field_validator(
        "exception", "sqlstate", "evidence_kind", "check_name", "metadata_has", mode="before"
    )(_as_tuple)

    @field_validator("message", mode="before")
    @classmethod
    def _compile(cls, value: object) -> tuple[re.Pattern[str], ...]:
        compiled = []
        for pattern in _as_tuple(value):
            try:
                compiled.append(re.compile(pattern, re.IGNORECASE))
            except re.error as error:
                raise ValueError(f"regex {pattern!r} does not compile: {error}") from None
        return tuple(compiled)

    @field_validator("http_status", mode="before")
    @classmethod
    def _status_ranges(cls, value: object) -> tuple[tuple[int, int], ...]:
        ranges = []
        for item in _as_tuple(value):
            found = _STATUS_PATTERN.fullmatch(str(item).strip())
            if found is None:
                raise ValueError(f"http_status {item!r} is neither a status code nor a range like '500-599'")
            low = int(found.group(1))
            ranges.append((low, int(found.group(2) or low)))
        return tuple(ranges)

    @field_validator("sqlstate")
    @classmethod
    def _sqlstates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [code for code in value if not _SQLSTATE_PATTERN.fullmatch(code)]
        if bad:
            raise ValueError(f"sqlstate {bad} must be 5-character codes or class prefixes like '08*'")
        return value

    @property
    def is_catch_all(self) -> bool:
        return not (
            self.exception
            or self.message
            or self.http_status
            or self.sqlstate
            or self.evidence_kind
            or self.check_name
            or self.metadata_has
        )

    def matches(self, evidence: Evidence) -> bool:
        if self.evidence_kind and evidence.kind not in self.evidence_kind:
            return False
        if self.check_name and evidence.check_name not in self.check_name:
            return False
        if any(key not in evidence.check_metadata for key in self.metadata_has):
            return False
        if self.http_status and not (
            evidence.http_status is not None
            and any(low <= evidence.http_status <= high for low, high in self.http_status)
        ):
            return False
        if self.sqlstate and not (
            evidence.sqlstate is not None
            and any(_sqlstate_matches(c, evidence.sqlstate) for c in self.sqlstate)
        ):
            return False
        if self.exception or self.message:
            return any(self._matches_error(error) for error in evidence.errors)
        return True

    def _matches_error(self, error: ErrorLink) -> bool:
        if self.exception and error.class_name not in self.exception:
            return False
        return not self.message or any(p.search(error.message) for p in self.message)


def load_rules(path: Path | str = DEFAULT_RULES_PATH) -> list[Rule]:
    """The ordered rules of `path`, validated so that a bad edit fails loudly when loaded, not by
    silently misclassifying: unknown fields or categories, bad regexes, duplicate ids, and a catch-all
    anywhere but last (it would shadow every rule after it) or missing (classify must always answer)."""
    path = Path(path)
    document = yaml.safe_load(path.read_text())
    raw_rules = document.get("rules") if isinstance(document, dict) else None
    if not isinstance(raw_rules, list) or not raw_rules:
        raise FailureRuleError(f"{path}: expected a non-empty list under `rules:`")
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        name = raw.get("id", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
        try:
            rule = Rule.model_validate(raw)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in error.errors()
            )
            raise FailureRuleError(f"{path}: rule {name!r}: {problems}") from None
        if rule.id in seen:
            raise FailureRuleError(f"{path}: rule {rule.id!r}: duplicate id")
        if rule.is_catch_all and index != len(raw_rules) - 1:
            raise FailureRuleError(f"{path}: rule {rule.id!r} matches everything but is not the last rule")
        seen.add(rule.id)
        rules.append(rule)
    if not rules[-1].is_catch_all:
        raise FailureRuleError(f"{path}: rule {rules[-1].id!r}: the last rule must be a catch-all")
    return rules


@functools.cache
def _default_rules() -> tuple[Rule, ...]:
    return tuple(load_rules())


def classify(evidence: Evidence, rules: list[Rule] | None = None) -> Diagnosis:
    """The diagnosis of the first rule that matches (rule tables end with a catch-all)."""
    for rule in _default_rules() if rules is None else rules:
        if rule.matches(evidence):
            return Diagnosis(rule.category, rule.confidence, rule.id, rule.explanation, evidence)
    raise FailureRuleError("no rule matched: the rule table has no catch-all")


def evidence_from_error(
    error: SerializableErrorInfo | BaseException,
    *,
    kind: EvidenceKind,
    asset_key: str | dg.AssetKey | None = None,
    run_id: str | None = None,
    step_key: str | None = None,
    occurred_at: float | None = None,
) -> Evidence:
    """Evidence of a failed step or crashed run from a live exception or one Dagster recorded."""
    chain = list(_chain(error))
    links = tuple(link for link, _ in chain)
    statuses = (_http_status(link, live) for link, live in chain)
    sqlstates = (_sqlstate(link, live) for link, live in chain)
    return Evidence(
        kind=kind,
        asset_key=_key_string(asset_key),
        run_id=run_id,
        errors=links,
        http_status=next((s for s in statuses if s is not None), None),
        sqlstate=next((s for s in sqlstates if s is not None), None),
        step_key=step_key,
        occurred_at=occurred_at,
    )


def evidence_from_check(evaluation: dg.AssetCheckEvaluation, run_id: str | None = None) -> Evidence:
    """Evidence of a failed asset check: its name and metadata values, unwrapped from `MetadataValue`."""
    metadata = {name: _unwrapped(value) for name, value in evaluation.metadata.items()}
    return Evidence(
        kind="check_failure",
        asset_key=evaluation.asset_key.to_user_string(),
        run_id=run_id,
        check_name=evaluation.check_name,
        check_metadata=metadata,
    )


def evidence_from_freshness(
    asset_key: str | dg.AssetKey, lag_seconds: float | None, *, details: Mapping[str, object] | None = None
) -> Evidence:
    """Evidence of a stale asset; `lag_seconds` (None when never materialized) and `details` (the policy's
    windows, the state) land in `check_metadata` for the alert."""
    return Evidence(
        kind="freshness",
        asset_key=_key_string(asset_key),
        run_id=None,
        check_metadata={"lag_seconds": lag_seconds, **(details or {})},
    )


ChainItem = tuple[ErrorLink, BaseException | None]
"""A link, with the live exception it came from (None for a recorded one) for attribute look-ups."""


def _chain(error: SerializableErrorInfo | BaseException) -> Iterator[ChainItem]:
    """Depth first: each error, then its cause, then its context (Python's own order of display)."""
    pending: list[SerializableErrorInfo | BaseException] = [error]
    seen: set[int] = set()
    while pending and len(seen) < _MAX_CHAIN:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BaseException):
            context = None if current.__suppress_context__ else current.__context__
            following = [current.__cause__, context]
            link, live = ErrorLink(type(current).__name__, str(current)), current
        else:
            following = [current.cause, current.context]
            link, live = _recorded_link(current), None
        pending.extend(reversed([f for f in following if f is not None]))
        if link.class_name not in _DAGSTER_WRAPPERS:
            yield link, live


def _recorded_link(info: SerializableErrorInfo) -> ErrorLink:
    """`cls_name` and the message without the `module.Class: ` prefix that Dagster records."""
    text = info.message.strip()
    qualified, separator, rest = text.partition(": ")
    name = info.cls_name or qualified.rpartition(".")[2]
    if qualified.rpartition(".")[2] == name and separator:
        return ErrorLink(name, rest.strip())
    return ErrorLink(name, "" if text.rpartition(".")[2] == name else text)


def _http_status(link: ErrorLink, live: BaseException | None) -> int | None:
    for value in (
        getattr(live, "status_code", None),
        getattr(getattr(live, "response", None), "status_code", None),
    ):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    for pattern in _HTTP_IN_MESSAGE:
        found = pattern.search(link.message)
        if found:
            return int(found.group(1))
    return None


def _sqlstate(link: ErrorLink, live: BaseException | None) -> str | None:
    for value in (getattr(live, "sqlstate", None), getattr(live, "pgcode", None)):
        if isinstance(value, str) and value:
            return value
    found = _SQLSTATE_IN_MESSAGE.search(link.message)
    return found.group(1) if found else None


def _sqlstate_matches(pattern: str, code: str) -> bool:
    return code.startswith(pattern[:-1]) if pattern.endswith("*") else code == pattern


def _unwrapped(value: object) -> object:
    """A metadata entry's plain value; a table's rows as dicts (its `.value` is the table object itself)."""
    if isinstance(value, dg.TableMetadataValue):
        return [record.data for record in value.records]
    return value.value if isinstance(value, dg.MetadataValue) else value


def _key_string(asset_key: str | dg.AssetKey | None) -> str | None:
    return asset_key.to_user_string() if isinstance(asset_key, dg.AssetKey) else asset_key


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if type(value) in (list, tuple):  # not Dagster's records, which are tuples that refuse iteration
        return [_jsonable(v) for v in value]
    return str(value)


def _subclass_names(cls: type) -> set[str]:
    return {cls.__name__}.union(*(_subclass_names(sub) for sub in cls.__subclasses__()))


_DAGSTER_WRAPPERS = frozenset(_subclass_names(dg.DagsterUserCodeExecutionError))
"""Dagster's wrappers around user errors (`DagsterExecutionStepExecutionError` and kin): skipped."""
