"""The mistake a user can fix in a config, and the one-line form of any exception for reports."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work. Its message is one line: the key, the bad value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: expected {allowed}")


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for one-line reports of an exception."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
