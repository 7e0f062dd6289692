"""WHEN things run: `conditions` (the declarative automation conditions), `schedules` (cron per
source), `delivery_sensor` (new files), `db_change_sensor` (a database cursor that advanced).
Skipped while the source's circuit breaker (`sensors.healing`) is open.
"""
