"""A deterministic e-commerce "outside world": the source systems the data platform ingests from."""

from demo_shop.world import DemoWorld, generate_demo_world

__all__ = ["DemoWorld", "generate_demo_world"]
