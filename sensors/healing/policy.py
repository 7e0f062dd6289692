"""Which healing action a diagnosis gets, and whether it runs by itself, waits for a human or is escalated.

The policy table (`policies.yaml`) lists, per failure category, candidate actions with their risk
and preconditions. The choice:

1. candidates: the category's actions whose preconditions hold, while the incident has automatic attempts
   left (`max_attempts`); none left: `escalate`;
2. learning: each candidate's success rate is a Beta posterior, `Beta(prior_successes + successes,
   prior_failures + failures)` over the ledger's outcomes of (category, action); candidates are ranked by
   its mean (ties keep the table's order);
3. confidence = the classifier's confidence x (that mean / the prior's mean), at most 1: without history
   the diagnosis' confidence as it is; an action that keeps failing loses the right to run unattended (with
   the default prior, two failures and no success take a 0.9-confident diagnosis from 0.9 to 0.75: it is
   proposed instead), one that keeps working gains a little;
4. mode: `auto` when confidence >= `auto_confidence` and risk is low; `propose` when confidence >=
   `propose_confidence` (a human approves with the `apply_healing_action` job); else `escalate`. The
   `escalate` action is always mode `escalate`.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from sensors.healing.classifier import Category, EvidenceKind

DEFAULT_POLICY_PATH = Path(__file__).with_name("policies.yaml")

Action = Literal[
    "retry_with_backoff",
    "shrink_batch",
    "slow_down",
    "refresh_credentials",
    "rematerialize_upstream",
    "evolve_schema",
    "quarantine_drift",
    "escalate",
]
Risk = Literal["low", "medium", "high"]
Mode = Literal["auto", "propose", "escalate"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Candidate(_Strict):
    action: Action
    risk: Risk
    rule_ids: tuple[str, ...] = ()
    kinds: tuple[EvidenceKind, ...] = ()

    def applies(self, rule_id: str, kind: str) -> bool:
        return (not self.rule_ids or rule_id in self.rule_ids) and (not self.kinds or kind in self.kinds)


class Thresholds(_Strict):
    auto_confidence: float = Field(0.8, ge=0, le=1)
    propose_confidence: float = Field(0.5, ge=0, le=1)


class Backoff(_Strict):
    base_seconds: float = Field(30, gt=0)
    max_seconds: float = Field(900, gt=0)
    jitter: float = Field(0.2, ge=0, lt=1)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds before automatic attempt `attempt` (1-based): base x 2^(attempt-1), capped, +/- jitter."""
        plain = min(self.max_seconds, self.base_seconds * 2 ** max(attempt - 1, 0))
        return plain * (1 + (rng or random).uniform(-self.jitter, self.jitter))


class Learning(_Strict):
    prior_successes: float = Field(9, gt=0)
    prior_failures: float = Field(1, gt=0)

    def success_rate(self, successes: int, failures: int) -> float:
        """Mean of the Beta posterior."""
        good, bad = self.prior_successes + successes, self.prior_failures + failures
        return good / (good + bad)

    def confidence_factor(self, successes: int, failures: int) -> float:
        """The posterior mean relative to the prior's: 1 without history."""
        return self.success_rate(successes, failures) / self.success_rate(0, 0)


class CircuitBreakerPolicy(_Strict):
    failures_to_open: int = Field(3, ge=1)
    first_cooldown_seconds: float = Field(60, ge=0)
    cooldown_seconds: float = Field(600, ge=0)
    """The longest cool-down: each failure past `failures_to_open` (a half-open probe failing) doubles the
    first one, up to this."""

    def cooldown(self, consecutive_failures: int) -> float:
        """How long a breaker opened after `consecutive_failures` stays open. Short at first: a 20-second 5xx
        burst that opened it kept the source shut for the whole ten minutes of a fixed cool-down (the chaos
        soak's time to recover); doubled by every failed probe, so a source that stays down is tried less
        and less often."""
        doublings = max(0, consecutive_failures - self.failures_to_open)
        return min(self.cooldown_seconds, self.first_cooldown_seconds * 2.0 ** min(doublings, 32))


class OverridePolicy(_Strict):
    healthy_runs_to_decay: int = Field(3, ge=1)
    min_batch_rows: int = Field(1000, ge=1)
    min_requests_per_second: float = Field(0.5, gt=0)


class HealingPolicy(_Strict):
    thresholds: Thresholds = Thresholds()
    max_attempts: int = Field(3, ge=1)
    backoff: Backoff = Backoff()
    escalate_open_after_minutes: float = Field(60, gt=0)
    learning: Learning = Learning()
    circuit_breaker: CircuitBreakerPolicy = CircuitBreakerPolicy()
    overrides: OverridePolicy = OverridePolicy()
    categories: dict[Category, tuple[Candidate, ...]]

    def decide(
        self,
        category: Category | str,
        confidence: float,
        rule_id: str,
        kind: str,
        attempts: int,
        outcomes: Mapping[str, tuple[int, int]],
    ) -> Decision:
        """The action for a diagnosis after `attempts` automatic attempts, given the ledger's (successes,
        failures) per action of this category."""
        category = Category(category)
        if attempts >= self.max_attempts:
            return Decision(
                "escalate", "low", confidence, "escalate", f"{attempts} automatic attempts did not heal it"
            )
        candidates = [c for c in self.categories.get(category, ()) if c.applies(rule_id, kind)]
        if not candidates:
            return Decision("escalate", "low", confidence, "escalate", f"no healing action for {category}")
        rates = [self.learning.success_rate(*outcomes.get(c.action, (0, 0))) for c in candidates]
        best = max(range(len(candidates)), key=lambda i: (rates[i], -i))
        chosen, rate = candidates[best], rates[best]
        counts = outcomes.get(chosen.action, (0, 0))
        score = round(min(1.0, confidence * self.learning.confidence_factor(*counts)), 4)
        why = (
            f"diagnosis confidence {confidence:.2f}, learned success rate of {chosen.action} {rate:.2f} "
            f"({counts[0]} healed, {counts[1]} failed)"
        )
        if chosen.action == "escalate":
            return Decision("escalate", chosen.risk, score, "escalate", f"policy for {category}: escalate")
        if score >= self.thresholds.auto_confidence and chosen.risk == "low":
            return Decision(chosen.action, chosen.risk, score, "auto", f"{why} = {score:.2f}, risk low")
        if score >= self.thresholds.propose_confidence:
            return Decision(
                chosen.action, chosen.risk, score, "propose", f"{why} = {score:.2f}, risk {chosen.risk}"
            )
        return Decision(chosen.action, chosen.risk, score, "escalate", f"{why} = {score:.2f}: too uncertain")


@dataclass(frozen=True)
class Decision:
    action: Action
    risk: Risk
    confidence: float
    """The classifier's confidence scaled by the action's learned success rate."""
    mode: Mode
    reason: str


def load_policy(path: Path | str = DEFAULT_POLICY_PATH) -> HealingPolicy:
    """The policy of `path`; an invalid file fails with pydantic's message naming the field."""
    return HealingPolicy.model_validate(yaml.safe_load(Path(path).read_text()))


@functools.cache
def default_policy() -> HealingPolicy:
    return load_policy()
