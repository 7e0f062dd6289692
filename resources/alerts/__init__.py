"""Alert channels: `channels` (Slack and Teams webhooks, e-mail over SMTP, a generic JSON webhook) and
`rendering` (an alert as text for each channel). Which alert goes where is decided in `sensors.alerting`.
"""
