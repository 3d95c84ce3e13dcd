"""Errors a user can fix: each names the config key at fault and what is allowed."""


class ConfigError(ValueError):
    """A bad config value, reported as one line: ``<key>: <what is wrong and what is allowed>``."""

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")

    def __reduce__(self) -> tuple:
        return type(self), (self.key, self.message)  # picklable, so rank 0 can hand it to the other DDP ranks
