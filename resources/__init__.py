"""HOW the platform reaches the outside world: file readers, the landing zone, the warehouse.

Nothing in this package imports from `platform_assets` or `sensors`: connectors and stores are
reusable on their own and know nothing about which assets use them.
"""
