"""Entry point for ``python -m demo_shop``."""

from demo_shop.cli import main

raise SystemExit(main())
