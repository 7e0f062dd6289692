"""HOW failures heal: `classifier` with `failure_rules.yaml` (a failure into a category with a
confidence), `policy` with `policies.yaml` (candidate actions per category), `engine` (incidents,
decisions, run requests, breakers), `sensor` (the `healing` sensor), `graph` (what a run touched),
`alerts` (incidents as alerts), `step_retry` (in-run retries of transient failures), `quality_events`
(failed checks and stale assets recorded for the engine).
"""
