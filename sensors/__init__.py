"""WHEN things run and HOW failures heal: schedules, sensors, automation conditions, freshness policies,
the failure classifier and the healing policies.

Empty in the foundation: runs are launched by hand (`./dev demo`, the Dagster UI). May import `resources`.
"""
