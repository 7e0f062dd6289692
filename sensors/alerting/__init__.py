"""Alert routing: `routing` with `routes.yaml` (which channels an alert goes to, when, how
often, grouped by root asset). Channels themselves are in `resources.alerts`.
"""
