"""User-facing errors.

Every mistake a user can make (bad config, missing data, foreign checkpoint)
raises an :class:`AdrnetError` (or a subclass) whose message says what is wrong
and what to do. The CLI prints such errors as one line and exits with status 2,
never with a traceback; anything else is a bug and keeps its traceback.
"""


class AdrnetError(Exception):
    """A problem caused by user input, with a message meant for that user."""


class DataError(AdrnetError):
    """A data file is missing, truncated or malformed."""


class ConfigError(AdrnetError):
    """A configuration key or value is unknown or invalid."""


class CheckpointError(AdrnetError):
    """A checkpoint is missing, corrupt, unsafe or belongs to another model."""


class OutputError(AdrnetError):
    """An output cannot be written: full disk, no permission, a directory or a
    device where a file should go, or a run directory another process holds."""
