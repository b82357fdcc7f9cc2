"""The two kinds of mistakes a user can fix: a bad config value and bad data files."""


class ConfigError(ValueError):
    """A config value that cannot work. Its message is one line: the key, the bad value and what is allowed."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: expected {allowed}")


class DataError(RuntimeError):
    """Missing, truncated or corrupted data files; the message names the file and what to do."""
