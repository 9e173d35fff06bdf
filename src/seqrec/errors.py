"""User-facing errors.

A `SeqrecError` is a problem with what the user gave us (a file, a config key, a value). The CLI prints its message
on one line and exits with status 2, without a traceback. Anything else is a bug and keeps its traceback.
"""


class SeqrecError(Exception):
    """An error in user input; the message names the file/line or key and what was expected."""


class DataError(SeqrecError):
    """A data file is missing, empty or malformed."""


class ConfigError(SeqrecError):
    """A config key is unknown or a value is invalid."""


class TrainingDiverged(SeqrecError):
    """The loss became NaN or infinite."""


class SeqrecWarning(UserWarning):
    """Something the user should know but that does not stop the work (e.g. unknown ids skipped on request);
    the CLI prints it as one line `seqrec: warning: ...`."""
