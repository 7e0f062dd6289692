"""Watching the platform: `metrics` (Prometheus metrics from the instance and the healing ledger)
and `metrics_server` (the `dataplatform-metrics` endpoint Prometheus scrapes).
"""
