"""Quality: what makes a staged table trustworthy, and what is held back.

`pandera_schemas` and `contract_validation` (the blocking schema contract), `contract_prefilter` (a SQL
over-approximation that spares the contract a full scan), `quarantine` (rows breaking error rules),
`profile` and `score` (the table's profile and quality score), `anomaly_checks` and `relationship_checks`
(non-blocking checks). Builds on `staging` and `catalog`.
"""
