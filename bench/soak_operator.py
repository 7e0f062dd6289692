"""The soak's on-call human: what a data engineer does when the platform asks. Every few seconds the ledger
is read; a proposed action is approved with the `apply_healing_action` job (launched over GraphQL, as from
the UI's launchpad), and an escalated incident gets its cause repaired (the fault's `repair`: a corrected
delivery, the credentials renewed), each after `REACTION_S`, a quick human's reaction.

A non-healable fault the platform never escalated is still repaired when the quiet period begins, and the
report says so: the data must converge either way, and the missing escalation is the platform's miss.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from deployment import Deployment
from soak_faults import Fault
from soak_measure import incidents

REACTION_S = 10.0
POLL_S = 3.0
APPROVER = "soak-operator"
LAUNCH_APPROVAL = """
mutation Approve($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


@dataclass
class Operator:
    deployment: Deployment
    faults: list[Fault]
    approved: dict[str, float] = field(default_factory=dict)
    """Incident id -> when its approval run was launched."""
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name="soak-operator", daemon=True)
        thread.start()
        return thread

    def _loop(self) -> None:
        while not self.stop.wait(POLL_S):
            try:
                self.look()
            except Exception as error:  # the instance database restarting, the webserver busy: next poll
                self.errors.append(f"{time.time():.0f} {error!r}"[:300])

    def look(self) -> None:
        now = time.time()
        for incident in incidents(self.deployment):
            if now - float(incident["updated_at"]) < REACTION_S:
                continue
            if incident["status"] == "proposed" and incident["incident_id"] not in self.approved:
                self.approve(incident)
            elif incident["status"] == "escalated":
                for fault in self._causes(incident):
                    self.repair(fault)

    def approve(self, incident: dict[str, Any]) -> None:
        params = {
            "selector": {
                "repositoryLocationName": "self_healing_platform",
                "repositoryName": "__repository__",
                "pipelineName": "apply_healing_action",
            },
            "runConfigData": {
                "ops": {
                    "approve_proposed_action": {
                        "config": {
                            "incident_id": incident["incident_id"],
                            "approved_by": APPROVER,
                            "note": f"{incident['action']} for {incident['category']}",
                        }
                    }
                }
            },
        }
        launched = self.deployment.server.graphql(LAUNCH_APPROVAL, {"params": params})[
            "launchPipelineExecution"
        ]
        if launched["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"approving {incident['incident_id']} failed: {launched}")
        self.approved[incident["incident_id"]] = time.time()

    def _causes(self, incident: dict[str, Any]) -> list[Fault]:
        """The unrepaired faults that can explain the escalated incident: of its source and its category (the
        human repairs what the diagnosis names), begun before it was escalated (an incident opened for one
        fault may be escalated for another: a retry of a disk-full failure meeting expired credentials).
        Without the category, a schema drift's escalation had the login renewed before any extraction met
        its expiry, and the expiry was scored as never escalated."""
        return [
            fault
            for fault in self.faults
            if fault.repair is not None
            and not fault.repaired
            and fault.source == incident["source"]
            and fault.expected == incident["category"]
            and fault.started_at <= float(incident["updated_at"])
        ]

    def repair(self, fault: Fault, *, unasked: bool = False) -> None:
        assert fault.repair is not None
        with self.lock:
            if fault.repaired:
                return
            done = fault.repair()
            fault.repaired = done + (
                " (never escalated: repaired as the quiet period began)" if unasked else ""
            )
            fault.repaired_at = time.time()

    def repair_the_rest(self) -> None:
        """Faults still unrepaired when the quiet period begins: repaired without an escalation."""
        for fault in self.faults:
            if fault.repair is not None and not fault.repaired:
                self.repair(fault, unasked=True)
