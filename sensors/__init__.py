"""WHEN things run and HOW failures heal: schedules, sensors, automation conditions, freshness policies,
the failure classifier and the healing policies.

`quality_events`: the sensor that records failed asset checks and stale assets as quality events for the
healing layer and alert channels. Runs are still launched by hand (`./dev demo`, the Dagster UI).
Freshness policies are derived from the catalog in `platform_assets/policies/freshness.py`.
May import `resources`; takes what it watches as arguments rather than importing the asset factories.
"""
