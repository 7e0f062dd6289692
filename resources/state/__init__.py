"""State the platform keeps about its own operation: `healing_store` (the healing ledger,
breakers and overrides).
"""
