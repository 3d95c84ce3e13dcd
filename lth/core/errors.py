"""Errors a user can fix: each names the config key, argument or file at fault and what is allowed."""


class ConfigError(ValueError):
    """A bad config value, reported as one line: ``<key>: <what is wrong and what is allowed>``."""

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")

    def __reduce__(self) -> tuple:
        return type(self), (self.key, self.message)  # picklable, so rank 0 can hand it to the other DDP ranks


class MissingFileError(FileNotFoundError):
    """A file or folder that is needed and not there, reported as one line: ``<path>: <what is missing>``.

    A ``FileNotFoundError``, so code that catches those keeps working.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"

    def __reduce__(self) -> tuple:
        return type(self), (self.key, self.message)


USER_ERRORS = (ConfigError, MissingFileError)  # what a script reports as one line and exit code 2


def one_line(error: BaseException) -> str:
    """``str(error)`` on one line (line breaks inside a message become spaces)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def first_line(error: BaseException, limit: int = 160) -> str:
    """``<type>: <first line of the message>``: how a foreign error (torch, yaml) is quoted inside a one-line error."""
    text = str(error).strip().splitlines()
    if not text:
        return type(error).__name__
    line = text[0] if len(text[0]) <= limit else f"{text[0][: limit - 3].rstrip()}..."
    return f"{type(error).__name__}: {line}"
