"""Secrets in configuration: only ever `${ENV_VAR}` references, resolved at the moment of use.

The catalog stores the reference, never the value; connectors receive the resolved value and must not log
it or put it in an exception message. `redact` masks known secret values in any text that leaves us.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
REDACTED = "***"


class MissingSecretError(KeyError):
    """A referenced environment variable is not set: names the variable, never a value."""

    def __str__(self) -> str:
        return str(self.args[0])


def env_references(text: str) -> list[str]:
    """Names of the environment variables that `text` references, in order of appearance."""
    return ENV_REFERENCE.findall(text)


def resolve_env(text: str, environ: Mapping[str, str] | None = None, *, where: str = "") -> str:
    """`text` with every `${NAME}` replaced by the variable's value; an unset variable is an error."""
    env = os.environ if environ is None else environ
    missing = [name for name in env_references(text) if name not in env]
    if missing:
        place = f" (needed by {where})" if where else ""
        raise MissingSecretError(
            f"environment variable(s) {', '.join(missing)} not set{place}: export them in the environment "
            f"of `dagster dev` / the code server, or put them in the .env file next to workspace.yaml."
        )
    return ENV_REFERENCE.sub(lambda match: env[match.group(1)], text)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every non-empty secret value replaced by ***, longest first so no fragment survives."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
