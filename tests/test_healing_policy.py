"""The healing policy: which action a diagnosis gets, auto / propose / escalate by confidence and risk,
learning from outcomes (Beta posterior), attempt caps and backoff."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from sensors.healing.classifier import Category
from sensors.healing.policy import Backoff, Learning, default_policy, load_policy

POLICY = default_policy()


def test_every_category_has_a_policy() -> None:
    assert set(POLICY.categories) == set(Category)


def test_a_confident_low_risk_diagnosis_heals_automatically() -> None:
    decision = POLICY.decide("rate_limited", 0.95, "rate_limited", "step_failure", 0, {})
    assert (decision.action, decision.mode, decision.confidence) == ("slow_down", "auto", 0.95)


def test_a_medium_risk_action_is_proposed_not_taken() -> None:
    decision = POLICY.decide("schema_drift", 0.95, "schema_drift_staging", "step_failure", 0, {})
    assert (decision.action, decision.risk, decision.mode) == ("evolve_schema", "medium", "propose")


def test_an_uncertain_diagnosis_is_proposed_between_thresholds_and_escalated_below() -> None:
    assert POLICY.decide("source_unavailable", 0.7, "server_error", "step_failure", 0, {}).mode == "propose"
    assert POLICY.decide("source_unavailable", 0.4, "x", "step_failure", 0, {}).mode == "escalate"


def test_non_healable_categories_are_escalated() -> None:
    for category in ("configuration_error", "code_defect", "data_quality", "volume_anomaly"):
        decision = POLICY.decide(category, 0.99, "any", "step_failure", 0, {})
        assert (decision.action, decision.mode) == ("escalate", "escalate")


def test_preconditions_select_the_candidate() -> None:
    expired = POLICY.decide("auth_permission", 0.85, "oauth_token_expired", "step_failure", 0, {})
    rejected = POLICY.decide("auth_permission", 0.9, "auth_rejected", "step_failure", 0, {})
    assert (expired.action, expired.mode) == ("refresh_credentials", "auto")
    assert (rejected.action, rejected.mode) == ("escalate", "escalate")
    full = POLICY.decide("resource_exhausted", 0.9, "disk_full", "step_failure", 0, {})
    killed = POLICY.decide("resource_exhausted", 0.8, "step_process_killed", "step_failure", 0, {})
    assert (full.action, killed.action) == ("retry_with_backoff", "shrink_batch"), "a full disk is waited out"


def test_attempts_are_capped_then_escalated() -> None:
    decision = POLICY.decide(
        "transient_network", 0.9, "transient_network", "step_failure", POLICY.max_attempts, {}
    )
    assert decision.mode == "escalate" and "automatic attempts did not heal it" in decision.reason


def test_failures_of_an_action_lower_its_confidence_until_it_is_only_proposed() -> None:
    fresh = POLICY.decide("rate_limited", 0.9, "rate_limited", "step_failure", 0, {})
    burnt = POLICY.decide("rate_limited", 0.9, "rate_limited", "step_failure", 0, {"slow_down": (0, 2)})
    assert fresh.mode == "auto" and burnt.mode == "propose"
    assert burnt.confidence == pytest.approx(0.9 * (9 / 12) / 0.9)
    assert "0 healed, 2 failed" in burnt.reason


def test_the_learned_success_rate_ranks_the_candidates() -> None:
    timeout = "statement_timeout"
    first = POLICY.decide("timeout", 0.9, timeout, "step_failure", 0, {})
    learned = POLICY.decide(
        "timeout", 0.9, timeout, "step_failure", 0, {"shrink_batch": (0, 3), "retry_with_backoff": (4, 0)}
    )
    assert first.action == "shrink_batch", "ties keep the table's order"
    assert learned.action == "retry_with_backoff"


def test_beta_posterior() -> None:
    learning = Learning(prior_successes=9, prior_failures=1)
    assert learning.success_rate(0, 0) == 0.9 and learning.confidence_factor(0, 0) == 1
    assert learning.success_rate(10, 0) == pytest.approx(19 / 20)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    backoff = Backoff(base_seconds=10, max_seconds=60, jitter=0.2)
    rng = random.Random(1)
    delays = [backoff.delay(attempt, rng) for attempt in (1, 2, 3, 4, 5)]
    for delay, plain in zip(delays, (10, 20, 40, 60, 60), strict=True):
        assert plain * 0.8 <= delay <= plain * 1.2


def test_an_invalid_policy_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("categories:\n  timeout:\n    - {action: reboot_the_world, risk: low}\n")
    with pytest.raises(ValidationError, match="reboot_the_world"):
        load_policy(path)


def test_the_breaker_cool_down_starts_short_and_doubles_with_each_failed_probe() -> None:
    breaker = default_policy().circuit_breaker
    opened_at = breaker.failures_to_open
    assert breaker.cooldown(opened_at) == breaker.first_cooldown_seconds == 60
    assert breaker.cooldown(opened_at + 1) == 120, "the half-open probe failed"
    assert breaker.cooldown(opened_at + 2) == 240
    assert breaker.cooldown(opened_at + 10) == breaker.cooldown_seconds == 600
    assert breaker.cooldown(10_000) == 600
